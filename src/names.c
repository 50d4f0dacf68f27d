/* The names blkmig gives what it creates in QEMU, and which names are its own. */
#include "src/names.h"

#include <string.h>

char *
names_job (const char *id, guint index)
{
  return g_strdup_printf ("blkmig-%.8s-%u", id, index);
}

char *
names_export (const char *id, guint index)
{
  return names_job (id, index);
}

char *
names_move_job (const char *id)
{
  return g_strdup_printf ("blkmig-%.8s-move", id);
}

char *
names_merge_job (const char *id)
{
  return g_strdup_printf ("blkmig-%.8s-merge", id);
}

char *
names_node (const char *id, NamesKind kind, guint index)
{
  return g_strdup_printf ("blkmig%.8s%c%u", id, (char) kind, index);
}

char *
names_layer_node (const char *id, guint disk, guint layer)
{
  return g_strdup_printf ("blkmig%.8s%c%u.%u", id, (char) NAMES_LAYER_TARGET, disk, layer);
}

char *
names_layer_export (const char *id, guint disk, guint layer)
{
  return g_strdup_printf ("blkmig-%.8s-%u.b%u", id, disk, layer);
}

char *
names_epoch_node (const char *id, guint disk, guint epoch)
{
  return g_strdup_printf ("blkmig%.8s%c%u.%u", id, (char) NAMES_EPOCH, disk, epoch);
}

char *
names_bitmap (const char *id, guint epoch)
{
  return g_strdup_printf ("blkmig-%.8s-r%u", id, epoch);
}

char *
names_commit_job (const char *id, guint disk, guint epoch)
{
  return g_strdup_printf ("blkmig-%.8s-%u.c%u", id, disk, epoch);
}

char *
names_resync_job (const char *id, guint disk)
{
  return g_strdup_printf ("blkmig-%.8s-%u.r", id, disk);
}

char *
names_verify_export (const char *id, gboolean new_image)
{
  return g_strdup_printf ("blkmig%.8sv%c", id, new_image ? 'n' : 'o');
}

gboolean
names_owns (const char *id, const char *name)
{
  g_autofree char *job_prefix = g_strdup_printf ("blkmig-%.8s-", id);
  g_autofree char *node_prefix = g_strdup_printf ("blkmig%.8s", id);

  return name != NULL && (g_str_has_prefix (name, job_prefix)
                          || g_str_has_prefix (name, node_prefix));
}

char *
names_id_prefix (const char *name)
{
  gsize skip = g_str_has_prefix (name, "blkmig-") ? 7 : g_str_has_prefix (name, "blkmig") ? 6 : 0;
  const char *id = name + skip;

  if (skip == 0 || strlen (id) < 9 || strspn (id, "0123456789abcdef") < 8
      || (skip == 7 && id[8] != '-'))
    return NULL;
  return g_strndup (id, 8);
}
