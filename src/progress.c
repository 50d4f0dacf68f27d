/* Progress for a group of block jobs: a live display on a TTY, plain lines otherwise, events. */
#include "src/progress.h"

#include <stdio.h>
#include <unistd.h>

#include "common/escape.h"
#include "qmp/qmp-client.h"
#include "src/control.h"
#include "src/events.h"
#include "src/util.h"

#define PROGRESS_TTY_MS 500

typedef struct {
  BlkJobState shown;          /* last state reported */
  gboolean write_blocking;    /* the switch to write-blocking was reported */
  gint64 last_bytes;          /* for the rate */
  gint64 last_us;
  double rate;                /* bytes per second, smoothed */
} JobView;

struct _Progress {
  JobGroup *group;
  gboolean quiet;
  gboolean tty;               /* redraw in place */
  guint drawn;                /* lines of the last redraw */
  guint timer;
  gboolean refreshing;
  GCancellable *cancellable;
  gint64 started_us;
  GHashTable *views;          /* BlkJob* → JobView */
};

/* The figures the user sees: from READY on QEMU reports the copy in sync. */
static gint64
progress_done (BlkJob *job)
{
  return job->reached_ready && job->state != BLK_JOB_FAILED ? job->len : job->offset;
}

static const char *
progress_state (BlkJob *job)
{
  if (job->state == BLK_JOB_COMPLETING || job->state == BLK_JOB_CANCELLING)
    return "switching";
  return blk_job_state_to_string (job->state);
}

static JobView *
progress_view (Progress *progress, BlkJob *job)
{
  JobView *view = g_hash_table_lookup (progress->views, job);

  if (view == NULL)
    {
      view = g_new0 (JobView, 1);
      view->shown = -1;
      view->last_us = g_get_monotonic_time ();
      g_hash_table_insert (progress->views, job, view);
    }
  return view;
}

static void
progress_update_rate (JobView *view, BlkJob *job)
{
  gint64 now = g_get_monotonic_time ();
  double secs = (now - view->last_us) / 1e6;
  double rate;

  if (secs < 0.2)
    return;
  rate = (job->offset - view->last_bytes) / secs;
  view->rate = view->rate == 0 ? rate : 0.5 * view->rate + 0.5 * rate;
  view->last_bytes = job->offset;
  view->last_us = now;
}

static char *
progress_line (Progress *progress, BlkJob *job)
{
  JobView *view = progress_view (progress, job);
  gint64 done = progress_done (job);
  g_autofree char *d = util_human_size (done);
  g_autofree char *t = util_human_size (job->len);
  g_autofree char *eta = NULL;
  g_autofree char *label = blkmig_escape (job->label);  /* a disk name: maybe the peer's */
  int pct = job->len > 0 ? (int) (done * 100 / job->len) : 0;

  if (job->len == 0)
    return g_strdup_printf ("%s: %s", label, progress_state (job));
  if (view->rate > 0 && job->state == BLK_JOB_RUNNING && done < job->len)
    {
      gint64 left = (gint64) ((job->len - done) / view->rate);
      eta = g_strdup_printf (", ETA %" G_GINT64_FORMAT ":%02" G_GINT64_FORMAT, left / 60, left % 60);
    }
  if (job->state != BLK_JOB_RUNNING || view->rate <= 0)
    return g_strdup_printf ("%s: %s of %s (%d%%), %s", label, d, t, pct,
                            progress_state (job));
  return g_strdup_printf ("%s: %s of %s (%d%%), %.1f MB/s%s, %s", label, d, t, pct,
                          view->rate / 1e6, eta != NULL ? eta : "", progress_state (job));
}

