/* How blkmig runs a mirror: job knobs, the target connection, the stall watchdog. */
#pragma once

#include "jobs/job-group.h"
#include "qmp/qmp-client.h"

typedef struct {
  gint64 speed;          /* bytes/s, 0 = unlimited */
  gint64 buf_size;       /* bytes in flight, 0 = blkmig's default (64 MiB, docs/performance.md) */
  gint64 granularity;    /* dirty-bitmap granularity, 0 = QEMU's default */
  char *copy_mode;       /* "auto" (NULL), "background" or "write-blocking" */
  gint stall_timeout;    /* seconds without progress before giving up; -1 = default */
  gint converge_window;  /* auto: seconds without a new low of the remaining bytes; -1 = default */
  gint reconnect_delay;  /* seconds an NBD target may be away; -1 = default */
} MirrorTuning;

#define MIRROR_TUNING_INIT { .stall_timeout = -1, .reconnect_delay = -1, .converge_window = -1 }
/* The granularities QEMU accepts (powers of two in between). */
#define MIRROR_MIN_GRANULARITY 512
#define MIRROR_MAX_GRANULARITY (64 * 1024 * 1024)
#define MIRROR_DEFAULT_STALL_TIMEOUT 60
#define MIRROR_DEFAULT_RECONNECT_DELAY 5
#define MIRROR_DEFAULT_CONVERGE_WINDOW 30
/* The value to use: the option's, or the default when it was not given. */
#define MIRROR_KNOB(value, fallback) ((value) >= 0 ? (value) : (fallback))

void mirror_tuning_clear (MirrorTuning *tuning);
/* --copy-mode auto: start in background mode, write-blocking when not converging. */
gboolean mirror_tuning_is_auto (const MirrorTuning *tuning);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (MirrorTuning, mirror_tuning_clear)

/* Arms @group's watchdogs for mirrors run with @tuning: the stall timeout, and with
 * --copy-mode auto the convergence watch (switching where @qmp's QEMU can). */
void mirror_arm_watchdogs (JobGroup *group, QmpClient *qmp, const MirrorTuning *tuning);

/* Starts a mirror of @device to node @target (blockdev-mirror): @sync "full",
 * "top" (the active layer only) or "none", explicit @job_id, auto-dismiss off, the
 * knobs of @tuning; @filter_node (may be NULL) names the mirror's filter node. */
gboolean mirror_start (QmpClient *qmp, const char *job_id, const char *device,
                       const char *target, const char *sync, const char *filter_node,
                       const MirrorTuning *tuning, GCancellable *cancellable, GError **error);
