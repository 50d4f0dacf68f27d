/* A group of block jobs: event routing, READY barrier, fail-fast, complete/cancel all. */
#include "jobs/job-group.h"

#include "common/async.h"
#include "common/debug.h"
#include "common/error.h"
#include "qmp/qmp-commands.h"
#include "qmp/qmp-json.h"

typedef struct {
  GTask *task;
  gboolean want_ended;       /* FALSE: wait for READY */
  GSource *cancel_source;
} JobWaiter;

struct _JobGroup {
  QmpClient *qmp;
  gulong event_handler;
  gulong closed_handler;
  GPtrArray *jobs;           /* BlkJob */
  GPtrArray *waiters;        /* JobWaiter */
  JobGroupChangedFunc changed_func;
  gpointer changed_data;
  GError *closed;             /* why the QMP connection ended, if it did */
  guint stall_timeout_ms;
  gint64 stall_last_done;
  gint64 stall_last_change_us;
  guint converge_window_ms;   /* 0: not watched */
  gboolean converge_switch;   /* block-job-change may make a mirror write-blocking */
  guint watch_timer;          /* both watchdogs */
  GCancellable *watch_cancellable;
};

static void job_group_check_waiters (JobGroup *group);
static void job_group_watch_restart (JobGroup *group);

static void
job_waiter_free (JobWaiter *waiter)
{
  if (waiter->cancel_source != NULL)
    {
      g_source_destroy (waiter->cancel_source);
      g_source_unref (waiter->cancel_source);
    }
  g_clear_object (&waiter->task);
  g_free (waiter);
}

static BlkJob *
job_group_lookup (JobGroup *group, const char *id)
{
  for (guint i = 0; id != NULL && i < group->jobs->len; i++)
    {
      BlkJob *job = group->jobs->pdata[i];
      if (g_str_equal (job->id, id))
        return job;
    }
  return NULL;
}

static void
job_group_dismiss_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr(GError) error = NULL;

  if (!qmp_job_dismiss_finish (QMP_CLIENT (source), result, &error))
    blkmig_debug (BLKMIG_DEBUG_JOBS, "dismissing a concluded job failed: %s", error->message);
}

static void
job_group_notify (JobGroup *group, BlkJob *job)
{
  if (group->changed_func != NULL)
    group->changed_func (group, job, group->changed_data);
  job_group_check_waiters (group);
}

static void
job_group_event_cb (QmpClient *qmp, const char *name, JsonObject *data, gpointer user_data)
{
  JobGroup *group = user_data;
  const char *id = qmp_member_string (data, g_str_equal (name, "JOB_STATUS_CHANGE") ? "id"
                                                                                  : "device");
  BlkJob *job = job_group_lookup (group, id);

  if (job == NULL || !blk_job_apply_event (job, name, data))
    return;
  if (g_str_equal (name, "JOB_STATUS_CHANGE")
      && g_strcmp0 (qmp_member_string (data, "status"), "concluded") == 0)
    qmp_job_dismiss_async (qmp, job->id, NULL, job_group_dismiss_cb, NULL);
  job_group_notify (group, job);
}

static void
job_group_closed_cb (QmpClient *qmp, const GError *why, gpointer user_data)
{
  JobGroup *group = user_data;

  g_clear_error (&group->closed);
  group->closed = g_error_copy (why);
  for (guint i = 0; i < group->jobs->len; i++)
    {
      BlkJob *job = group->jobs->pdata[i];
      blk_job_fail (job, why->message);
      job->dismissed = TRUE;
    }
  job_group_notify (group, NULL);
}

JobGroup *
job_group_new (QmpClient *qmp)
{
  JobGroup *group = g_new0 (JobGroup, 1);

  group->qmp = g_object_ref (qmp);
  group->jobs = g_ptr_array_new_with_free_func ((GDestroyNotify) blk_job_free);
  group->waiters = g_ptr_array_new ();
  group->event_handler = g_signal_connect (qmp, "event", G_CALLBACK (job_group_event_cb), group);
  group->closed_handler = g_signal_connect (qmp, "closed", G_CALLBACK (job_group_closed_cb),
                                            group);
  return group;
}

