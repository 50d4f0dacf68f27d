/* A group of block jobs on one QEMU: barrier at READY, fail fast, complete/cancel all. */
#pragma once

#include "jobs/job.h"
#include "qmp/qmp-client.h"

typedef struct _JobGroup JobGroup;

JobGroup *job_group_new (QmpClient *qmp);
void job_group_free (JobGroup *group);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (JobGroup, job_group_free)

/* Registers a job before the command that starts it, so no event is missed. */
BlkJob *job_group_add (JobGroup *group, const char *job_id, const char *label);
/* Drops a job whose start command failed. */
void job_group_forget (JobGroup *group, BlkJob *job);
GPtrArray *job_group_get_jobs (JobGroup *group);

/* Completes when every job is READY; fails as soon as any job fails
 * (BLKMIG_ERROR_JOB with QEMU's text).  Never polls. */
void job_group_wait_ready_async (JobGroup *group, GCancellable *cancellable,
                                 GAsyncReadyCallback callback, gpointer user_data);
gboolean job_group_wait_ready_finish (JobGroup *group, GAsyncResult *result, GError **error);
/* Completes when every job has ended and been dismissed; fails if any job failed. */
void job_group_wait_ended_async (JobGroup *group, GCancellable *cancellable,
                                 GAsyncReadyCallback callback, gpointer user_data);
gboolean job_group_wait_ended_finish (JobGroup *group, GAsyncResult *result, GError **error);

/* job-complete on every job (pivot). */
gboolean job_group_complete_all (JobGroup *group, GCancellable *cancellable, GError **error);
/* block-job-cancel on every job not yet ended.  force=FALSE on READY jobs gives a
 * point-in-time copy without pivot. */
gboolean job_group_cancel_all (JobGroup *group, gboolean force, GCancellable *cancellable,
                               GError **error);
/* block-job-set-speed on every job not yet ended (0: unlimited); a job not yet
 * started is skipped (it starts with whatever speed its caller gives it). */
gboolean job_group_set_speed (JobGroup *group, gint64 speed, GCancellable *cancellable,
                              GError **error);
/* Every running mirror becomes write-blocking (block-job-change, QEMU 8.2; else a
 * BLKMIG_ERROR_USAGE); sets BlkJob.write_blocking and .write_blocking_asked. */
gboolean job_group_set_write_blocking (JobGroup *group, GCancellable *cancellable,
                                       GError **error);
/* Best effort on failure paths: force-cancel, wait (bounded) and dismiss everything. */
void job_group_abort (JobGroup *group, guint timeout_ms);

/* Fails every job not yet ended with @why (e.g. their transport broke). */
void job_group_fail_all (JobGroup *group, const char *why);

/* Refreshes offset/len from query-block-jobs. */
void job_group_refresh_async (JobGroup *group, GCancellable *cancellable,
                              GAsyncReadyCallback callback, gpointer user_data);
gboolean job_group_refresh_finish (JobGroup *group, GAsyncResult *result, GError **error);
void job_group_totals (JobGroup *group, gint64 *done, gint64 *total);

/* A watchdog: while some job is not yet READY, no progress (bytes copied) for
 * @timeout_ms fails those jobs with "no progress for N s".  0 turns it off. */
void job_group_set_stall_timeout (JobGroup *group, guint timeout_ms);
/* The stall watchdog's inputs: how long the group's bytes done have not changed
 * (-1: the watchdog is off) and after how long that fails the jobs (0: never). */
gint64 job_group_idle_ms (JobGroup *group);
guint job_group_get_stall_timeout_ms (JobGroup *group);
/* A second watchdog: a job still copying whose remaining bytes set no new low for
 * @window_ms while data moves is not converging.  With @can_switch it is made
 * write-blocking (block-job-change; BlkJob.write_blocking, the changed func is
 * called), else, or if it still does not converge, it fails.  0 turns it off. */
void job_group_set_convergence (JobGroup *group, guint window_ms, gboolean can_switch);

/* Called after every state change of any job. */
typedef void (*JobGroupChangedFunc) (JobGroup *group, BlkJob *job, gpointer user_data);
void job_group_set_changed_func (JobGroup *group, JobGroupChangedFunc func,
                                 gpointer user_data);

/* Sync wrappers over the waits: for commands and tests. */
gboolean job_group_wait_ready_sync (JobGroup *group, GCancellable *cancellable, GError **error);
gboolean job_group_wait_ended_sync (JobGroup *group, GCancellable *cancellable, GError **error);
