/* One block job as blkmig sees it: a state machine fed by QEMU's job events. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

#include "jobs/converge.h"

/* Transitions (events from QEMU unless marked "we"):
 *   NEW → RUNNING              JOB_STATUS_CHANGE running
 *   NEW|RUNNING → READY        BLOCK_JOB_READY (or JOB_STATUS_CHANGE ready)
 *   RUNNING|READY → COMPLETING we sent job-complete
 *   NEW|RUNNING|READY|COMPLETING → CANCELLING   we send block-job-cancel
 *   CANCELLING → the state before   we, when QEMU refused our block-job-cancel
 *   any → CONCLUDED            BLOCK_JOB_COMPLETED without error, or
 *                              BLOCK_JOB_CANCELLED after we cancelled
 *   any → FAILED               BLOCK_JOB_COMPLETED with error, BLOCK_JOB_CANCELLED
 *                              we did not ask for, or the QMP connection ended
 * READY never goes back to RUNNING (QEMU emits BLOCK_JOB_READY once).
 * Every change goes through blk_job_set_state() (events, blk_job_fail(), and the
 * group's "we" transitions), which traces it under the jobs debug category. */
typedef enum {
  BLK_JOB_NEW,
  BLK_JOB_RUNNING,
  BLK_JOB_READY,
  BLK_JOB_COMPLETING,
  BLK_JOB_CANCELLING,
  BLK_JOB_CONCLUDED,
  BLK_JOB_FAILED,
} BlkJobState;

typedef struct {
  char *id;            /* QEMU job-id */
  char *label;         /* what errors call it, e.g. the disk name */
  BlkJobState state;
  gboolean reached_ready;
  gboolean dismissed;  /* QEMU no longer lists it (status null) */
  gboolean forced;     /* our cancel was forced: CANCELLED is expected */
  char *error;         /* QEMU's text when FAILED */
  gint64 offset;       /* progress figures from events / query-block-jobs */
  gint64 len;
  ConvergeWatch converge;
  gboolean write_blocking;  /* we switched it (block-job-change): it now converges */
  gboolean write_blocking_asked;  /* ... because `blkmig ctl ID copy-mode` asked */
} BlkJob;

BlkJob *blk_job_new (const char *id, const char *label);
void blk_job_free (BlkJob *job);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlkJob, blk_job_free)

/* Applies one QMP event addressed to this job; returns TRUE if the state changed. */
gboolean blk_job_apply_event (BlkJob *job, const char *event, JsonObject *data);
/* Marks the job failed (e.g. connection lost); returns TRUE if it was not ended. */
gboolean blk_job_fail (BlkJob *job, const char *why);
gboolean blk_job_is_ended (const BlkJob *job);
/* Sets the state (READY also sets reached_ready); returns TRUE if it changed.  For
 * the "we" transitions above; events go through blk_job_apply_event(). */
gboolean blk_job_set_state (BlkJob *job, BlkJobState state);
const char *blk_job_state_to_string (BlkJobState state);