static char *
progress_total_line (Progress *progress)
{
  gint64 done = 0, total = 0;
  GPtrArray *jobs = job_group_get_jobs (progress->group);
  double secs = (g_get_monotonic_time () - progress->started_us) / 1e6;
  g_autofree char *d = NULL;
  g_autofree char *t = NULL;

  for (guint i = 0; i < jobs->len; i++)
    {
      done += progress_done (jobs->pdata[i]);
      total += ((BlkJob *) jobs->pdata[i])->len;
    }
  d = util_human_size (done);
  t = util_human_size (total);
  return g_strdup_printf ("total: %s of %s in %.0f s", d, t, secs);
}

/* The figures of @job: what progress events carry and `blkmig ctl ID status`
 * shows, with what the stall watchdog judges by (docs/events.md). */
static JsonObject *
progress_figures (Progress *progress, BlkJob *job)
{
  JobView *view = progress_view (progress, job);
  JsonObject *obj = json_object_new ();
  gint64 done = progress_done (job);
  gint64 idle_ms = job_group_idle_ms (progress->group);
  guint stall_ms = job_group_get_stall_timeout_ms (progress->group);

  json_object_set_string_member (obj, "disk", job->label);
  json_object_set_int_member (obj, "done", done);
  json_object_set_int_member (obj, "total", job->len);
  json_object_set_string_member (obj, "state", progress_state (job));
  json_object_set_int_member (obj, "remaining", MAX (job->len - done, 0));
  json_object_set_int_member (obj, "rate", (gint64) view->rate);
  if (idle_ms >= 0)
    json_object_set_int_member (obj, "idle-ms", idle_ms);
  if (stall_ms > 0)
    json_object_set_int_member (obj, "stall-timeout-ms", stall_ms);
  return obj;
}

/* Every few seconds while copying. */
static void
progress_emit_figures (Progress *progress, BlkJob *job)
{
  g_autoptr(JsonObject) figures = progress_figures (progress, job);

  events_emit_object ("progress", figures);
}

#define PROGRESS_CONVERGING_US (10 * G_USEC_PER_SEC)

/* In sync, or its remaining bytes set a new low in the last 10 s. */
static gboolean
progress_converging (BlkJob *job)
{
  if (job->reached_ready || job->converge.low < 0)
    return TRUE;
  return g_get_monotonic_time () - job->converge.low_at_us < PROGRESS_CONVERGING_US;
}

JsonArray *
progress_snapshot (Progress *progress)
{
  GPtrArray *jobs = job_group_get_jobs (progress->group);
  JsonArray *disks = json_array_new ();

  for (guint i = 0; i < jobs->len; i++)
    {
      BlkJob *job = jobs->pdata[i];
      JsonObject *obj = progress_figures (progress, job);
      gint64 rate = json_object_get_int_member (obj, "rate");
      gint64 remaining = json_object_get_int_member (obj, "remaining");

      if (job->state == BLK_JOB_RUNNING && rate > 0)
        json_object_set_int_member (obj, "eta-s", remaining / rate);
      json_object_set_boolean_member (obj, "converging", progress_converging (job));
      json_object_set_boolean_member (obj, "write-blocking", job->write_blocking);
      json_array_add_object_element (disks, obj);
    }
  return disks;
}

static void
progress_emit (Progress *progress, BlkJob *job, gboolean state_changed)
{
  if (!events_enabled ())
    return;
  if (state_changed)
    events_emit ("disk", "disk", qmp_str (job->label), "state", qmp_str (progress_state (job)),
                 "error", job->error != NULL ? qmp_str (job->error) : NULL, NULL);
  else
    progress_emit_figures (progress, job);
}

/* TTY: every line again, in place. */
static void
progress_redraw (Progress *progress)
{
  GPtrArray *jobs = job_group_get_jobs (progress->group);
  g_autofree char *total = progress_total_line (progress);

  if (progress->drawn > 0)
    g_printerr ("\033[%uA", progress->drawn);
  for (guint i = 0; i < jobs->len; i++)
    {
      g_autofree char *line = progress_line (progress, jobs->pdata[i]);
      g_printerr ("\r\033[K%s\n", line);
    }
  g_printerr ("\r\033[K%s\n", total);
  progress->drawn = jobs->len + 1;
}

