/* Replication while it runs: checkpoints, background commits, losing a side. */
#include "src/replicate.h"

#include "common/async.h"
#include "common/error.h"
#include "common/escape.h"
#include "jobs/job.h"
#include "qmp/qmp-commands.h"
#include "src/events.h"
#include "src/names.h"
#include "src/session.h"
#include "src/util.h"

#define REPLICATE_TICK_MS 20
#define REPLICATE_BITMAP_GRANULARITY 65536
/* A mirror still holding dirty data once the guest is paused catches up in
 * milliseconds; this only bounds a broken one. */
#define REPLICATE_CATCH_UP_MS 10000

static gboolean
replicate_lost (GError **error, int code, const char *what, const char *why)
{
  g_autofree char *safe = blkmig_escape (why != NULL ? why : "");

  return g_set_error (error, BLKMIG_ERROR, code, "%s%s%s", what, *safe ? ": " : "", safe),
         FALSE;
}

/* Is each side still there?  The primary first: its loss also ends the mirrors. */
static gboolean
replicate_check_sides (ReplicateRun *run, GError **error)
{
  GPtrArray *jobs = job_group_get_jobs (run->mirrors);

  if (qmp_client_get_state (run->primary) != QMP_STATE_READY)
    return replicate_lost (error, BLKMIG_ERROR_PRIMARY_LOST, "the primary QEMU is gone", NULL);
  if (qmp_client_get_state (run->standby) != QMP_STATE_READY)
    return replicate_lost (error, BLKMIG_ERROR_DEGRADED, "the standby QEMU is gone", NULL);
  for (guint i = 0; i < jobs->len; i++)
    {
      BlkJob *job = jobs->pdata[i];

      if (blk_job_is_ended (job))
        return replicate_lost (error, BLKMIG_ERROR_DEGRADED, "the mirror to the standby ended",
                               job->error);
    }
  return TRUE;
}

/* ---- the primary's side of a checkpoint ---------------------------------- */

static gboolean
replicate_is_filter (ReplicateRun *run, const char *name)
{
  for (guint i = 0; run->disk_nodes[i] != NULL; i++)
    {
      g_autofree char *filter = names_node (run->replica->id, NAMES_MIRROR_FILTER, i);

      if (g_str_equal (name, filter))
        return TRUE;
    }
  return FALSE;
}

/* Bytes the mirrors of our disks still have to send, from query-named-block-nodes. */
static gint64
replicate_dirty_of (ReplicateRun *run, GPtrArray *nodes)
{
  gint64 dirty = 0;

  for (guint i = 0; i < nodes->len; i++)
    {
      QmpBlockNodeInfo *node = nodes->pdata[i];

      /* 7.2 keeps a mirror's bitmap on the disk's node, 10.0 on the mirror's filter */
      if (node->node_name != NULL
          && (g_strv_contains ((const char *const *) run->disk_nodes, node->node_name)
              || replicate_is_filter (run, node->node_name)))
        dirty += node->job_dirty;
    }
  return dirty;
}

/* Mirrors still holding data with the guest paused (not seen in write-blocking
 * READY, but cheap to be sure of): wait until they sent it, then drain again (an
 * empty transaction: QEMU drains before any). */
static gboolean
replicate_catch_up (ReplicateRun *run, GError **error)
{
  static const char *const none[] = { NULL };
  gint64 until = g_get_monotonic_time () + REPLICATE_CATCH_UP_MS * 1000;

  for (;;)
    {
      g_autoptr(GPtrArray) nodes = qmp_query_named_block_nodes (run->primary, NULL, error);

      if (nodes == NULL)
        return FALSE;
      if (replicate_dirty_of (run, nodes) == 0)
        break;
      if (!replicate_check_sides (run, error))  /* a failed mirror keeps its data */
        return FALSE;
      if (g_get_monotonic_time () > until)
        return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_JOB,
                            "the mirrors did not catch up with the paused guest in %d s",
                            REPLICATE_CATCH_UP_MS / 1000), FALSE;
      blkmig_sleep (1, NULL);
    }
  return qmp_transaction_bitmap_add (run->primary, none, "", 0, NULL, error);
}

/* Pauses the primary (if @running) and, pipelined (QEMU answers in order, so this costs one
 * round trip, not three), asks what the mirrors still hold and adds the
 * checkpoint's bitmap to every disk (from here on what resync must copy) in a
 * transaction, which QEMU starts by draining all I/O: the mirrors' writes to
 * the standby included. */
