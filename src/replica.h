/* The standby's record of a replication: replicas, epoch layers, acknowledged checkpoints. */
#pragma once

#include <gio/gio.h>
#include <json-glib/json-glib.h>

/* One epoch layer on the standby: a qcow2 over the layer below, opened on top at
 * checkpoint @epoch (epoch 0 is the replica itself and never listed).  Its file
 * name is always replica_layer_file (replica, id, epoch). */
typedef struct {
  guint epoch;
  char *file;
} ReplicaLayer;

typedef struct {
  char *name;          /* the primary's disk (qdev id, BlockBackend or node) */
  char *replica;       /* the replica image: absolute, from --replica (local configuration) */
  char *format;        /* "raw" or "qcow2", from its name */
  GPtrArray *layers;   /* ReplicaLayer, bottom first: those not yet removed */
} ReplicaDisk;

/* The standby's state of replication @id, kept in STATE_DIR/ID.replica and
 * written (atomically, as journals are) before every step that depends on it:
 * the state of a disk at checkpoint N is its replica overlaid by its layers of
 * epochs below N; layers of epoch N and above hold what came after. */
typedef struct {
  char *path;
  char *id;
  char *primary_qmp;
  char *standby_qmp;
  char *state;          /* "syncing", "replicating", "degraded", "primary-lost", "failover" */
  gint64 pid;           /* the process replicating, 0 when none */
  guint checkpoint;     /* the last acknowledged one, 0: none yet */
  gint64 checkpoint_us; /* its time (g_get_real_time) */
  guint committed;      /* layers of epochs below this are in the replicas */
  GArray *pauses_ms;    /* double: the last pauses of the primary, oldest first */
  GPtrArray *disks;     /* ReplicaDisk */
} Replica;

#define REPLICA_MAX_DISKS 64
#define REPLICA_PAUSES_KEPT 256

Replica *replica_new (const char *id);
void replica_free (Replica *replica);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (Replica, replica_free)
ReplicaDisk *replica_add_disk (Replica *replica, const char *name, const char *path,
                               const char *format);
/* PATH.blkmig-ID8.EPOCH: where the layer of @epoch above @replica lives. */
char *replica_layer_file (const char *replica, const char *id, guint epoch);
/* The file of disk @disk's top layer (the replica itself when it has none). */
const char *replica_top_file (const ReplicaDisk *disk);
const char *replica_top_format (const ReplicaDisk *disk);
void replica_add_pause (Replica *replica, double ms);
/* Writes the state file (state directory rules as for journals). */
gboolean replica_save (Replica *replica, GError **error);
/* NULL with BLKMIG_ERROR_USAGE when there is no replication @id here; an error
 * naming the member when the file is not what blkmig writes (a layer file that
 * is not replica_layer_file of its disk, a replica path that is not absolute). */
Replica *replica_load (const char *id, GError **error);
void replica_remove (Replica *replica);
/* Removes @path if it is a regular file of this user (never through a link);
 * a missing one is fine. */
gboolean replica_unlink_file (const char *path, GError **error);
/* Removes (recorded at once) the layers of epochs in [@from, @to) of every disk,
 * files included, top first. */
gboolean replica_drop_layers (Replica *replica, guint from, guint to, GError **error);
/* Offline, with no QEMU holding the files: each replica becomes its state at
 * checkpoint @checkpoint (layers of that epoch and above removed, the ones below
 * committed into it and removed).  Every step is recorded first and can run again. */
gboolean replica_compose (Replica *replica, guint checkpoint, GCancellable *cancellable,
                          GError **error);
/* Failover: the record says so first, then the replicas are composed as of the
 * last acknowledged checkpoint, then the record goes.  Run again (recover) after
 * a crash, it finishes the same way. */
gboolean replica_failover (Replica *replica, GCancellable *cancellable, GError **error);
/* JSON of the state for `status`. */
JsonNode *replica_status_json (const Replica *replica);
