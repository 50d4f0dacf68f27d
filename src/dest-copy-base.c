/* --chain copy-base on the destination: copies of the source's layers, made, exported and composed. */
#include "src/dest-copy-base.h"

#include <errno.h>
#include <sys/stat.h>

#include "common/error.h"
#include "common/escape.h"
#include "qmp/qmp-commands.h"
#include "src/disks.h"
#include "src/names.h"
#include "src/util.h"

/* Whether @path is planned already for another layer (layer @j of disk @i is
 * being planned): the error says which disks would share it. */
static gboolean
dest_copy_base_taken (const Cookie *reply, guint i, guint j, const char *path, GError **error)
{
  for (guint d = 0; d <= i; d++)
    {
      const CookieDisk *other = reply->disks->pdata[d];

      for (guint k = 0; other->chain != NULL && k < (d == i ? j : other->chain->len); k++)
        {
          const CookieLayer *layer = other->chain->pdata[k];
          g_autofree char *a = NULL;
          g_autofree char *b = NULL;
          g_autofree char *shown = NULL;

          if (g_strcmp0 (layer->target_path, path) != 0)
            continue;
          a = blkmig_escape (other->name);
          b = blkmig_escape (((CookieDisk *) reply->disks->pdata[i])->name);
          shown = blkmig_escape (path);
          return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                              "disks %s and %s would both copy a layer to %s: migrate them "
                              "separately, or give another --base-dir", a, b, shown), TRUE;
        }
    }
  return FALSE;
}

/* Layer @j of disk @i goes to DIR/its file name: the cookie's name, checked to be a
 * plain file name, in a directory of this host's choosing; never over anything. */
static gboolean
dest_copy_base_place (Cookie *reply, guint i, guint j, const char *dir, GError **error)
{
  CookieDisk *disk = reply->disks->pdata[i];
  CookieLayer *layer = disk->chain->pdata[j];
  g_autofree char *path = g_build_filename (dir, layer->name, NULL);
  g_autofree char *name = blkmig_escape (disk->name);
  g_autofree char *shown = blkmig_escape (path);  /* its directory may be QEMU's word */
  struct stat st;

  if (lstat (path, &st) == 0 || errno != ENOENT)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                        "%s: %s already exists: --chain copy-base makes the copy of backing "
                        "layer %u itself (remove it, or give another --base-dir)", name, shown,
                        j + 1), FALSE;
  if (dest_copy_base_taken (reply, i, j, path, error))
    return FALSE;
  if (j + 1 < disk->chain->len && !g_str_equal (layer->format, "qcow2"))
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_COOKIE,
                        "%s: backing layer %u is %s but has a layer below it", name, j + 1,
                        layer->format), FALSE;
  layer->target_path = g_steal_pointer (&path);
  layer->export_name = names_layer_export (reply->id, i, j);
  return TRUE;
}

/* What composing under a disk of the running QEMU needs (xapi's VDI_MIRROR_IN
 * check): said before anything moves, naming what is missing. */
static gboolean
dest_copy_base_can_attach (QmpClient *dst, const char *name, const DiskInfo *have,
                           GError **error)
{
  static const char *const needed[] = { "blockdev-reopen", "change-backing-file",
                                        "x-debug-query-block-graph", NULL };

  for (guint k = 0; needed[k] != NULL; k++)
    if (!qmp_client_has_command (dst, needed[k]))
      return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                          "%s: --chain copy-base into a running disk needs QMP %s, which the "
                          "destination's QEMU (%s) lacks", name, needed[k],
                          qmp_client_get_version (dst)), FALSE;
  if (!g_str_equal (have->format, "qcow2") || have->backing != NULL)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                        "%s: --chain copy-base needs the destination's disk to be a qcow2 "
                        "image without backing file (the copied chain goes under it)", name),
           FALSE;
  if (have->node[0] == '#' || !g_path_is_absolute (have->file))
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "%s: --chain copy-base needs the destination's disk given with "
                        "-blockdev (a node name QEMU can reopen) on an absolute path", name),
           FALSE;
  return TRUE;
}