void
job_group_free (JobGroup *group)
{
  if (group == NULL)
    return;
  group->stall_timeout_ms = group->converge_window_ms = 0;
  job_group_watch_restart (group);   /* stops both watchdogs */
  g_signal_handler_disconnect (group->qmp, group->event_handler);
  g_signal_handler_disconnect (group->qmp, group->closed_handler);
  for (guint i = 0; i < group->waiters->len; i++)
    {
      JobWaiter *waiter = group->waiters->pdata[i];
      g_task_return_new_error (waiter->task, BLKMIG_ERROR, BLKMIG_ERROR_FAILED,
                               "job group freed while waiting");
      job_waiter_free (waiter);
    }
  g_ptr_array_unref (group->waiters);
  g_ptr_array_unref (group->jobs);
  g_clear_error (&group->closed);
  g_object_unref (group->qmp);
  g_free (group);
}

BlkJob *
job_group_add (JobGroup *group, const char *job_id, const char *label)
{
  BlkJob *job = blk_job_new (job_id, label);

  g_ptr_array_add (group->jobs, job);
  return job;
}

void
job_group_forget (JobGroup *group, BlkJob *job)
{
  g_ptr_array_remove (group->jobs, job);
  job_group_check_waiters (group);
}

GPtrArray *
job_group_get_jobs (JobGroup *group)
{
  return group->jobs;
}

void
job_group_set_changed_func (JobGroup *group, JobGroupChangedFunc func, gpointer user_data)
{
  group->changed_func = func;
  group->changed_data = user_data;
}

/* ---- waiting ------------------------------------------------------------ */

static BlkJob *
job_group_first_failed (JobGroup *group)
{
  for (guint i = 0; i < group->jobs->len; i++)
    {
      BlkJob *job = group->jobs->pdata[i];
      if (job->state == BLK_JOB_FAILED)
        return job;
    }
  return NULL;
}

static gboolean
job_group_all (JobGroup *group, gboolean want_ended)
{
  for (guint i = 0; i < group->jobs->len; i++)
    {
      BlkJob *job = group->jobs->pdata[i];
      gboolean done = want_ended ? blk_job_is_ended (job) && job->dismissed
                                 : job->state >= BLK_JOB_READY;
      if (!done)
        return FALSE;
    }
  return TRUE;
}

/* Returns TRUE when the waiter has its answer (and has returned it). */
static gboolean
job_waiter_evaluate (JobGroup *group, JobWaiter *waiter)
{
  BlkJob *failed = job_group_first_failed (group);

  if (failed != NULL && (!waiter->want_ended || job_group_all (group, TRUE)))
    {
      /* A lost connection stays a QMP error: the job itself may be fine. */
      g_task_return_new_error (waiter->task,
                               group->closed != NULL ? group->closed->domain : BLKMIG_ERROR,
                               group->closed != NULL ? group->closed->code : BLKMIG_ERROR_JOB,
                               "%s: block job %s failed: %s", failed->label, failed->id,
                               failed->error);
      return TRUE;
    }
  if (!job_group_all (group, waiter->want_ended))
    return FALSE;
  g_task_return_boolean (waiter->task, TRUE);
  return TRUE;
}

static void
job_group_check_waiters (JobGroup *group)
{
  for (guint i = 0; i < group->waiters->len;)
    {
      JobWaiter *waiter = group->waiters->pdata[i];

      if (job_waiter_evaluate (group, waiter))
        {
          g_ptr_array_remove_index (group->waiters, i);
          job_waiter_free (waiter);
        }
      else
        i++;
    }
}

static gboolean
job_waiter_cancelled_cb (GCancellable *cancellable, gpointer user_data)
{
  JobGroup *group = user_data;

  for (guint i = 0; i < group->waiters->len; i++)
    {
      JobWaiter *waiter = group->waiters->pdata[i];
      if (g_task_get_cancellable (waiter->task) == cancellable
          && g_task_return_error_if_cancelled (waiter->task))
        {
          g_ptr_array_remove_index (group->waiters, i);
          job_waiter_free (waiter);
          return G_SOURCE_REMOVE;
        }
    }
  return G_SOURCE_REMOVE;
}

