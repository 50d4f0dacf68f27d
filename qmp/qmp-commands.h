/* Typed QMP commands: one function per command blkmig sends, typed arguments and results. */
#pragma once

#include "qmp/qmp-client.h"

/* Every function runs one command with the client's default timeout and returns
 * FALSE/NULL with QEMU's error (QMP_ERROR) when it fails.  Results are read through
 * qmp/qmp-json.h: a member QEMU left out or sent with another JSON type is NULL
 * (strings) or the documented fallback (numbers).  Strings in results are QEMU's,
 * unescaped: escape them (common/escape.h) before they go into a message. */

/* A string argument that is sent as JSON null (QEMU: "unset"); NULL omits it. */
extern const char qmp_null_arg[];
#define QMP_NULL (qmp_null_arg)

/* ---- what the peer can do --------------------------------------------------
 * Version differences are decided here (qmp_client_has_command/has_argument),
 * not by the callers. */

/* getfd: QEMU takes sockets blkmig made (qemu-storage-daemon cannot). */
gboolean qmp_can_getfd (QmpClient *qmp);
/* block-export-add/del (else only nbd-server-add/remove). */
gboolean qmp_can_block_export (QmpClient *qmp);
/* block-job-change copy-mode: a running mirror can become write-blocking (8.2). */
gboolean qmp_can_change_copy_mode (QmpClient *qmp);
/* @version ("MAJOR.MINOR.MICRO", as QMP's greeting or a cookie gives it) is at
 * least @major.@minor; FALSE for NULL, other text or numbers beyond a guint. */
gboolean qmp_version_at_least (const char *version, guint major, guint minor);
/* Whether @qmp's NBD client zeroes a whole NBD target, served by a QEMU of
 * @server_version ("7.2.22"; NULL: unknown), in one request: NBD's extended
 * headers (QEMU 8.2 on both ends).  Else one write-zeroes per 32 MiB, one after
 * another, is what a sync=full mirror's pre-zeroing costs. */
gboolean qmp_nbd_zeroes_in_one_request (QmpClient *qmp, const char *server_version);

/* ---- addresses ------------------------------------------------------------ */

typedef enum {
  QMP_ADDRESS_UNIX,
  QMP_ADDRESS_INET,
  QMP_ADDRESS_FD,
} QmpAddressType;

/* A socket address: a UNIX path, a host and port, or an fd passed with getfd. */
typedef struct {
  QmpAddressType type;
  const char *path;       /* UNIX */
  const char *host;       /* INET */
  int port;               /* INET */
  const char *fd_name;    /* FD: the getfd name */
} QmpSocketAddress;

/* ---- the VM ---------------------------------------------------------------- */

typedef struct {
  char *status;           /* "running", "inmigrate", "paused", ... (NULL: absent) */
  gboolean running;
} QmpStatusInfo;

void qmp_status_info_free (QmpStatusInfo *info);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (QmpStatusInfo, qmp_status_info_free)

/* timeout_ms 0: the client's default. */
QmpStatusInfo *qmp_query_status (QmpClient *qmp, guint timeout_ms, GCancellable *cancellable,
                                 GError **error);
gboolean qmp_stop (QmpClient *qmp, GCancellable *cancellable, GError **error);
/* The machine type the VM runs ("pc-i440fx-7.2"; qom-get /machine type without
 * QOM's "-machine" suffix); NULL with an error where there is none (a storage daemon). */
char *qmp_query_machine_type (QmpClient *qmp, GCancellable *cancellable, GError **error);
/* Pipelined (replicate's pause): the replies come in the order the commands went. */
void qmp_stop_async (QmpClient *qmp, GCancellable *cancellable, GAsyncReadyCallback callback,
                     gpointer user_data);
gboolean qmp_stop_finish (QmpClient *qmp, GAsyncResult *result, GError **error);
gboolean qmp_cont (QmpClient *qmp, GCancellable *cancellable, GError **error);
/* Hands QEMU @fd (dup'ed) under @fdname. */
gboolean qmp_getfd (QmpClient *qmp, const char *fdname, int fd, GCancellable *cancellable,
                    GError **error);
