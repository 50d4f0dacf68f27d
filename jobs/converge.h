/* Whether a mirror converges: while it copies, its remaining bytes must keep setting new lows. */
#pragma once

#include <glib.h>

typedef struct {
  gint64 low;          /* the lowest remaining (len - offset) seen; -1: none yet */
  gint64 low_at_us;    /* when it was seen (monotonic) */
  gint64 low_offset;   /* the offset then: did data move since? */
} ConvergeWatch;

#define CONVERGE_WATCH_INIT { .low = -1 }

/* Forgets the history (a new copy mode, READY, a new start). */
void converge_watch_reset (ConvergeWatch *watch);
/* Feeds one sample of a job still copying; TRUE when for @window_us the remaining
 * bytes set no new low although data moved (the guest dirties as fast as the mirror
 * copies).  No movement at all is a stall, not this (the stall watchdog's case);
 * nothing left to copy is not either (QEMU's rate limit may still hold READY back). */
gboolean converge_watch_stuck (ConvergeWatch *watch, gint64 offset, gint64 len, gint64 now_us,
                               gint64 window_us);
