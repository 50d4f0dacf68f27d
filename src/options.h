/* Checks of option values the commands share, with usage errors naming the option. */
#pragma once

#include "jobs/mirror.h"
#include "nbd/tunnel.h"
#include "src/chain.h"
#include "src/control.h"

/* The mirror knobs as --speed, --buf-size, --granularity, --copy-mode,
 * --stall-timeout and --nbd-reconnect-delay gave them, checked the way QEMU would. */
gboolean options_mirror_check (const MirrorTuning *tuning, GError **error);
/* --chain full|top|copy-base (NULL: full) into *@mode. */
gboolean options_chain (const char *value, ChainMode *mode, GError **error);
/* --tunnel-compress MODE (NULL: auto, not given) into *@mode (may be NULL): only
 * with --tunnel or --tunnel-command. */
gboolean options_tunnel_compress (const char *value, const char *tunnel,
                                  const char *tunnel_command, TunnelCompress *mode,
                                  GError **error);
/* --base NAME=PATH entries: a name and an absolute path each. */
gboolean options_name_path (const char *option, const char *const *entries, GError **error);
/* --host-bandwidth (>= 0) and --max-parallel (0 to 64). */
gboolean options_host_check (const ControlHostOptions *host, GError **error);