static void
job_group_wait_async (JobGroup *group, gboolean want_ended, GCancellable *cancellable,
                      GAsyncReadyCallback callback, gpointer user_data, gpointer tag)
{
  JobWaiter *waiter = g_new0 (JobWaiter, 1);

  waiter->task = g_task_new (NULL, cancellable, callback, user_data);
  g_task_set_source_tag (waiter->task, tag);
  waiter->want_ended = want_ended;
  if (job_waiter_evaluate (group, waiter))
    {
      job_waiter_free (waiter);
      return;
    }
  if (cancellable != NULL)
    {
      waiter->cancel_source = g_cancellable_source_new (cancellable);
      g_source_set_callback (waiter->cancel_source, G_SOURCE_FUNC (job_waiter_cancelled_cb),
                             group, NULL);
      g_source_attach (waiter->cancel_source, g_main_context_get_thread_default ());
    }
  g_ptr_array_add (group->waiters, waiter);
}

void
job_group_wait_ready_async (JobGroup *group, GCancellable *cancellable,
                            GAsyncReadyCallback callback, gpointer user_data)
{
  job_group_wait_async (group, FALSE, cancellable, callback, user_data,
                        job_group_wait_ready_async);
}

gboolean
job_group_wait_ready_finish (JobGroup *group, GAsyncResult *result, GError **error)
{
  return g_task_propagate_boolean (G_TASK (result), error);
}

void
job_group_wait_ended_async (JobGroup *group, GCancellable *cancellable,
                            GAsyncReadyCallback callback, gpointer user_data)
{
  job_group_wait_async (group, TRUE, cancellable, callback, user_data,
                        job_group_wait_ended_async);
}

gboolean
job_group_wait_ended_finish (JobGroup *group, GAsyncResult *result, GError **error)
{
  return g_task_propagate_boolean (G_TASK (result), error);
}

gboolean
job_group_wait_ready_sync (JobGroup *group, GCancellable *cancellable, GError **error)
{
  g_autoptr(GAsyncResult) result = NULL;

  job_group_wait_ready_async (group, cancellable, blkmig_store_result_cb, &result);
  return job_group_wait_ready_finish (group, blkmig_await (&result), error);
}

gboolean
job_group_wait_ended_sync (JobGroup *group, GCancellable *cancellable, GError **error)
{
  g_autoptr(GAsyncResult) result = NULL;

  job_group_wait_ended_async (group, cancellable, blkmig_store_result_cb, &result);
  return job_group_wait_ended_finish (group, blkmig_await (&result), error);
}

/* ---- acting on every job ------------------------------------------------ */

gboolean
job_group_complete_all (JobGroup *group, GCancellable *cancellable, GError **error)
{
  for (guint i = 0; i < group->jobs->len; i++)
    {
      BlkJob *job = group->jobs->pdata[i];

      if (blk_job_is_ended (job))
        continue;
      if (!qmp_job_complete (group->qmp, job->id, cancellable, error))
        return FALSE;
      if (!blk_job_is_ended (job))
        blk_job_set_state (job, BLK_JOB_COMPLETING);
    }
  return TRUE;
}

static gboolean
job_group_cancel_one (JobGroup *group, BlkJob *job, gboolean force,
                      GCancellable *cancellable, GError **error)
{
  g_autoptr(GError) local_error = NULL;
  BlkJobState before = job->state;
  gboolean ok;

  blk_job_set_state (job, BLK_JOB_CANCELLING);
  job->forced = force;
  ok = qmp_block_job_cancel (group->qmp, job->id, force, cancellable, &local_error);
  if (ok || blk_job_is_ended (job))
    return TRUE;
  if (job->state == BLK_JOB_CANCELLING)
    blk_job_set_state (job, before);  /* QEMU refused: the job goes on as it was */
  g_propagate_error (error, g_steal_pointer (&local_error));
  return FALSE;
}