static gboolean
replicate_pause (ReplicateRun *run, const char *bitmap, gboolean running, GError **error)
{
  GAsyncResult *stopped = NULL, *queried = NULL, *added = NULL;
  g_autoptr(GError) stop_error = NULL, query_error = NULL, add_error = NULL;
  g_autoptr(GPtrArray) nodes = NULL;
  gboolean ok = TRUE;

  if (running)
    qmp_stop_async (run->primary, NULL, blkmig_store_result_cb, &stopped);
  qmp_query_named_block_nodes_async (run->primary, NULL, blkmig_store_result_cb, &queried);
  qmp_transaction_bitmap_add_async (run->primary, (const char *const *) run->disk_nodes, bitmap,
                                    REPLICATE_BITMAP_GRANULARITY, NULL, blkmig_store_result_cb,
                                    &added);
  if (running)
    ok = qmp_stop_finish (run->primary, blkmig_await (&stopped), &stop_error);
  nodes = qmp_query_named_block_nodes_finish (run->primary, blkmig_await (&queried),
                                              &query_error);
  ok = qmp_transaction_bitmap_add_finish (run->primary, blkmig_await (&added), &add_error) && ok;
  g_clear_object (&stopped);
  g_object_unref (queried);
  g_object_unref (added);
  if (!ok || nodes == NULL)
    {
      GError **first = stop_error != NULL ? &stop_error
                       : add_error != NULL ? &add_error : &query_error;

      g_propagate_error (error, g_steal_pointer (first));
      return FALSE;
    }
  return replicate_dirty_of (run, nodes) == 0 || replicate_catch_up (run, error);
}

/* ---- the standby's new layers -------------------------------------------- */

static char *
replicate_overlay_node (ReplicateRun *run, guint disk, guint epoch)
{
  return names_epoch_node (run->replica->id, disk, epoch);
}

/* Files (recorded first) and nodes of the layers checkpoint @epoch puts on top. */
static gboolean
replicate_add_layers (ReplicateRun *run, guint epoch, GError **error)
{
  Replica *replica = run->replica;

  for (guint i = 0; i < replica->disks->len; i++)
    {
      ReplicaDisk *disk = replica->disks->pdata[i];
      CookieDisk *cd = run->reply->disks->pdata[i];
      g_autofree char *below = g_strdup (replica_top_file (disk));
      g_autofree char *below_format = g_strdup (replica_top_format (disk));
      g_autofree char *dir = g_path_get_dirname (disk->replica);
      g_autofree char *staging = NULL;
      g_autofree char *node = replicate_overlay_node (run, i, epoch);
      ReplicaLayer *layer = g_new0 (ReplicaLayer, 1);
      gboolean ok;

      layer->epoch = epoch;
      layer->file = replica_layer_file (disk->replica, replica->id, epoch);
      g_ptr_array_add (disk->layers, layer);
      if (!replica_save (replica, error) || (staging = util_staging_dir_new (dir, error)) == NULL)
        return FALSE;
      ok = util_overlay_create_new (layer->file, staging, below, below_format, cd->virtual_size,
                                    NULL, error);
      util_private_dir_remove (staging);
      if (!ok || !qmp_blockdev_add_image (run->standby, &(QmpBlockdevImage) {
                                            .node_name = node, .format = "qcow2",
                                            .filename = layer->file, .no_backing = TRUE,
                                            .discard = "unmap" }, NULL, error))
        return g_prefix_error (error, "%s: ", disk->name), FALSE;
    }
  return TRUE;
}

/* A checkpoint that did not happen: its layers go, nodes first. */
static void
replicate_drop_layers (ReplicateRun *run, guint epoch)
{
  for (guint i = 0; i < run->replica->disks->len; i++)
    {
      g_autofree char *node = replicate_overlay_node (run, i, epoch);
      g_autoptr(GError) error = NULL;

      if (qmp_client_get_state (run->standby) == QMP_STATE_READY)
        qmp_blockdev_del (run->standby, node, NULL, &error);
    }
  replica_drop_layers (run->replica, epoch, G_MAXUINT, NULL);
}

/* ---- a checkpoint -------------------------------------------------------- */

static void
replicate_test_delay (ReplicateRun *run)
{
  if (run->delay_ms > 0)
    g_usleep ((gulong) run->delay_ms * 1000);
}

