/* Debug switches: BLKMIG_DEBUG=qmp,jobs,tunnel or --debug turn on conversation traces. */
#pragma once

#include <glib.h>

typedef enum {
  BLKMIG_DEBUG_QMP = 1 << 0,
  BLKMIG_DEBUG_JOBS = 1 << 1,
  BLKMIG_DEBUG_TUNNEL = 1 << 2,
} BlkmigDebugFlags;

/* Reads BLKMIG_DEBUG once; extra flags come from --debug. */
void blkmig_debug_init (guint extra_flags);
gboolean blkmig_debug_enabled (BlkmigDebugFlags flag);
void blkmig_debug (BlkmigDebugFlags flag, const char *fmt, ...) G_GNUC_PRINTF (2, 3);
