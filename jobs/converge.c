/* Whether a mirror converges: while it copies, its remaining bytes must keep setting new lows. */
#include "jobs/converge.h"

void
converge_watch_reset (ConvergeWatch *watch)
{
  *watch = (ConvergeWatch) CONVERGE_WATCH_INIT;
}

gboolean
converge_watch_stuck (ConvergeWatch *watch, gint64 offset, gint64 len, gint64 now_us,
                      gint64 window_us)
{
  gint64 remaining = len - offset;

  if (len <= 0 || offset < 0 || remaining < 0)
    return FALSE;  /* no figures yet */
  if (watch->low < 0 || remaining < watch->low)
    {
      watch->low = remaining;
      watch->low_at_us = now_us;
      watch->low_offset = offset;
      return FALSE;
    }
  /* Nothing left by QEMU's figures is as close as it gets: READY may wait for the
   * rate limit's sleep (a whole buffer copied at once is paid for afterwards). */
  return remaining > 0 && now_us - watch->low_at_us >= window_us && offset > watch->low_offset;
}