gboolean
job_group_cancel_all (JobGroup *group, gboolean force, GCancellable *cancellable,
                      GError **error)
{
  for (guint i = 0; i < group->jobs->len; i++)
    {
      BlkJob *job = group->jobs->pdata[i];

      if (!blk_job_is_ended (job) && !job_group_cancel_one (group, job, force, cancellable, error))
        return FALSE;
    }
  return TRUE;
}

gboolean
job_group_set_speed (JobGroup *group, gint64 speed, GCancellable *cancellable, GError **error)
{
  for (guint i = 0; i < group->jobs->len; i++)
    {
      BlkJob *job = group->jobs->pdata[i];
      g_autoptr(GError) local_error = NULL;

      if (blk_job_is_ended (job)
          || qmp_block_job_set_speed (group->qmp, job->id, speed, cancellable, &local_error))
        continue;
      if (job->state == BLK_JOB_NEW)
        continue;  /* not started yet: it starts with the new speed (the caller's job) */
      g_propagate_prefixed_error (error, g_steal_pointer (&local_error), "%s: ", job->label);
      return FALSE;
    }
  return TRUE;
}

gboolean
job_group_set_write_blocking (JobGroup *group, GCancellable *cancellable, GError **error)
{
  if (!qmp_can_change_copy_mode (group->qmp))
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "this QEMU cannot switch a running mirror (block-job-change, QEMU 8.2); "
                        "start it with --copy-mode write-blocking"), FALSE;
  for (guint i = 0; i < group->jobs->len; i++)
    {
      BlkJob *job = group->jobs->pdata[i];
      g_autoptr(GAsyncResult) result = NULL;

      if (blk_job_is_ended (job) || job->write_blocking || job->state == BLK_JOB_NEW)
        continue;
      qmp_block_job_change_copy_mode_async (group->qmp, job->id, "write-blocking", cancellable,
                                            blkmig_store_result_cb, &result);
      if (!qmp_block_job_change_copy_mode_finish (group->qmp, blkmig_await (&result), error))
        return g_prefix_error (error, "%s: ", job->label), FALSE;
      job->write_blocking = TRUE;
      job->write_blocking_asked = TRUE;
      converge_watch_reset (&job->converge);
      job_group_notify (group, job);
    }
  return TRUE;
}

static gboolean
job_group_timeout_cb (gpointer user_data)
{
  g_cancellable_cancel (user_data);
  return G_SOURCE_REMOVE;
}

void
job_group_abort (JobGroup *group, guint timeout_ms)
{
  g_autoptr(GCancellable) deadline = g_cancellable_new ();
  guint timer = g_timeout_add (timeout_ms, job_group_timeout_cb, deadline);
  g_autoptr(GError) error = NULL;

  for (guint i = 0; i < group->jobs->len; i++)
    {
      BlkJob *job = group->jobs->pdata[i];
      g_autoptr(GError) cancel_error = NULL;

      if (!blk_job_is_ended (job)
          && !job_group_cancel_one (group, job, TRUE, deadline, &cancel_error))
        blkmig_debug (BLKMIG_DEBUG_JOBS, "abort: %s", cancel_error->message);
    }
  if (!job_group_wait_ended_sync (group, deadline, &error))
    blkmig_debug (BLKMIG_DEBUG_JOBS, "abort: %s", error->message);
  if (!g_cancellable_is_cancelled (deadline))
    g_source_remove (timer);
}

/* ---- progress ----------------------------------------------------------- */