/* Drops the connections of one block node (yank instance "block-node"); does
 * nothing on a QEMU without yank. */
gboolean qmp_yank_block_node (QmpClient *qmp, const char *node_name,
                              GCancellable *cancellable, GError **error);

/* ---- objects --------------------------------------------------------------- */

/* object-add tls-creds-x509 with verify-peer=on. */
gboolean qmp_object_add_tls_creds_x509 (QmpClient *qmp, const char *id, gboolean server,
                                        const char *dir, GCancellable *cancellable,
                                        GError **error);
/* object-add authz-list: policy deny, one "exact" allow rule per @allow entry. */
gboolean qmp_object_add_authz_list (QmpClient *qmp, const char *id,
                                    const char *const *allow, GCancellable *cancellable,
                                    GError **error);
gboolean qmp_object_del (QmpClient *qmp, const char *id, GCancellable *cancellable,
                         GError **error);

/* ---- block nodes ----------------------------------------------------------- */

/* blockdev-add of an NBD client node. */
typedef struct {
  const char *node_name;
  QmpSocketAddress server;
  const char *export_name;
  const char *discard;        /* "unmap", or NULL */
  const char *detect_zeroes;  /* "unmap", or NULL */
  gint64 reconnect_delay;     /* seconds, < 0: omitted */
  const char *tls_creds;      /* NULL: none */
  const char *tls_hostname;   /* NULL: none */
} QmpBlockdevNbd;

gboolean qmp_blockdev_add_nbd (QmpClient *qmp, const QmpBlockdevNbd *args,
                               GCancellable *cancellable, GError **error);

/* blockdev-add of an image (@format: "qcow2", "raw", ...) over a "file" node. */
typedef struct {
  const char *node_name;
  const char *format;
  const char *filename;
  gboolean set_cache;         /* send "cache" on both nodes: */
  gboolean cache_direct;
  gboolean cache_no_flush;
  const char *discard;        /* both nodes: "unmap", or NULL */
  const char *detect_zeroes;  /* the format node: "off", "on", "unmap", or NULL */
  gboolean no_backing;        /* "backing": null (an overlay blockdev-snapshot attaches) */
  const char *backing_node;   /* "backing": this node (blockdev-reopen attaching a chain) */
  const char *file_node;      /* "file": this existing node instead of a new one */
  gboolean read_only;         /* "read-only": true on the format node */
} QmpBlockdevImage;

gboolean qmp_blockdev_add_image (QmpClient *qmp, const QmpBlockdevImage *args,
                                 GCancellable *cancellable, GError **error);
/* blockdev-reopen of a node made by qmp_blockdev_add_image with changed options. */
gboolean qmp_blockdev_reopen_image (QmpClient *qmp, const QmpBlockdevImage *args,
                                    GCancellable *cancellable, GError **error);
gboolean qmp_blockdev_del (QmpClient *qmp, const char *node_name, GCancellable *cancellable,
                           GError **error);
/* The node attached to @parent as its child @child ("file", "backing"), from
 * x-debug-query-block-graph; NULL (an error) when there is none. */
char *qmp_query_block_child (QmpClient *qmp, const char *parent, const char *child,
                             GCancellable *cancellable, GError **error);
/* block-dirty-bitmap-add of @name on every node of @nodes, in one transaction
 * (QEMU drains all I/O first, so it is also a barrier); @granularity 0: QEMU's. */
gboolean qmp_transaction_bitmap_add (QmpClient *qmp, const char *const *nodes, const char *name,
                                     gint64 granularity, GCancellable *cancellable,
                                     GError **error);
void qmp_transaction_bitmap_add_async (QmpClient *qmp, const char *const *nodes,
                                       const char *name, gint64 granularity,
                                       GCancellable *cancellable, GAsyncReadyCallback callback,
                                       gpointer user_data);
