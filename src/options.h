/* Checks of option values the commands share, with usage errors naming the option. */
#pragma once

#include "jobs/mirror.h"

/* The mirror knobs as --speed, --buf-size, --granularity, --copy-mode,
 * --stall-timeout and --nbd-reconnect-delay gave them, checked the way QEMU would. */
gboolean options_mirror_check (const MirrorTuning *tuning, GError **error);
