/* Disk discovery from query-block, and name lookup by qdev id, BlockBackend or node. */
#include "src/disks.h"

#include "common/error.h"
#include "common/escape.h"
#include "qmp/qmp-json.h"

#define QOM_PERIPHERAL "/machine/peripheral/"

void
disk_info_free (DiskInfo *disk)
{
  if (disk == NULL)
    return;
  g_free (disk->name);
  g_free (disk->qdev);
  g_free (disk->device);
  g_free (disk->node);
  g_free (disk->format);
  g_free (disk->file);
  g_strfreev (disk->backing);
  g_free (disk);
}

/* "/machine/peripheral/vda/virtio-backend" → "vda"; "vda" → "vda"; else NULL. */
static char *
disks_qdev_id (const char *qdev)
{
  const char *end;

  if (qdev == NULL || *qdev == '\0')
    return NULL;
  if (!g_str_has_prefix (qdev, QOM_PERIPHERAL))
    return qdev[0] == '/' ? NULL : g_strdup (qdev);
  qdev += strlen (QOM_PERIPHERAL);
  end = strchr (qdev, '/');
  return end != NULL ? g_strndup (qdev, end - qdev) : g_strdup (qdev);
}

char *
disk_info_attached_device (const DiskInfo *disk)
{
  char *id = disks_qdev_id (disk->qdev);

  if (id != NULL)
    return id;
  return disk->qdev != NULL && *disk->qdev != '\0' ? g_strdup (disk->qdev) : NULL;
}

static GStrv
disks_backing_chain (JsonObject *image)
{
  g_autoptr(GStrvBuilder) chain = g_strv_builder_new ();
  gboolean any = FALSE;

  while ((image = qmp_member_object (image, "backing-image")) != NULL)
    {
      g_strv_builder_add (chain, qmp_member_string_or (image, "filename", ""));
      any = TRUE;
    }
  return any ? g_strv_builder_end (chain) : NULL;
}

/* Size, allocation and backing chain from a query-block "image" object. */
static void
disks_take_image (DiskInfo *disk, JsonObject *image)
{
  disk->virtual_size = qmp_member_int (image, "virtual-size", 0);
  disk->allocated = qmp_member_int (image, "actual-size", 0);
  disk->backing = disks_backing_chain (image);
}

static DiskInfo *
disks_parse_one (JsonObject *entry)
{
  JsonObject *inserted = qmp_member_object (entry, "inserted");
  JsonObject *image = qmp_member_object (inserted, "image");
  JsonObject *cache = qmp_member_object (inserted, "cache");
  DiskInfo *disk = g_new0 (DiskInfo, 1);
  g_autofree char *qdev_id = NULL;

  disk->qdev = g_strdup (qmp_member_string_or (entry, "qdev", ""));
  disk->device = g_strdup (qmp_member_string_or (entry, "device", ""));
  disk->node = g_strdup (qmp_member_string_or (inserted, "node-name", ""));
  disk->file = g_strdup (qmp_member_string_or (inserted, "file", ""));
  disk->read_only = qmp_member_bool (inserted, "ro", FALSE);
  disk->cache_direct = qmp_member_bool (cache, "direct", FALSE);
  disk->cache_no_flush = qmp_member_bool (cache, "no-flush", FALSE);
  disk->format = g_strdup (image != NULL ? qmp_member_string_or (image, "format", "raw")
                                         : qmp_member_string_or (inserted, "drv", "raw"));
  if (image != NULL)
    disks_take_image (disk, image);
  qdev_id = disks_qdev_id (disk->qdev);
  disk->name = g_strdup (qdev_id != NULL ? qdev_id : *disk->device ? disk->device : disk->node);
  return disk;
}

static DiskInfo *
disks_parse_node (JsonObject *node)
{
  DiskInfo *disk = g_new0 (DiskInfo, 1);

  disk->node = g_strdup (qmp_member_string_or (node, "node-name", ""));
  disk->name = g_strdup (disk->node);
  disk->qdev = g_strdup ("");
  disk->device = g_strdup ("");
  disk->file = g_strdup (qmp_member_string_or (node, "file", ""));
  disk->format = g_strdup (qmp_member_string_or (node, "drv", "raw"));
  disk->read_only = qmp_member_bool (node, "ro", FALSE);
  disks_take_image (disk, qmp_member_object (node, "image"));
  return disk;
}

