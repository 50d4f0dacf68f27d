/* Checks of option values the commands share, with usage errors naming the option. */
#include "src/options.h"

#include "common/error.h"

gboolean
options_mirror_check (const MirrorTuning *tuning, GError **error)
{
  gint64 g = tuning->granularity;

  if (tuning->stall_timeout < -1 || tuning->reconnect_delay < -1 || tuning->converge_window < -1)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "--stall-timeout, --converge-window and --nbd-reconnect-delay must not "
                        "be negative"), FALSE;
  if (tuning->speed < 0 || tuning->buf_size < 0)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "--speed and --buf-size must not be negative"), FALSE;
  if (g != 0 && (g < MIRROR_MIN_GRANULARITY || g > MIRROR_MAX_GRANULARITY || (g & (g - 1)) != 0))
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "--granularity must be a power of two from 512 to 67108864, not %"
                        G_GINT64_FORMAT, g), FALSE;
  if (tuning->copy_mode != NULL && !g_str_equal (tuning->copy_mode, "background")
      && !g_str_equal (tuning->copy_mode, "write-blocking") && !g_str_equal (tuning->copy_mode, "auto"))
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "--copy-mode must be auto, background or write-blocking, not '%s'",
                        tuning->copy_mode), FALSE;
  return TRUE;
}

gboolean
options_chain (const char *value, ChainMode *mode, GError **error)
{
  *mode = CHAIN_FULL;
  if (value == NULL || g_str_equal (value, "full"))
    return TRUE;
  if (g_str_equal (value, "top") || g_str_equal (value, "copy-base"))
    {
      *mode = g_str_equal (value, "top") ? CHAIN_TOP : CHAIN_COPY_BASE;
      return TRUE;
    }
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
               "--chain must be full, top or copy-base, not '%s'", value);
  return FALSE;
}

gboolean
options_name_path (const char *option, const char *const *entries, GError **error)
{
  for (gsize i = 0; entries != NULL && entries[i] != NULL; i++)
    {
      const char *eq = strchr (entries[i], '=');

      if (eq == NULL || eq == entries[i] || !g_path_is_absolute (eq + 1))
        return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                            "%s %s: expected NAME=/absolute/path", option, entries[i]), FALSE;
    }
  return TRUE;
}

gboolean
options_tunnel_compress (const char *value, const char *tunnel, const char *tunnel_command,
                         TunnelCompress *mode, GError **error)
{
  TunnelCompress parsed = TUNNEL_COMPRESS_AUTO;

  if (mode != NULL)
    *mode = parsed;
  if (value == NULL)
    return TRUE;
  if (tunnel == NULL && tunnel_command == NULL)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "--tunnel-compress needs --tunnel or --tunnel-command"), FALSE;
  if (!tunnel_compress_parse (value, &parsed, error))
    return FALSE;
  if (mode != NULL)
    *mode = parsed;
  return TRUE;
}

gboolean
options_host_check (const ControlHostOptions *host, GError **error)
{
  if (host->host_bandwidth < 0)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "--host-bandwidth must be 0 or more bytes per second"), FALSE;
  if (host->max_parallel < 0 || host->max_parallel > 64)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "--max-parallel must be between 1 and 64"), FALSE;
  return TRUE;
}