static void
job_group_refresh_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr(GTask) task = user_data;
  JobGroup *group = g_task_get_task_data (task);
  g_autoptr(GError) error = NULL;
  g_autoptr(GPtrArray) list = qmp_query_block_jobs_finish (QMP_CLIENT (source), result, &error);

  /* Checked first: a cancelled refresh may outlive its group. */
  if (g_task_return_error_if_cancelled (task))
    return;
  if (list == NULL)
    {
      g_task_return_error (task, g_steal_pointer (&error));
      return;
    }
  for (guint i = 0; i < list->len; i++)
    {
      QmpBlockJobInfo *info = list->pdata[i];
      BlkJob *job = job_group_lookup (group, info->device);

      if (job == NULL)
        continue;
      if (info->offset >= 0)
        job->offset = info->offset;
      if (info->len >= 0)
        job->len = info->len;
    }
  g_task_return_boolean (task, TRUE);
}

void
job_group_refresh_async (JobGroup *group, GCancellable *cancellable,
                         GAsyncReadyCallback callback, gpointer user_data)
{
  GTask *task = g_task_new (NULL, cancellable, callback, user_data);

  g_task_set_task_data (task, group, NULL);
  qmp_query_block_jobs_async (group->qmp, cancellable, job_group_refresh_cb, task);
}

gboolean
job_group_refresh_finish (JobGroup *group, GAsyncResult *result, GError **error)
{
  return g_task_propagate_boolean (G_TASK (result), error);
}

void
job_group_totals (JobGroup *group, gint64 *done, gint64 *total)
{
  *done = 0;
  *total = 0;
  for (guint i = 0; i < group->jobs->len; i++)
    {
      BlkJob *job = group->jobs->pdata[i];
      *done += job->offset;
      *total += job->len;
    }
}

/* ---- watchdogs: stall and convergence -------------------------------------- */

static gboolean
job_group_copying (JobGroup *group)
{
  for (guint i = 0; i < group->jobs->len; i++)
    {
      BlkJob *job = group->jobs->pdata[i];
      if (job->state < BLK_JOB_READY)
        return TRUE;
    }
  return FALSE;
}

static void
job_group_stalled (JobGroup *group)
{
  g_autofree char *why = g_strdup_printf ("no progress for %u s (is the destination reachable?)",
                                          group->stall_timeout_ms / 1000);

  for (guint i = 0; i < group->jobs->len; i++)
    {
      BlkJob *job = group->jobs->pdata[i];
      if (job->state < BLK_JOB_READY)
        blk_job_fail (job, why);
    }
  job_group_notify (group, NULL);
}

static void
job_group_check_stall (JobGroup *group, gint64 now)
{
  gint64 done, total;

  job_group_totals (group, &done, &total);
  if (done != group->stall_last_done || !job_group_copying (group))
    {
      group->stall_last_done = done;
      group->stall_last_change_us = now;
    }
  else if (now - group->stall_last_change_us >= (gint64) group->stall_timeout_ms * 1000)
    job_group_stalled (group);
}

typedef struct {
  JobGroup *group;    /* valid unless the call was cancelled (the watchdog stopped) */
  char *job_id;
} JobSwitch;

static void
job_group_switched_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  JobSwitch *sw = user_data;
  g_autoptr(GError) error = NULL;
  BlkJob *job = NULL;

  if (!qmp_block_job_change_copy_mode_finish (QMP_CLIENT (source), result, &error)
      && !g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    job = job_group_lookup (sw->group, sw->job_id);
  if (job != NULL && !blk_job_is_ended (job))
    {
      g_autofree char *why = g_strdup_printf ("not converging, and switching it to "
                                              "write-blocking failed: %s", error->message);
      blk_job_fail (job, why);
      job_group_notify (sw->group, job);
    }
  g_free (sw->job_id);
  g_free (sw);
}