static void
progress_print_job (Progress *progress, BlkJob *job)
{
  g_autofree char *line = progress_line (progress, job);

  g_printerr ("blkmig: %s\n", line);
}

static void
progress_refreshed_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Progress *progress = user_data;
  g_autoptr(GError) error = NULL;
  GPtrArray *jobs;

  if (!job_group_refresh_finish (NULL, result, &error)
      && g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return;  /* progress_stop freed us: do not touch it */
  progress->refreshing = FALSE;
  jobs = job_group_get_jobs (progress->group);
  for (guint i = 0; i < jobs->len; i++)
    {
      BlkJob *job = jobs->pdata[i];

      progress_update_rate (progress_view (progress, job), job);
      /* in sync and staying there (replicate holds mirrors READY for hours): no news */
      if (job->state == BLK_JOB_READY && job->offset == job->len)
        continue;
      progress_emit (progress, job, FALSE);
      if (!progress->quiet && !progress->tty)
        progress_print_job (progress, jobs->pdata[i]);
    }
  if (!progress->quiet && progress->tty)
    progress_redraw (progress);
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

/* --copy-mode auto or `ctl copy-mode` made @job write-blocking: a line and an event. */
static void
progress_switched (Progress *progress, BlkJob *job)
{
  g_autofree char *label = blkmig_escape (job->label);
  const char *why = job->write_blocking_asked ? "asked" : "not converging";

  events_emit ("copy-mode", "disk", qmp_str (job->label), "mode", qmp_str ("write-blocking"),
               "reason", qmp_str (why), NULL);
  if (!progress->quiet && job->write_blocking_asked)
    g_printerr ("blkmig: %s: switched to write-blocking, as asked\n", label);
  else if (!progress->quiet)
    g_printerr ("blkmig: %s: not converging in background mode, switched to write-blocking\n",
                label);
}

/* One report per visible state change (QEMU's internal steps are not news). */
static void
progress_changed_cb (JobGroup *group, BlkJob *job, gpointer user_data)
{
  Progress *progress = user_data;
  JobView *view;

  if (job == NULL)
    return;
  view = progress_view (progress, job);
  if (job->write_blocking && !view->write_blocking)
    {
      view->write_blocking = TRUE;
      progress_switched (progress, job);
    }
  if (view->shown == job->state)
    return;
  view->shown = job->state;
  progress_emit (progress, job, TRUE);
  if (progress->quiet)
    return;
  if (progress->tty)
    progress_redraw (progress);
  else
    progress_print_job (progress, job);
}

Progress *
progress_start (JobGroup *group, gboolean quiet, guint interval_ms)
{
  Progress *progress = g_new0 (Progress, 1);

  progress->group = group;
  progress->quiet = quiet;
  progress->tty = isatty (STDERR_FILENO) && g_strcmp0 (g_getenv ("TERM"), "dumb") != 0;
  progress->cancellable = g_cancellable_new ();
  progress->started_us = g_get_monotonic_time ();
  progress->views = g_hash_table_new_full (NULL, NULL, NULL, g_free);
  progress->timer = g_timeout_add (progress->tty ? PROGRESS_TTY_MS : interval_ms,
                                   progress_tick_cb, progress);
  job_group_set_changed_func (group, progress_changed_cb, progress);
  control_watch_jobs (progress, group);
  return progress;
}

void
progress_stop (Progress *progress)
{
  if (progress == NULL)
    return;
  if (!progress->quiet && progress->tty && progress->drawn > 0)
    progress_redraw (progress);
  control_unwatch_jobs (progress);
  job_group_set_changed_func (progress->group, NULL, NULL);
  g_source_remove (progress->timer);
  g_cancellable_cancel (progress->cancellable);
  g_object_unref (progress->cancellable);
  g_hash_table_unref (progress->views);
  g_free (progress);
}
