/* Progress lines for a group of block jobs: on every state change and every few seconds. */
#pragma once

#include "jobs/job-group.h"

typedef struct _Progress Progress;

/* @quiet: print nothing (the caller still gets the totals from the group). */
Progress *progress_start (JobGroup *group, gboolean quiet, guint interval_ms);
void progress_stop (Progress *progress);
/* One object per job: the figures of a progress event (docs/events.md), `eta-s`
 * while copying at a known rate, `converging` and `write-blocking`. */
JsonArray *progress_snapshot (Progress *progress);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (Progress, progress_stop)