gboolean qmp_transaction_bitmap_add_finish (QmpClient *qmp, GAsyncResult *result,
                                            GError **error);
gboolean qmp_block_dirty_bitmap_remove (QmpClient *qmp, const char *node, const char *name,
                                        GCancellable *cancellable, GError **error);
/* Flushes node @node (and what it sends a flush to: an NBD client's server) through
 * HMP `qemu-io NODE flush`, which opens a BlockBackend without permissions on it;
 * @node must be a plain node name.  System emulators only (HMP). */
gboolean qmp_flush_node (QmpClient *qmp, const char *node, GCancellable *cancellable,
                         GError **error);
/* change-backing-file: writes @backing_file into the header of @image_node, a
 * node of the chain under the root node @device.  Only for an active image. */
gboolean qmp_change_backing_file (QmpClient *qmp, const char *device, const char *image_node,
                                  const char *backing_file, GCancellable *cancellable,
                                  GError **error);

/* The "image" member of query-block / query-named-block-nodes. */
typedef struct _QmpImageInfo QmpImageInfo;
struct _QmpImageInfo {
  char *filename;             /* NULL: absent */
  char *format;               /* NULL: absent */
  gint64 virtual_size;        /* 0: absent */
  gint64 actual_size;         /* 0: absent */
  GStrv backing;              /* backing files' names, top first; NULL when none */
  QmpImageInfo *backing_image;  /* the next layer down, NULL when none */
};

/* One query-block entry. */
typedef struct {
  char *device;               /* BlockBackend name (NULL: absent) */
  char *qdev;                 /* qdev id or QOM path (NULL: absent) */
  gboolean inserted;          /* has a medium; the members below describe it */
  char *node_name;
  char *file;
  char *drv;
  gboolean ro;
  gboolean cache_direct;
  gboolean cache_no_flush;
  char *detect_zeroes;        /* "off", "on", "unmap" (NULL: absent) */
  QmpImageInfo *image;        /* NULL when absent */
} QmpBlockInfo;

/* One query-named-block-nodes (flat) entry. */
typedef struct {
  char *node_name;            /* NULL: absent */
  char *drv;
  char *file;
  gboolean ro;
  QmpImageInfo *image;        /* NULL when absent */
  gint64 job_dirty;           /* bytes dirty in its unnamed bitmaps (a mirror's), 0: none */
  GStrv bitmaps;              /* its named dirty bitmaps, NULL when none */
} QmpBlockNodeInfo;