/* Paused from before `stop` to after `cont`: the barrier, then the seal. */
static gboolean
replicate_paused (ReplicateRun *run, guint epoch, const char *bitmap, gboolean running,
                  GError **error)
{
  g_auto(GStrv) overlays = g_new0 (char *, g_strv_length (run->tops) + 1);

  for (guint i = 0; run->tops[i] != NULL; i++)
    overlays[i] = replicate_overlay_node (run, i, epoch);
  if (!replicate_pause (run, bitmap, running, error))
    return FALSE;
  replicate_test_delay (run);
  return qmp_transaction_blockdev_snapshot (run->standby, (const char *const *) run->tops,
                                            (const char *const *) overlays, NULL, error);
}

static void
replicate_forget_bitmap (ReplicateRun *run, const char *bitmap)
{
  for (guint i = 0; run->disk_nodes[i] != NULL; i++)
    {
      g_autoptr(GError) ignored = NULL;

      if (qmp_client_get_state (run->primary) == QMP_STATE_READY)
        qmp_block_dirty_bitmap_remove (run->primary, run->disk_nodes[i], bitmap, NULL, &ignored);
    }
}

/* Recorded before it is announced; then the previous bitmap is no longer needed. */
static gboolean
replicate_acknowledge (ReplicateRun *run, guint epoch, gint64 paused_at, gint64 resumed_at,
                       double paused_ms, GError **error)
{
  Replica *replica = run->replica;
  g_autofree char *previous = names_bitmap (replica->id, epoch - 1);

  for (guint i = 0; run->tops[i] != NULL; i++)
    {
      g_free (run->tops[i]);
      run->tops[i] = replicate_overlay_node (run, i, epoch);
    }
  replica->checkpoint = epoch;
  replica->checkpoint_us = g_get_real_time ();
  replica_add_pause (replica, paused_ms);
  if (!replica_save (replica, error))
    return FALSE;
  events_emit ("checkpoint", "number", qmp_int (epoch), "time-us", qmp_int (replica->checkpoint_us),
               "paused-at-us", qmp_int (paused_at), "resumed-at-us", qmp_int (resumed_at),
               "paused-ms", qmp_double (paused_ms), NULL);
  if (epoch > 1)
    replicate_forget_bitmap (run, previous);
  return TRUE;
}

/* While the guest still runs: the standby's layers flushed now (an NBD flush from
 * each mirror's target node) leave little for the flushes of the pause (`stop`
 * flushes every node, the seal flushes the sealed layer).  Best effort. */
static void
replicate_preflush (ReplicateRun *run)
{
  for (guint i = 0; run->disk_nodes[i] != NULL; i++)
    {
      g_autofree char *node = names_node (run->replica->id, NAMES_NBD_CLIENT, i);
      g_autoptr(GError) ignored = NULL;

      qmp_flush_node (run->primary, node, NULL, &ignored);
    }
}

/* Is the guest running?  A guest the user paused is left paused (no stop, no cont). */
static gboolean
replicate_guest_running (ReplicateRun *run, gboolean *running, GError **error)
{
  g_autoptr(QmpStatusInfo) status = qmp_query_status (run->primary, 0, NULL, error);

  if (status != NULL)
    *running = status->running;
  return status != NULL;
}

/* One checkpoint: the primary pauses, the standby's tops are sealed under new
 * layers in one transaction, the primary resumes; acknowledged (recorded) only
 * when the seal worked.  A failure leaves the previous checkpoint as it was. */
static gboolean
replicate_checkpoint (ReplicateRun *run, GError **error)
{
  guint epoch = run->replica->checkpoint + 1;
  g_autofree char *bitmap = names_bitmap (run->replica->id, epoch);
  g_autoptr(GError) cont_error = NULL;
  gint64 paused_at, resumed_at, started;
  gboolean running = TRUE, sealed, resumed;

  if (!replicate_guest_running (run, &running, error) || !replicate_add_layers (run, epoch, error))
    {
      replicate_drop_layers (run, epoch);
      return FALSE;
    }
  replicate_preflush (run);
  events_emit ("checkpoint-start", "number", qmp_int (epoch), NULL);
  paused_at = g_get_real_time ();
  started = g_get_monotonic_time ();
  sealed = replicate_paused (run, epoch, bitmap, running, error);
  /* whatever happened, the guest runs on */
  resumed = !running || qmp_cont (run->primary, NULL, &cont_error);
  resumed_at = g_get_real_time ();
  if (!sealed)
    {
      replicate_forget_bitmap (run, bitmap);
      replicate_drop_layers (run, epoch);
      return FALSE;
    }
  /* sealed: the standby holds the paused guest's disks, whatever cont did */
  if (!replicate_acknowledge (run, epoch, paused_at, resumed_at,
                              (g_get_monotonic_time () - started) / 1000.0, error))
    return FALSE;
  if (!resumed)
    g_propagate_error (error, g_steal_pointer (&cont_error));
  return resumed;
}