gboolean
dest_copy_base_plan (QmpClient *dst, Cookie *reply, guint i, const DiskInfo *have,
                     const PrepareOptions *opts, GError **error)
{
  CookieDisk *disk = reply->disks->pdata[i];
  g_autofree char *name = blkmig_escape (disk->name);
  g_autofree char *dir = NULL;

  if (reply->mode == COOKIE_MODE_MOVE)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "%s: this destination receives --chain copy-base in live and copy "
                        "mode, not move", name), FALSE;
  if (!g_str_equal (disk->format, "qcow2"))
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_COOKIE,
                        "%s: sync copy-base needs a qcow2 disk, the cookie says %s", name,
                        disk->format), FALSE;
  if (have != NULL && !dest_copy_base_can_attach (dst, name, have, error))
    return FALSE;
  if (have == NULL && !disk->created)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                        "%s: %s already exists: --chain copy-base creates the disk's top "
                        "itself", name, disk->target_path), FALSE;
  dir = opts->base_dir != NULL ? g_strdup (opts->base_dir)
                               : g_path_get_dirname (have != NULL ? have->file
                                                                  : disk->target_path);
  for (guint j = 0; j < disk->chain->len; j++)
    if (!dest_copy_base_place (reply, i, j, dir, error))
      return FALSE;
  return TRUE;
}

/* One layer's empty copy: made, opened as node blkmigID8bN.L, exported writable. */
static gboolean
dest_copy_base_export_layer (QmpClient *dst, const PrepareOptions *opts, Cookie *reply,
                             guint i, guint j, GCancellable *cancellable, GError **error)
{
  CookieLayer *layer = ((CookieDisk *) reply->disks->pdata[i])->chain->pdata[j];
  g_autofree char *node = names_layer_node (reply->id, i, j);
  const QmpBlockdevImage image = {
    .node_name = node,
    .format = layer->format,
    .filename = layer->target_path,
    .discard = "unmap",
    /* its copy of the layer below is being written beside it */
    .no_backing = g_str_equal (layer->format, "qcow2"),
  };

  return dest_make_file (opts->journal, reply, layer->target_path, layer->format,
                         layer->virtual_size, NULL, NULL, cancellable, error)
         && qmp_blockdev_add_image (dst, &image, cancellable, error)
         && nbd_export_add (dst, layer->export_name, node, layer->export_name, TRUE,
                            cancellable, error);
}

gboolean
dest_copy_base_export (QmpClient *dst, const PrepareOptions *opts, Cookie *reply, guint i,
                       GCancellable *cancellable, GError **error)
{
  CookieDisk *disk = reply->disks->pdata[i];

  for (guint j = 0; g_strcmp0 (disk->sync, "copy-base") == 0 && j < disk->chain->len; j++)
    if (!dest_copy_base_export_layer (dst, opts, reply, i, j, cancellable, error))
      return FALSE;
  return TRUE;
}

/* Whether any disk of @cookie is copy-base (else nothing here has work). */
static gboolean
dest_copy_base_any (const Cookie *cookie)
{
  for (guint i = 0; i < cookie->disks->len; i++)
    if (g_strcmp0 (((CookieDisk *) cookie->disks->pdata[i])->sync, "copy-base") == 0)
      return TRUE;
  return FALSE;
}

/* The result cookie comes back from the source: a path in it is used only if
 * this host's journal says blkmig created that file. */
static gboolean
dest_copy_base_ours (const Journal *journal, const char *path, GError **error)
{
  g_autofree char *shown = blkmig_escape (path);

  for (guint i = 0; journal != NULL && path != NULL && i < journal->created->len; i++)
    if (g_str_equal (journal->created->pdata[i], path))
      return TRUE;
  return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_COOKIE,
                      "%s is not a file this host's journal says blkmig created: nothing "
                      "composed", shown), FALSE;
}

static gboolean
dest_copy_base_check_layers (const Journal *journal, const CookieDisk *disk, GError **error)
{
  for (guint j = 0; j < disk->chain->len; j++)
    if (!dest_copy_base_ours (journal, ((CookieLayer *) disk->chain->pdata[j])->target_path,
                              error))
      return FALSE;
  return TRUE;
}

/* Each copy onto the one below it: files no QEMU has open any more. */
static gboolean
dest_copy_base_link_layers (const CookieDisk *disk, GCancellable *cancellable, GError **error)
{
  for (guint j = disk->chain->len - 1; j-- > 0;)
    {
      const CookieLayer *layer = disk->chain->pdata[j];
      const CookieLayer *below = disk->chain->pdata[j + 1];

      if (!util_rebase_unsafe (layer->target_path, below->target_path, below->format,
                               cancellable, error))
        return FALSE;
    }
  return TRUE;
}

/* The disk of the running QEMU that prepare chose: a forged result cookie naming
 * another node (or a disk this migration did not have) is refused. */
