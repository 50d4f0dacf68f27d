/* Replication while it runs: checkpoints, background commits, losing a side. */
#pragma once

#include "cookie/cookie.h"
#include "jobs/job-group.h"
#include "qmp/qmp-client.h"
#include "src/replica.h"

typedef struct {
  QmpClient *primary;
  QmpClient *standby;
  Replica *replica;
  const Cookie *reply;      /* the standby's answer: the replicas' nodes */
  GStrv disk_nodes;         /* primary: per disk, the node its bitmaps go on */
  GStrv tops;               /* standby: per disk, the node the primary writes into */
  double interval_s;
  GCancellable *stop;       /* SIGINT/SIGTERM: a last checkpoint, then stop */
  gboolean holding;         /* in the checkpoint loop (signals stop it, not cancel) */
  gboolean checkpoint_asked; /* SIGUSR1 */
  JobGroup *mirrors;
  JobGroup *commits;        /* standby: the running commit jobs */
  guint commit_epoch;       /* layers below it are being committed, 0: none */
  gint64 commit_speed;      /* bytes/s, 0: unlimited */
  guint delay_ms;           /* test hook: kept paused this much longer */
} ReplicateRun;

/* The checkpoint loop, as session_perform's hold: from READY until @run->stop
 * (a last checkpoint, TRUE) or until a side is lost (BLKMIG_ERROR_DEGRADED,
 * BLKMIG_ERROR_PRIMARY_LOST). */
gboolean replicate_hold (gpointer data, JobGroup *group, GCancellable *cancellable,
                         GError **error);
/* Waits for a running commit (or cancels it when @cancel), and forgets it. */
void replicate_end_commit (ReplicateRun *run, gboolean cancel);
/* Best effort: every job, export, node, server and TLS object of replication
 * @id in @qmp, and its dirty bitmaps. */
void replicate_clean_qemu (QmpClient *qmp, const char *id);
