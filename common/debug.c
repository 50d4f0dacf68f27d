/* Debug switches and the trace printer behind --debug and BLKMIG_DEBUG. */
#include "common/debug.h"

#include "common/escape.h"

static guint debug_flags;
static gboolean debug_initialised;

void
blkmig_debug_init (guint extra_flags)
{
  static const GDebugKey keys[] = {
    { "qmp", BLKMIG_DEBUG_QMP },
    { "jobs", BLKMIG_DEBUG_JOBS },
    { "tunnel", BLKMIG_DEBUG_TUNNEL },
  };
  debug_flags = g_parse_debug_string (g_getenv ("BLKMIG_DEBUG"), keys,
                                      G_N_ELEMENTS (keys));
  debug_flags |= extra_flags;
  debug_initialised = TRUE;
}

gboolean
blkmig_debug_enabled (BlkmigDebugFlags flag)
{
  if (!debug_initialised)
    blkmig_debug_init (0);
  return (debug_flags & flag) != 0;
}

void
blkmig_debug (BlkmigDebugFlags flag, const char *fmt, ...)
{
  va_list ap;
  g_autofree char *msg = NULL;
  g_autofree char *escaped = NULL;
  g_autoptr(GDateTime) now = NULL;

  if (!blkmig_debug_enabled (flag))
    return;
  va_start (ap, fmt);
  msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  escaped = blkmig_escape_controls (msg);  /* traces carry whatever the peers sent */
  now = g_date_time_new_now_local ();
  g_printerr ("[%02d:%02d:%02d.%03d] %s\n", g_date_time_get_hour (now),
              g_date_time_get_minute (now), g_date_time_get_second (now),
              g_date_time_get_microsecond (now) / 1000, escaped);
}