static DiskInfo *
dest_copy_base_live_disk (GPtrArray *disks, const Journal *journal, const CookieDisk *disk,
                          GError **error)
{
  DiskInfo *have = disks_find (disks, disk->name);
  g_autofree char *name = blkmig_escape (disk->name);

  if (journal == NULL || journal->cookie == NULL
      || cookie_find_disk (journal->cookie, disk->name) == NULL || have == NULL
      || g_strcmp0 (have->node, disk->target_node) != 0)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_COOKIE,
                        "%s: not a disk this host's journal says the migration prepared: "
                        "nothing composed", name), NULL;
  return have;
}

/* The copied chain opened read-only and attached under the disk by reopening it
 * with its own file child and the settings QEMU reports (detect-zeroes, cache;
 * others return to QEMU's defaults).  Nothing to do when it is attached already. */
static gboolean
dest_copy_base_attach (QmpClient *dst, const Cookie *result, guint i, const DiskInfo *have,
                       GCancellable *cancellable, GError **error)
{
  const CookieDisk *disk = result->disks->pdata[i];
  const CookieLayer *nearest = disk->chain->pdata[0];
  g_autofree char *chain = names_node (result->id, NAMES_LAYER_CHAIN, i);
  g_autofree char *file = NULL;
  const QmpBlockdevImage add = {
    .node_name = chain, .format = nearest->format, .filename = nearest->target_path,
    .read_only = TRUE,
  };
  QmpBlockdevImage reopen = {
    .node_name = have->node, .format = have->format, .backing_node = chain,
    .set_cache = TRUE, .cache_direct = have->cache_direct,
    .cache_no_flush = have->cache_no_flush, .detect_zeroes = have->detect_zeroes,
  };

  if (have->backing != NULL)
    return g_strcmp0 (have->backing[0], nearest->target_path) == 0
           || (g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                            "the disk has another backing file already"), FALSE);
  file = qmp_query_block_child (dst, have->node, "file", cancellable, error);
  reopen.file_node = file;
  return file != NULL
         && qmp_blockdev_add_image (dst, &add, cancellable, error)
         && qmp_blockdev_reopen_image (dst, &reopen, cancellable, error);
}

/* Disk @i's chain: the copies linked, then its top, a file or a running disk. */
static gboolean
dest_copy_base_compose_disk (QmpClient *dst, const Cookie *result, guint i, GPtrArray *disks,
                             const Journal *journal, GCancellable *cancellable, GError **error)
{
  const CookieDisk *disk = result->disks->pdata[i];
  const CookieLayer *nearest = disk->chain->pdata[0];
  DiskInfo *have;

  if (!dest_copy_base_check_layers (journal, disk, error)
      || !dest_copy_base_link_layers (disk, cancellable, error))
    return FALSE;
  if (session_is_file_target (result, i))
    return dest_copy_base_ours (journal, disk->target_path, error)
           && util_rebase_unsafe (disk->target_path, nearest->target_path, nearest->format,
                                  cancellable, error);
  have = dest_copy_base_live_disk (disks, journal, disk, error);
  return have != NULL && dest_copy_base_attach (dst, result, i, have, cancellable, error);
}

gboolean
dest_copy_base_compose (QmpClient *dst, const Cookie *result, const Journal *journal,
                        GCancellable *cancellable, GError **error)
{
  g_autoptr(GPtrArray) disks = NULL;

  if (!dest_copy_base_any (result))
    return TRUE;
  if ((disks = disks_query (dst, TRUE, cancellable, error)) == NULL)
    return FALSE;
  for (guint i = 0; i < result->disks->len; i++)
    {
      const CookieDisk *disk = result->disks->pdata[i];

      if (g_strcmp0 (disk->sync, "copy-base") == 0
          && !dest_copy_base_compose_disk (dst, result, i, disks, journal, cancellable, error))
        return g_prefix_error (error, "compose: "), FALSE;
    }
  return TRUE;
}

gboolean
dest_copy_base_record (QmpClient *dst, const Cookie *result, GCancellable *cancellable,
                       GError **error)
{
  for (guint i = 0; i < result->disks->len; i++)
    {
      const CookieDisk *disk = result->disks->pdata[i];
      const CookieLayer *nearest;

      if (g_strcmp0 (disk->sync, "copy-base") != 0 || session_is_file_target (result, i))
        continue;
      nearest = disk->chain->pdata[0];
      if (!qmp_change_backing_file (dst, disk->target_node, disk->target_node,
                                    nearest->target_path, cancellable, error))
        return g_prefix_error (error, "compose: "), FALSE;
    }
  return TRUE;
}
