/* Disk discovery: the disks of a running QEMU and how a user's name finds one. */
#pragma once

#include "qmp/qmp-client.h"

typedef struct {
  char *name;            /* the name we show: qdev id, else BlockBackend, else node */
  char *qdev;            /* qdev id or QOM path from query-block, may be "" */
  char *device;          /* BlockBackend name, may be "" */
  char *node;            /* root node name */
  char *format;          /* image format */
  char *file;            /* image file name */
  gint64 virtual_size;
  gint64 allocated;
  GStrv backing;         /* backing files, top first; NULL when none */
  GStrv backing_nodes;   /* their node names, "" where unknown (disks_query
                          * without @with_nodes knows none); NULL when none */
  GStrv backing_formats; /* their formats; NULL when none */
  gboolean read_only;
  gboolean cache_direct;  /* cache.direct: O_DIRECT, i.e. cache=none/directsync */
  gboolean cache_no_flush;
  char *detect_zeroes;    /* QEMU's detect-zeroes for the disk: "off", "on", "unmap" */
} DiskInfo;

void disk_info_free (DiskInfo *disk);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DiskInfo, disk_info_free)

/* Every disk with a medium, from query-block; @with_nodes adds named block
 * nodes no device uses (how a storage daemon or a device-less target looks). */
GPtrArray *disks_query (QmpClient *qmp, gboolean with_nodes, GCancellable *cancellable,
                        GError **error);
/* The guest device @disk is attached to: its qdev id, else its QOM path;
 * NULL when no device uses it. */
char *disk_info_attached_device (const DiskInfo *disk);
/* The layers of @disk's chain, top (the active layer, index 0) first, as
 * DiskLayer; at least one. */
typedef struct {
  const char *file;      /* borrowed from the DiskInfo */
  const char *node;      /* "" when unknown */
  const char *format;
} DiskLayer;

GArray *disk_info_layers (const DiskInfo *disk);
/* The index of the layer @name (a node name, or a file: the same path or the same
 * file on disk) in @layers; -1 when none. */
int disk_layers_find (GArray *layers, const char *name);
/* Finds a disk by qdev id, BlockBackend name or node name. */
DiskInfo *disks_find (GPtrArray *disks, const char *name);
/* The named disks (all when @names is NULL or empty); an unknown name is a
 * BLKMIG_ERROR_DISK that lists the disks that exist.  Returns borrowed pointers. */
GPtrArray *disks_select (GPtrArray *disks, const char *const *names, const char *where,
                         GError **error);
