/* Disk discovery from query-block (qmp_query_block), and name lookup by qdev id, BlockBackend or node. */
#include "src/disks.h"

#include <glib/gstdio.h>

#include "common/error.h"
#include "common/escape.h"
#include "qmp/qmp-commands.h"

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
  g_free (disk->detect_zeroes);
  g_strfreev (disk->backing);
  g_strfreev (disk->backing_nodes);
  g_strfreev (disk->backing_formats);
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

/* Size, allocation and backing chain from an "image" (NULL: none). */
static void
disks_take_image (DiskInfo *disk, const QmpImageInfo *image)
{
  g_autoptr(GStrvBuilder) formats = g_strv_builder_new ();

  if (image == NULL)
    return;
  disk->virtual_size = image->virtual_size;
  disk->allocated = image->actual_size;
  disk->backing = g_strdupv (image->backing);
  for (const QmpImageInfo *layer = image->backing_image; layer != NULL;
       layer = layer->backing_image)
    g_strv_builder_add (formats, layer->format ?: "raw");
  if (disk->backing != NULL)
    disk->backing_formats = g_strv_builder_end (formats);
}

/* The format node that holds @file (a backing layer's name as QEMU reports it). */
static const char *
disks_node_of_file (GPtrArray *nodes, const char *file)
{
  for (guint i = 0; i < nodes->len; i++)
    {
      QmpBlockNodeInfo *node = nodes->pdata[i];
      if (node->node_name != NULL && g_strcmp0 (node->file, file) == 0
          && !disks_is_protocol (node->drv ?: "file"))
        return node->node_name;
    }
  return "";
}

/* Names the nodes of every disk's backing layers, from query-named-block-nodes. */
static void
disks_name_backing (GPtrArray *disks, GPtrArray *nodes)
{
  for (guint i = 0; i < disks->len; i++)
    {
      DiskInfo *disk = disks->pdata[i];
      guint n = disk->backing != NULL ? g_strv_length (disk->backing) : 0;

      if (n == 0)
        continue;
      disk->backing_nodes = g_new0 (char *, n + 1);
      for (guint k = 0; k < n; k++)
        disk->backing_nodes[k] = g_strdup (disks_node_of_file (nodes, disk->backing[k]));
    }
}

static DiskInfo *
disks_from_block (const QmpBlockInfo *entry)
{
  DiskInfo *disk = g_new0 (DiskInfo, 1);
  g_autofree char *qdev_id = NULL;

  disk->qdev = g_strdup (entry->qdev ?: "");
  disk->device = g_strdup (entry->device ?: "");
  disk->node = g_strdup (entry->node_name ?: "");
  disk->file = g_strdup (entry->file ?: "");
  disk->read_only = entry->ro;
  disk->cache_direct = entry->cache_direct;
  disk->cache_no_flush = entry->cache_no_flush;
  disk->detect_zeroes = g_strdup (entry->detect_zeroes ?: "off");
  disk->format = g_strdup (entry->image != NULL ? entry->image->format ?: "raw"
                                                : entry->drv ?: "raw");
  disks_take_image (disk, entry->image);
  qdev_id = disks_qdev_id (disk->qdev);
  disk->name = g_strdup (qdev_id != NULL ? qdev_id : *disk->device ? disk->device : disk->node);
  return disk;
}

static DiskInfo *
disks_from_node (const QmpBlockNodeInfo *node)
{
  DiskInfo *disk = g_new0 (DiskInfo, 1);

  disk->node = g_strdup (node->node_name ?: "");
  disk->name = g_strdup (disk->node);
  disk->qdev = g_strdup ("");
  disk->device = g_strdup ("");
  disk->file = g_strdup (node->file ?: "");
  disk->format = g_strdup (node->drv ?: "raw");
  disk->read_only = node->ro;
  disks_take_image (disk, node->image);
  return disk;
}


/* Named nodes that no device uses: disks of a storage daemon or a -blockdev
 * without a device.  Auto-named (#...) nodes are internal and skipped. */
static gboolean
disks_add_named_nodes (QmpClient *qmp, GPtrArray *disks, GCancellable *cancellable,
                       GError **error)
{
  g_autoptr(GPtrArray) nodes = qmp_query_named_block_nodes (qmp, cancellable, error);

  if (nodes == NULL)
    return FALSE;
  disks_name_backing (disks, nodes);
  for (guint i = 0; i < nodes->len; i++)
    {
      QmpBlockNodeInfo *node = nodes->pdata[i];
      const char *name = node->node_name ?: "#";

      if (name[0] != '#' && disks_find (disks, name) == NULL
          && node->image != NULL && !disks_is_protocol (node->drv ?: ""))
        g_ptr_array_add (disks, disks_from_node (node));
    }
  return TRUE;
}

GPtrArray *
disks_query (QmpClient *qmp, gboolean with_nodes, GCancellable *cancellable, GError **error)
{
  g_autoptr(GPtrArray) blocks = qmp_query_block (qmp, cancellable, error);
  g_autoptr(GPtrArray) disks = g_ptr_array_new_with_free_func ((GDestroyNotify) disk_info_free);

  if (blocks == NULL)
    return NULL;
  for (guint i = 0; i < blocks->len; i++)
    {
      QmpBlockInfo *entry = blocks->pdata[i];
      if (entry->inserted)
        g_ptr_array_add (disks, disks_from_block (entry));
    }
  if (with_nodes && !disks_add_named_nodes (qmp, disks, cancellable, error))
    return NULL;
  return g_steal_pointer (&disks);
}

GArray *
disk_info_layers (const DiskInfo *disk)
{
  GArray *layers = g_array_new (FALSE, TRUE, sizeof (DiskLayer));
  DiskLayer top = { disk->file, disk->node, disk->format };

  g_array_append_val (layers, top);
  for (guint i = 0; disk->backing != NULL && disk->backing[i] != NULL; i++)
    {
      DiskLayer layer = {
        .file = disk->backing[i],
        .node = disk->backing_nodes != NULL ? disk->backing_nodes[i] : "",
        .format = disk->backing_formats != NULL && i < g_strv_length (disk->backing_formats)
                  ? disk->backing_formats[i] : "raw",
      };
      g_array_append_val (layers, layer);
    }
  return layers;
}

static gboolean
disks_same_file (const char *a, const char *b)
{
  GStatBuf sa, sb;

  if (g_strcmp0 (a, b) == 0)
    return TRUE;
  return a != NULL && b != NULL && *a == '/' && *b == '/' && g_stat (a, &sa) == 0
         && g_stat (b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

int
disk_layers_find (GArray *layers, const char *name)
{
  for (guint i = 0; i < layers->len; i++)
    if (*g_array_index (layers, DiskLayer, i).node != '\0'
        && g_str_equal (g_array_index (layers, DiskLayer, i).node, name))
      return (int) i;
  for (guint i = 0; i < layers->len; i++)
    if (disks_same_file (g_array_index (layers, DiskLayer, i).file, name))
      return (int) i;
  return -1;
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