/* Protocol nodes sit under a format node; they are not disks of their own. */
static gboolean
disks_is_protocol (const char *drv)
{
  static const char *const protocols[] = {
    "file", "host_device", "host_cdrom", "nbd", "iscsi", "rbd", "ssh", "http", "https",
    "null-co", "null-aio", "blkdebug", "throttle", NULL
  };
  return g_strv_contains (protocols, drv);
}

/* Named nodes that no device uses: disks of a storage daemon or a -blockdev
 * without a device.  Auto-named (#...) nodes are internal and skipped. */
static gboolean
disks_add_named_nodes (QmpClient *qmp, GPtrArray *disks, GCancellable *cancellable,
                       GError **error)
{
  g_autoptr(JsonNode) ret = qmp_client_execute_sync (qmp, "query-named-block-nodes",
                                                     qmp_args_new ("flat", qmp_bool (TRUE), NULL),
                                                     cancellable, error);
  JsonArray *list;

  if (ret == NULL)
    return FALSE;
  list = qmp_node_array (ret);
  for (guint i = 0; i < qmp_array_length (list); i++)
    {
      JsonObject *node = qmp_array_object (list, i);
      const char *name = qmp_member_string_or (node, "node-name", "#");
      const char *drv = qmp_member_string_or (node, "drv", "");

      if (name[0] != '#' && disks_find (disks, name) == NULL
          && qmp_member_object (node, "image") != NULL && !disks_is_protocol (drv))
        g_ptr_array_add (disks, disks_parse_node (node));
    }
  return TRUE;
}

GPtrArray *
disks_query (QmpClient *qmp, gboolean with_nodes, GCancellable *cancellable, GError **error)
{
  g_autoptr(JsonNode) ret = qmp_client_execute_sync (qmp, "query-block", NULL, cancellable,
                                                     error);
  g_autoptr(GPtrArray) disks = g_ptr_array_new_with_free_func ((GDestroyNotify) disk_info_free);
  JsonArray *list;

  if (ret == NULL)
    return NULL;
  list = qmp_node_array (ret);
  for (guint i = 0; i < qmp_array_length (list); i++)
    {
      JsonObject *entry = qmp_array_object (list, i);
      if (qmp_member_object (entry, "inserted") != NULL)
        g_ptr_array_add (disks, disks_parse_one (entry));
    }
  if (with_nodes && !disks_add_named_nodes (qmp, disks, cancellable, error))
    return NULL;
  return g_steal_pointer (&disks);
}

DiskInfo *
disks_find (GPtrArray *disks, const char *name)
{
  for (guint i = 0; i < disks->len; i++)
    {
      DiskInfo *disk = disks->pdata[i];
      g_autofree char *qdev_id = disks_qdev_id (disk->qdev);

      if (g_strcmp0 (qdev_id, name) == 0 || g_str_equal (disk->device, name)
          || g_str_equal (disk->node, name) || g_str_equal (disk->name, name))
        return disk;
    }
  return NULL;
}

static char *
disks_names (GPtrArray *disks)
{
  g_autoptr(GString) names = g_string_new (NULL);

  for (guint i = 0; i < disks->len; i++)
    {
      g_autofree char *name = blkmig_escape (((DiskInfo *) disks->pdata[i])->name);
      g_string_append_printf (names, "%s%s", i > 0 ? ", " : "", name);
    }
  return g_string_free (g_steal_pointer (&names), FALSE);
}

GPtrArray *
disks_select (GPtrArray *disks, const char *const *names, const char *where, GError **error)
{
  g_autoptr(GPtrArray) chosen = g_ptr_array_new ();

  if (names == NULL || names[0] == NULL)
    {
      for (guint i = 0; i < disks->len; i++)
        g_ptr_array_add (chosen, disks->pdata[i]);
      return g_steal_pointer (&chosen);
    }
  for (gsize i = 0; names[i] != NULL; i++)
    {
      DiskInfo *disk = disks_find (disks, names[i]);
      if (disk == NULL)
        {
          g_autofree char *known = disks_names (disks);
          g_autofree char *wanted = blkmig_escape (names[i]);
          g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                       "%s has no disk named %s (disks: %s)", where, wanted,
                       *known ? known : "none");
          return NULL;
        }
      if (!g_ptr_array_find (chosen, disk, NULL))
        g_ptr_array_add (chosen, disk);
    }
  return g_steal_pointer (&chosen);
}