/* @job's remaining bytes stopped shrinking: write-blocking if we may, else fail it. */
static void
job_group_not_converging (JobGroup *group, BlkJob *job)
{
  /* not g_format_size: its no-break space would be escaped in the message */
  g_autofree char *left = g_strdup_printf ("%.1f MiB", job->converge.low / 1048576.0);
  guint secs = group->converge_window_ms / 1000;
  g_autofree char *why = NULL;

  converge_watch_reset (&job->converge);
  if (!job->write_blocking && group->converge_switch)
    {
      JobSwitch *sw = g_new0 (JobSwitch, 1);

      sw->group = group;
      sw->job_id = g_strdup (job->id);
      job->write_blocking = TRUE;
      qmp_block_job_change_copy_mode_async (group->qmp, job->id, "write-blocking",
                                            group->watch_cancellable, job_group_switched_cb, sw);
      job_group_notify (group, job);
      return;
    }
  if (job->write_blocking)
    why = g_strdup_printf ("not converging even in write-blocking mode: no closer to ready "
                           "for %u s (%s still to copy)", secs, left);
  else
    why = g_strdup_printf ("not converging: no closer to ready for %u s while the guest writes "
                           "(%s still to copy), and the source QEMU cannot switch a running "
                           "mirror to write-blocking (block-job-change, QEMU 8.2); run again "
                           "with --copy-mode write-blocking", secs, left);
  blk_job_fail (job, why);
  job_group_notify (group, job);
}

static void
job_group_check_convergence (JobGroup *group, gint64 now)
{
  for (guint i = 0; i < group->jobs->len; i++)
    {
      BlkJob *job = group->jobs->pdata[i];

      if (job->state >= BLK_JOB_READY)
        converge_watch_reset (&job->converge);
      else if (converge_watch_stuck (&job->converge, job->offset, job->len, now,
                                     (gint64) group->converge_window_ms * 1000))
        job_group_not_converging (group, job);
    }
}

static void
job_group_watch_refreshed_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  JobGroup *group = user_data;
  g_autoptr(GError) error = NULL;
  gint64 now = g_get_monotonic_time ();

  if (!job_group_refresh_finish (group, result, &error)
      && g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return;  /* the watchdog was stopped, maybe with its group */
  if (group->stall_timeout_ms > 0)
    job_group_check_stall (group, now);
  if (group->converge_window_ms > 0)
    job_group_check_convergence (group, now);
}

static gboolean
job_group_watch_tick_cb (gpointer user_data)
{
  JobGroup *group = user_data;

  if (job_group_copying (group))
    job_group_refresh_async (group, group->watch_cancellable, job_group_watch_refreshed_cb,
                             group);
  return G_SOURCE_CONTINUE;
}

/* (Re)starts the timer behind both watchdogs, or stops it when neither is on. */
static void
job_group_watch_restart (JobGroup *group)
{
  guint interval_ms = 1000;

  if (group->watch_timer != 0)
    g_source_remove (group->watch_timer);
  group->watch_timer = 0;
  if (group->watch_cancellable != NULL)
    g_cancellable_cancel (group->watch_cancellable);
  g_clear_object (&group->watch_cancellable);
  if (group->stall_timeout_ms == 0 && group->converge_window_ms == 0)
    return;
  if (group->stall_timeout_ms > 0)
    interval_ms = MIN (group->stall_timeout_ms / 4 + 1, interval_ms);
  group->watch_cancellable = g_cancellable_new ();
  group->stall_last_change_us = g_get_monotonic_time ();
  group->stall_last_done = -1;
  group->watch_timer = g_timeout_add (interval_ms, job_group_watch_tick_cb, group);
}

gint64
job_group_idle_ms (JobGroup *group)
{
  if (group->stall_timeout_ms == 0 || group->stall_last_done < 0)
    return -1;
  return (g_get_monotonic_time () - group->stall_last_change_us) / 1000;
}

guint
job_group_get_stall_timeout_ms (JobGroup *group)
{
  return group->stall_timeout_ms;
}

void
job_group_set_stall_timeout (JobGroup *group, guint timeout_ms)
{
  group->stall_timeout_ms = timeout_ms;
  job_group_watch_restart (group);
}

void
job_group_set_convergence (JobGroup *group, guint window_ms, gboolean can_switch)
{
  group->converge_window_ms = window_ms;
  group->converge_switch = can_switch;
  job_group_watch_restart (group);
}

void
job_group_fail_all (JobGroup *group, const char *why)
{
  for (guint i = 0; i < group->jobs->len; i++)
    blk_job_fail (group->jobs->pdata[i], why);
  job_group_notify (group, NULL);
}