void qmp_block_info_free (QmpBlockInfo *info);
void qmp_block_node_info_free (QmpBlockNodeInfo *info);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (QmpBlockInfo, qmp_block_info_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (QmpBlockNodeInfo, qmp_block_node_info_free)

/* Arrays of QmpBlockInfo / QmpBlockNodeInfo (flat=true), owning their elements. */
GPtrArray *qmp_query_block (QmpClient *qmp, GCancellable *cancellable, GError **error);
GPtrArray *qmp_query_named_block_nodes (QmpClient *qmp, GCancellable *cancellable,
                                        GError **error);
void qmp_query_named_block_nodes_async (QmpClient *qmp, GCancellable *cancellable,
                                        GAsyncReadyCallback callback, gpointer user_data);
GPtrArray *qmp_query_named_block_nodes_finish (QmpClient *qmp, GAsyncResult *result,
                                               GError **error);

/* ---- block jobs ------------------------------------------------------------ */

/* blockdev-mirror; zero/NULL members are omitted (QEMU's defaults). */
typedef struct {
  const char *job_id;
  const char *device;
  const char *target;
  const char *sync;           /* "full" */
  gint64 speed;
  gint64 buf_size;
  gint64 granularity;
  const char *copy_mode;
  gboolean auto_dismiss;      /* sent always */
  const char *filter_node;    /* filter-node-name: the mirror's filter gets this name */
} QmpBlockdevMirror;

gboolean qmp_blockdev_mirror (QmpClient *qmp, const QmpBlockdevMirror *args,
                              GCancellable *cancellable, GError **error);
/* block-commit: @top_node (NULL: the active layer, which makes it a mirror that
 * becomes READY) into @base_node, below it in @device's chain.  auto-dismiss off. */
typedef struct {
  const char *job_id;
  const char *device;         /* the disk's root node or BlockBackend */
  const char *top_node;       /* NULL: the active layer */
  const char *base_node;
  gint64 speed;               /* 0: unlimited */
} QmpBlockCommit;

gboolean qmp_block_commit (QmpClient *qmp, const QmpBlockCommit *args,
                           GCancellable *cancellable, GError **error);
/* transaction of one blockdev-snapshot per pair: @overlays[i] (a node added with
 * no_backing) goes on top of @nodes[i]; all of them or none. */
gboolean qmp_transaction_blockdev_snapshot (QmpClient *qmp, const char *const *nodes,
                                            const char *const *overlays,
                                            GCancellable *cancellable, GError **error);
/* One transaction: per disk, blockdev-backup sync=bitmap of @devices[i] into
 * @targets[i] as job @jobs[i], copying what @bitmap marks as it was at this moment
 * (the bitmap is left as it is), and, unless @next is NULL, a new bitmap @next on
 * @devices[i] that records the writes from this moment on. */
gboolean qmp_transaction_backup_bitmap (QmpClient *qmp, const char *const *devices,
                                        const char *const *targets, const char *const *jobs,
                                        const char *bitmap, const char *next,
                                        GCancellable *cancellable, GError **error);
/* job-complete: a READY mirror pivots. */
gboolean qmp_job_complete (QmpClient *qmp, const char *id, GCancellable *cancellable,
                           GError **error);
gboolean qmp_block_job_cancel (QmpClient *qmp, const char *device, gboolean force,
                               GCancellable *cancellable, GError **error);
/* block-job-set-speed: job @id copies at most @speed bytes per second (0: unlimited). */
gboolean qmp_block_job_set_speed (QmpClient *qmp, const char *id, gint64 speed,
                                  GCancellable *cancellable, GError **error);
/* block-job-change of mirror @id to @copy_mode ("write-blocking"; QEMU cannot go back). */
void qmp_block_job_change_copy_mode_async (QmpClient *qmp, const char *id, const char *copy_mode,
                                           GCancellable *cancellable,
                                           GAsyncReadyCallback callback, gpointer user_data);
gboolean qmp_block_job_change_copy_mode_finish (QmpClient *qmp, GAsyncResult *result,
                                                GError **error);
gboolean qmp_job_dismiss (QmpClient *qmp, const char *id, GCancellable *cancellable,
                          GError **error);
void qmp_job_dismiss_async (QmpClient *qmp, const char *id, GCancellable *cancellable,
                            GAsyncReadyCallback callback, gpointer user_data);
gboolean qmp_job_dismiss_finish (QmpClient *qmp, GAsyncResult *result, GError **error);

typedef struct {
  char *device;               /* the job id (NULL: absent) */
  char *type;
  char *status;
  gint64 offset;              /* -1: absent */
  gint64 len;                 /* -1: absent */
  gint64 speed;               /* 0: absent */
} QmpBlockJobInfo;

void qmp_block_job_info_free (QmpBlockJobInfo *info);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (QmpBlockJobInfo, qmp_block_job_info_free)

/* An array of QmpBlockJobInfo. */
GPtrArray *qmp_query_block_jobs (QmpClient *qmp, GCancellable *cancellable, GError **error);
void qmp_query_block_jobs_async (QmpClient *qmp, GCancellable *cancellable,
                                 GAsyncReadyCallback callback, gpointer user_data);
GPtrArray *qmp_query_block_jobs_finish (QmpClient *qmp, GAsyncResult *result, GError **error);

/* ---- NBD server and exports ------------------------------------------------ */

typedef struct {
  QmpSocketAddress addr;
  const char *tls_creds;          /* NULL: none */
  const char *tls_authz;          /* NULL: none */
  gint64 max_connections;         /* sent always (QEMU 9.1 changed the default) */
  gint64 handshake_max_seconds;   /* sent where QEMU has it (10.0; default 10 s) */
} QmpNbdServer;

gboolean qmp_nbd_server_start (QmpClient *qmp, const QmpNbdServer *args,
                               GCancellable *cancellable, GError **error);
gboolean qmp_nbd_server_stop (QmpClient *qmp, GCancellable *cancellable, GError **error);
/* The old export commands (before block-export-add). */
gboolean qmp_nbd_server_add (QmpClient *qmp, const char *device, const char *name,
                             gboolean writable, GCancellable *cancellable, GError **error);
gboolean qmp_nbd_server_remove (QmpClient *qmp, const char *name, gboolean hard,
                                GCancellable *cancellable, GError **error);
/* block-export-add of type nbd. */
gboolean qmp_block_export_add_nbd (QmpClient *qmp, const char *id, const char *node_name,
                                   const char *name, gboolean writable,
                                   GCancellable *cancellable, GError **error);
gboolean qmp_block_export_del (QmpClient *qmp, const char *id, gboolean hard,
                               GCancellable *cancellable, GError **error);
/* The ids of QEMU's exports (an entry without one is ""). */
GStrv qmp_query_block_exports (QmpClient *qmp, GCancellable *cancellable, GError **error);

/* ---- migration ------------------------------------------------------------- */

/* migrate-set-capabilities: every capability in @caps on. */
gboolean qmp_migrate_set_capabilities (QmpClient *qmp, const char *const *caps,
                                       GCancellable *cancellable, GError **error);

/* migrate-set-parameters (NULL: left alone, QMP_NULL: unset) and the same members
 * of query-migrate-parameters (NULL: absent, or a QEMU without that command). */
typedef struct {
  const char *tls_creds;
  const char *tls_hostname;
  const char *tls_authz;
  gint64 max_bandwidth;       /* the memory stream's limit, bytes/s; 0: left alone */
} QmpMigrateParameters;

typedef struct {
  char *tls_creds;
  char *tls_hostname;
  char *tls_authz;
  gint64 max_bandwidth;       /* -1: absent */
} QmpMigrateParametersInfo;

void qmp_migrate_parameters_info_free (QmpMigrateParametersInfo *info);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (QmpMigrateParametersInfo, qmp_migrate_parameters_info_free)

gboolean qmp_migrate_set_parameters (QmpClient *qmp, const QmpMigrateParameters *params,
                                     GCancellable *cancellable, GError **error);
QmpMigrateParametersInfo *qmp_query_migrate_parameters (QmpClient *qmp,
                                                        GCancellable *cancellable,
                                                        GError **error);

typedef struct {
  char *status;               /* "none", "active", "completed", ... (NULL: absent) */
  char *error_desc;           /* NULL: absent */
  gint64 transferred;         /* ram.transferred, -1: absent */
  gint64 remaining;           /* ram.remaining, -1: absent */
  gint64 downtime;            /* ms, -1: absent */
} QmpMigrateInfo;

void qmp_migrate_info_free (QmpMigrateInfo *info);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (QmpMigrateInfo, qmp_migrate_info_free)

QmpMigrateInfo *qmp_query_migrate (QmpClient *qmp, GCancellable *cancellable, GError **error);
gboolean qmp_migrate (QmpClient *qmp, const char *uri, GCancellable *cancellable,
                      GError **error);
gboolean qmp_migrate_incoming (QmpClient *qmp, const char *uri, GCancellable *cancellable,
                               GError **error);
gboolean qmp_migrate_continue (QmpClient *qmp, const char *state, GCancellable *cancellable,
                               GError **error);
gboolean qmp_migrate_cancel (QmpClient *qmp, GCancellable *cancellable, GError **error);