/* ---- the background commit ------------------------------------------------ */

/* The newest sealed layer (every disk has the same epochs), 0 when none. */
static guint
replicate_sealed_top (const Replica *replica)
{
  const ReplicaDisk *disk = replica->disks->pdata[0];
  guint top = 0;

  for (guint j = 0; j < disk->layers->len; j++)
    {
      const ReplicaLayer *layer = disk->layers->pdata[j];

      if (layer->epoch < replica->checkpoint)
        top = layer->epoch;
    }
  return top;
}

/* After checkpoint @epoch: the layers below it are sealed and go into the replicas. */
static gboolean
replicate_start_commit (ReplicateRun *run, GError **error)
{
  Replica *replica = run->replica;
  guint epoch = replica->checkpoint;
  guint sealed = replicate_sealed_top (replica);

  if (run->commit_epoch != 0 || sealed == 0)
    return TRUE;
  events_emit ("commit-start", "number", qmp_int (epoch), NULL);
  for (guint i = 0; i < replica->disks->len; i++)
    {
      g_autofree char *job_id = names_commit_job (replica->id, i, epoch);
      g_autofree char *top = replicate_overlay_node (run, i, sealed);
      CookieDisk *cd = run->reply->disks->pdata[i];
      QmpBlockCommit args = {
        .job_id = job_id, .device = run->tops[i], .top_node = top,
        .base_node = cd->target_node, .speed = run->commit_speed,
      };

      job_group_add (run->commits, job_id, cd->name);
      if (!qmp_block_commit (run->standby, &args, NULL, error))
        return g_prefix_error (error, "commit: %s: ", cd->name), FALSE;
    }
  run->commit_epoch = epoch;
  return TRUE;
}

/* Makes what a commit wrote into replica @i durable: QEMU does not flush the base
 * at the end of block-commit (a qcow2 replica's new clusters were still only in
 * its metadata cache: a SIGKILL then lost them, found by experiment), but a
 * reopen flushes.  The options are the ones prepare opened it with. */
static gboolean
replicate_flush_replica (ReplicateRun *run, guint i, GError **error)
{
  CookieDisk *cd = run->reply->disks->pdata[i];
  g_autofree char *file = qmp_query_block_child (run->standby, cd->target_node, "file", NULL,
                                                 error);
  QmpBlockdevImage args = {
    .node_name = cd->target_node, .format = cd->format, .file_node = file, .discard = "unmap",
    .read_only = TRUE,  /* as block-commit leaves it; the next commit reopens it writable */
  };

  return file != NULL && qmp_blockdev_reopen_image (run->standby, &args, NULL, error);
}

/* The committed layers left the chains: their nodes go, the replicas are flushed,
 * then (recorded first) the layers' files go. */
static gboolean
replicate_release_committed (ReplicateRun *run, GError **error)
{
  Replica *replica = run->replica;

  for (guint i = 0; i < replica->disks->len; i++)
    {
      ReplicaDisk *disk = replica->disks->pdata[i];

      for (guint j = disk->layers->len; j > 0; j--)
        {
          ReplicaLayer *layer = disk->layers->pdata[j - 1];
          g_autofree char *node = replicate_overlay_node (run, i, layer->epoch);

          if (layer->epoch < run->commit_epoch
              && !qmp_blockdev_del (run->standby, node, NULL, error))
            return FALSE;
        }
      if (!replicate_flush_replica (run, i, error))
        return g_prefix_error (error, "%s: ", disk->name), FALSE;
    }
  replica->committed = run->commit_epoch;
  return replica_save (replica, error)
         && replica_drop_layers (replica, 0, replica->committed, error);
}

