/* One block job's state machine, driven by JOB_STATUS_CHANGE and BLOCK_JOB_* events. */
#include "jobs/job.h"

#include "common/debug.h"
#include "qmp/qmp-json.h"

BlkJob *
blk_job_new (const char *id, const char *label)
{
  BlkJob *job = g_new0 (BlkJob, 1);

  job->id = g_strdup (id);
  job->label = g_strdup (label);
  job->state = BLK_JOB_NEW;
  converge_watch_reset (&job->converge);
  return job;
}

void
blk_job_free (BlkJob *job)
{
  if (job == NULL)
    return;
  g_free (job->id);
  g_free (job->label);
  g_free (job->error);
  g_free (job);
}

const char *
blk_job_state_to_string (BlkJobState state)
{
  static const char *const names[] = {
    [BLK_JOB_NEW] = "new", [BLK_JOB_RUNNING] = "copying", [BLK_JOB_READY] = "ready",
    [BLK_JOB_COMPLETING] = "completing", [BLK_JOB_CANCELLING] = "cancelling",
    [BLK_JOB_CONCLUDED] = "done", [BLK_JOB_FAILED] = "failed",
  };
  return names[state];
}

gboolean
blk_job_is_ended (const BlkJob *job)
{
  return job->state == BLK_JOB_CONCLUDED || job->state == BLK_JOB_FAILED;
}

gboolean
blk_job_set_state (BlkJob *job, BlkJobState state)
{
  if (job->state == state)
    return FALSE;
  blkmig_debug (BLKMIG_DEBUG_JOBS, "job %s: %s -> %s", job->id,
                blk_job_state_to_string (job->state), blk_job_state_to_string (state));
  job->state = state;
  if (state == BLK_JOB_READY)
    job->reached_ready = TRUE;
  return TRUE;
}

gboolean
blk_job_fail (BlkJob *job, const char *why)
{
  if (blk_job_is_ended (job))
    return FALSE;
  g_free (job->error);
  job->error = g_strdup (why);
  return blk_job_set_state (job, BLK_JOB_FAILED);
}

static void
blk_job_take_progress (BlkJob *job, JsonObject *data)
{
  job->len = qmp_member_int (data, "len", job->len);
  job->offset = qmp_member_int (data, "offset", job->offset);
}

static gboolean
blk_job_apply_status (BlkJob *job, const char *status)
{
  if (g_str_equal (status, "null"))
    {
      job->dismissed = TRUE;
      return TRUE;
    }
  if (g_str_equal (status, "running") && job->state == BLK_JOB_NEW)
    return blk_job_set_state (job, BLK_JOB_RUNNING);
  if (g_str_equal (status, "ready") && job->state < BLK_JOB_READY)
    return blk_job_set_state (job, BLK_JOB_READY);
  /* concluded matters to the group (time to dismiss); report it as a change */
  return g_str_equal (status, "concluded");
}

static gboolean
blk_job_apply_end (BlkJob *job, const char *event, JsonObject *data)
{
  const char *error = qmp_member_string (data, "error");

  blk_job_take_progress (job, data);
  if (blk_job_is_ended (job))
    return FALSE;
  if (error != NULL)
    return blk_job_fail (job, error);
  if (g_str_equal (event, "BLOCK_JOB_CANCELLED") && job->state != BLK_JOB_CANCELLING)
    return blk_job_fail (job, "the job was cancelled outside blkmig");
  return blk_job_set_state (job, BLK_JOB_CONCLUDED);
}

gboolean
blk_job_apply_event (BlkJob *job, const char *event, JsonObject *data)
{
  if (g_str_equal (event, "JOB_STATUS_CHANGE"))
    return blk_job_apply_status (job, qmp_member_string_or (data, "status", ""));
  if (g_str_equal (event, "BLOCK_JOB_READY"))
    {
      blk_job_take_progress (job, data);
      return job->state < BLK_JOB_READY && blk_job_set_state (job, BLK_JOB_READY);
    }
  if (g_str_equal (event, "BLOCK_JOB_COMPLETED") || g_str_equal (event, "BLOCK_JOB_CANCELLED"))
    return blk_job_apply_end (job, event, data);
  return FALSE;
}
