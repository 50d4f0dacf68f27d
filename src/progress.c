/* Progress lines for a group of block jobs: on every state change and every few seconds. */
#include "src/progress.h"

#include "src/util.h"

struct _Progress {
  JobGroup *group;
  gboolean quiet;
  guint timer;
  gboolean refreshing;
  GCancellable *cancellable;
  gint64 started_us;
  GHashTable *shown;          /* BlkJob* → last state printed + 1 */
};

static void
progress_print_job (Progress *progress, BlkJob *job)
{
  /* From READY on QEMU reports the copy in sync, whatever the last query said. */
  gboolean synced = job->reached_ready && job->state != BLK_JOB_FAILED;
  g_autofree char *done = util_human_size (synced ? job->len : job->offset);
  g_autofree char *total = util_human_size (job->len);
  int pct = job->len > 0 ? (int) ((synced ? job->len : job->offset) * 100 / job->len) : 0;

  if (progress->quiet)
    return;
  if (job->len == 0)  /* QEMU has not sized the job yet */
    g_printerr ("blkmig: %s: %s\n", job->label, blk_job_state_to_string (job->state));
  else
    g_printerr ("blkmig: %s: %s of %s (%d%%), %s\n", job->label, done, total, pct,
                blk_job_state_to_string (job->state));
}

static void
progress_print_all (Progress *progress)
{
  GPtrArray *jobs = job_group_get_jobs (progress->group);
  gint64 done, total;
  double secs = (g_get_monotonic_time () - progress->started_us) / 1e6;
  g_autofree char *done_str = NULL;
  g_autofree char *total_str = NULL;

  for (guint i = 0; i < jobs->len; i++)
    progress_print_job (progress, jobs->pdata[i]);
  job_group_totals (progress->group, &done, &total);
  done_str = util_human_size (done);
  total_str = util_human_size (total);
  if (!progress->quiet && jobs->len > 1)
    g_printerr ("blkmig: total: %s of %s, %.1f MB/s\n", done_str, total_str,
                secs > 0 ? done / secs / 1e6 : 0.0);
}

static void
progress_refreshed_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Progress *progress = user_data;
  g_autoptr(GError) error = NULL;

  if (!job_group_refresh_finish (NULL, result, &error)
      && g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return;  /* progress_stop freed us: do not touch it */
  progress->refreshing = FALSE;
  progress_print_all (progress);
}

static gboolean
progress_tick_cb (gpointer user_data)
{
  Progress *progress = user_data;

  if (!progress->refreshing)
    {
      progress->refreshing = TRUE;
      job_group_refresh_async (progress->group, progress->cancellable,
                               progress_refreshed_cb, progress);
    }
  return G_SOURCE_CONTINUE;
}

/* One line per visible state change (QEMU's internal steps are not news). */
static void
progress_changed_cb (JobGroup *group, BlkJob *job, gpointer user_data)
{
  Progress *progress = user_data;
  gpointer shown;

  if (job == NULL)
    return;
  shown = g_hash_table_lookup (progress->shown, job);
  if (shown == GINT_TO_POINTER (job->state + 1))
    return;
  g_hash_table_insert (progress->shown, job, GINT_TO_POINTER (job->state + 1));
  progress_print_job (progress, job);
}

Progress *
progress_start (JobGroup *group, gboolean quiet, guint interval_ms)
{
  Progress *progress = g_new0 (Progress, 1);

  progress->group = group;
  progress->quiet = quiet;
  progress->cancellable = g_cancellable_new ();
  progress->started_us = g_get_monotonic_time ();
  progress->shown = g_hash_table_new (NULL, NULL);
  progress->timer = g_timeout_add (interval_ms, progress_tick_cb, progress);
  job_group_set_changed_func (group, progress_changed_cb, progress);
  return progress;
}

void
progress_stop (Progress *progress)
{
  if (progress == NULL)
    return;
  job_group_set_changed_func (progress->group, NULL, NULL);
  g_source_remove (progress->timer);
  g_cancellable_cancel (progress->cancellable);
  g_object_unref (progress->cancellable);
  g_hash_table_unref (progress->shown);
  g_free (progress);
}