/* Called every tick: a commit that ended is taken care of. */
static gboolean
replicate_poll_commit (ReplicateRun *run, GError **error)
{
  GPtrArray *jobs = job_group_get_jobs (run->commits);
  guint epoch = run->commit_epoch;

  if (epoch == 0)
    return TRUE;
  /* a concluded job holds its nodes until it is dismissed */
  for (guint i = 0; i < jobs->len; i++)
    if (!blk_job_is_ended (jobs->pdata[i]) || !((BlkJob *) jobs->pdata[i])->dismissed)
      return TRUE;
  for (guint i = 0; i < jobs->len; i++)
    {
      BlkJob *job = jobs->pdata[i];

      if (job->state == BLK_JOB_FAILED)
        return replicate_lost (error, BLKMIG_ERROR_DEGRADED, "the commit on the standby failed",
                               job->error);
    }
  while (jobs->len > 0)
    job_group_forget (run->commits, jobs->pdata[0]);
  if (!replicate_release_committed (run, error))
    return FALSE;
  run->commit_epoch = 0;
  events_emit ("commit", "number", qmp_int (epoch), NULL);
  return replicate_start_commit (run, error);
}

void
replicate_end_commit (ReplicateRun *run, gboolean cancel)
{
  g_autoptr(GError) error = NULL;

  if (run->commit_epoch == 0)
    return;
  if (cancel)
    job_group_abort (run->commits, 5000);
  else if (job_group_wait_ended_sync (run->commits, NULL, &error)
           && replicate_poll_commit (run, &error))
    return;
  while (job_group_get_jobs (run->commits)->len > 0)
    job_group_forget (run->commits, job_group_get_jobs (run->commits)->pdata[0]);
  run->commit_epoch = 0;
}

/* ---- the loop ------------------------------------------------------------- */

static gboolean
replicate_stopping (ReplicateRun *run)
{
  return g_cancellable_is_cancelled (run->stop);
}

/* Until @deadline (monotonic µs), a checkpoint asked for, or stop; FALSE when a
 * side was lost. */
static gboolean
replicate_wait (ReplicateRun *run, gint64 deadline, GError **error)
{
  while (g_get_monotonic_time () < deadline && !run->checkpoint_asked && !replicate_stopping (run))
    {
      blkmig_sleep (REPLICATE_TICK_MS, NULL);
      if (!replicate_check_sides (run, error) || !replicate_poll_commit (run, error))
        return FALSE;
    }
  return TRUE;
}

/* A failed checkpoint is lost data only if a side is gone; else the next try. */
static gboolean
replicate_try_checkpoint (ReplicateRun *run, GError **error)
{
  g_autoptr(GError) failed = NULL;

  run->checkpoint_asked = FALSE;
  if (replicate_checkpoint (run, &failed))
    return replicate_start_commit (run, error);
  if (!replicate_check_sides (run, error))
    return FALSE;
  events_emit ("checkpoint-failed", "number", qmp_int (run->replica->checkpoint + 1),
               "message", qmp_str (failed->message), NULL);
  g_printerr ("blkmig: checkpoint %u failed: %s\n", run->replica->checkpoint + 1,
              failed->message);
  return TRUE;
}

gboolean
replicate_hold (gpointer data, JobGroup *group, GCancellable *cancellable, GError **error)
{
  ReplicateRun *run = data;
  gint64 interval = (gint64) (run->interval_s * G_USEC_PER_SEC);

  run->mirrors = group;
  run->holding = TRUE;
  events_emit ("synced", NULL, NULL);
  g_free (run->replica->state);
  run->replica->state = g_strdup ("replicating");
  if (!replica_save (run->replica, error))
    return FALSE;
  while (!replicate_stopping (run))
    {
      if (!replicate_wait (run, g_get_monotonic_time () + interval, error)
          || !replicate_try_checkpoint (run, error))
        return FALSE;
    }
  run->holding = FALSE;
  return TRUE;
}

void
replicate_clean_qemu (QmpClient *qmp, const char *id)
{
  g_autoptr(Cookie) cookie = cookie_new (COOKIE_MODE_COPY);
  g_autoptr(GPtrArray) nodes = NULL;

  if (qmp == NULL || qmp_client_get_state (qmp) != QMP_STATE_READY)
    return;
  g_free (cookie->id);
  cookie->id = g_strdup (id);
  session_abort_blockdevs (qmp, id);
  session_abort (qmp, cookie);
  nodes = qmp_query_named_block_nodes (qmp, NULL, NULL);
  for (guint i = 0; nodes != NULL && i < nodes->len; i++)
    {
      QmpBlockNodeInfo *node = nodes->pdata[i];

      for (guint j = 0; node->bitmaps != NULL && node->bitmaps[j] != NULL; j++)
        if (names_owns (id, node->bitmaps[j]))
          qmp_block_dirty_bitmap_remove (qmp, node->node_name, node->bitmaps[j], NULL, NULL);
    }
}
