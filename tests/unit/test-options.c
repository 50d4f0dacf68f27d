/* Unit tests for the option checks the commands share (src/options.c). */
#include <sys/wait.h>

#include <glib.h>

#include "common/error.h"
#include "src/options.h"

static void
assert_refused (const MirrorTuning *tuning, const char *expected)
{
  g_autoptr(GError) error = NULL;

  g_assert_false (options_mirror_check (tuning, &error));
  g_assert_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE);
  g_assert_cmpstr (error->message, ==, expected);
}

static void
test_mirror_defaults (void)
{
  MirrorTuning tuning = MIRROR_TUNING_INIT;
  g_autoptr(GError) error = NULL;

  g_assert_true (options_mirror_check (&tuning, &error));
  g_assert_no_error (error);
  tuning.granularity = MIRROR_MAX_GRANULARITY;
  tuning.copy_mode = (char *) "write-blocking";
  tuning.stall_timeout = 0;
  g_assert_true (options_mirror_check (&tuning, &error));
  g_assert_false (mirror_tuning_is_auto (&tuning));
  tuning.copy_mode = (char *) "auto";
  tuning.converge_window = 0;
  g_assert_true (options_mirror_check (&tuning, &error));
  g_assert_true (mirror_tuning_is_auto (&tuning));
}

static void
test_mirror_refused (void)
{
  MirrorTuning negative = { .stall_timeout = -2, .reconnect_delay = -1 };
  MirrorTuning speed = { .speed = -1, .stall_timeout = -1, .reconnect_delay = -1 };
  MirrorTuning odd = { .granularity = 1536, .stall_timeout = -1, .reconnect_delay = -1 };
  MirrorTuning mode = { .copy_mode = (char *) "fast", .stall_timeout = -1,
                        .reconnect_delay = -1 };
  MirrorTuning window = MIRROR_TUNING_INIT;
  const char *negative_text = "--stall-timeout, --converge-window and --nbd-reconnect-delay "
                              "must not be negative";

  window.converge_window = -2;
  assert_refused (&negative, negative_text);
  assert_refused (&window, negative_text);
  assert_refused (&speed, "--speed and --buf-size must not be negative");
  assert_refused (&odd, "--granularity must be a power of two from 512 to 67108864, not 1536");
  assert_refused (&mode, "--copy-mode must be auto, background or write-blocking, not 'fast'");
}

/* --chain: the three modes, absent means full, anything else is named. */
static void
test_chain (void)
{
  g_autoptr(GError) error = NULL;
  ChainMode mode = CHAIN_TOP;

  g_assert_true (options_chain (NULL, &mode, &error));
  g_assert_cmpint (mode, ==, CHAIN_FULL);
  g_assert_true (options_chain ("top", &mode, &error));
  g_assert_cmpint (mode, ==, CHAIN_TOP);
  g_assert_true (options_chain ("copy-base", &mode, &error));
  g_assert_cmpint (mode, ==, CHAIN_COPY_BASE);
  g_assert_true (options_chain ("full", &mode, &error));
  g_assert_cmpint (mode, ==, CHAIN_FULL);
  g_assert_false (options_chain ("base", &mode, &error));
  g_assert_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE);
  g_assert_cmpstr (error->message, ==, "--chain must be full, top or copy-base, not 'base'");
}

static void
test_tunnel_compress (void)
{
  TunnelCompress mode = TUNNEL_COMPRESS_NONE;
  g_autoptr(GError) error = NULL;

  g_assert_true (options_tunnel_compress (NULL, NULL, NULL, &mode, &error));
  g_assert_cmpint (mode, ==, TUNNEL_COMPRESS_AUTO);
  g_assert_true (options_tunnel_compress ("none", "tcp:h:1", NULL, &mode, &error));
  g_assert_cmpint (mode, ==, TUNNEL_COMPRESS_NONE);
  g_assert_false (options_tunnel_compress ("zstd", NULL, NULL, &mode, &error));
  g_assert_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE);
  g_assert_cmpstr (error->message, ==, "--tunnel-compress needs --tunnel or --tunnel-command");
  g_clear_error (&error);
  g_assert_false (options_tunnel_compress ("lz4", NULL, "cat", &mode, &error));
  g_assert_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE);
}

/* migrate and replicate refuse a bad --tunnel-compress while parsing, before they
 * touch either side (they used to begin and prepare first, then roll back). */
static void
test_tunnel_compress_commands (void)
{
  const char *blkmig = g_getenv ("BLKMIG");
  const char *migrate[] = { blkmig, "migrate", "--source", "/nonexistent/a", "--dest",
                            "/nonexistent/b", "--tunnel-command", "cat", "--tunnel-compress",
                            "lz4", NULL };
  const char *replicate[] = { blkmig, "replicate", "start", "--primary", "/nonexistent/a",
                              "--standby", "/nonexistent/b", "--tunnel-compress", "zstd", NULL };
  const char *const *argvs[] = { migrate, replicate };
  const char *expected[] = { "blkmig migrate: --tunnel-compress: expected auto, zstd or none\n",
                             "blkmig replicate: --tunnel-compress needs --tunnel or "
                             "--tunnel-command\n" };

  g_assert_nonnull (blkmig);
  for (guint i = 0; i < G_N_ELEMENTS (argvs); i++)
    {
      g_autofree char *err = NULL;
      g_autoptr(GError) error = NULL;
      int status;

      g_assert_true (g_spawn_sync (NULL, (char **) argvs[i], NULL, G_SPAWN_STDOUT_TO_DEV_NULL,
                                   NULL, NULL, NULL, &err, &status, &error));
      g_assert_no_error (error);
      g_assert_true (WIFEXITED (status));
      g_assert_cmpint (WEXITSTATUS (status), ==, 2);
      g_assert_cmpstr (err, ==, expected[i]);
    }
}

static void
test_host (void)
{
  const ControlHostOptions good[] = { { 0, 0 }, { 16777216, 1 }, { 1, 64 } };
  const ControlHostOptions bad[] = { { -1, 0 }, { 0, -1 }, { 0, 65 } };
  const char *messages[] = { "--host-bandwidth must be 0 or more bytes per second",
                             "--max-parallel must be between 1 and 64",
                             "--max-parallel must be between 1 and 64" };

  for (guint i = 0; i < G_N_ELEMENTS (good); i++)
    g_assert_true (options_host_check (&good[i], NULL));
  for (guint i = 0; i < G_N_ELEMENTS (bad); i++)
    {
      g_autoptr(GError) error = NULL;

      g_assert_false (options_host_check (&bad[i], &error));
      g_assert_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE);
      g_assert_cmpstr (error->message, ==, messages[i]);
    }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/options/host", test_host);
  g_test_add_func ("/options/mirror/defaults", test_mirror_defaults);
  g_test_add_func ("/options/mirror/refused", test_mirror_refused);
  g_test_add_func ("/options/chain", test_chain);
  g_test_add_func ("/options/tunnel-compress", test_tunnel_compress);
  g_test_add_func ("/options/tunnel-compress-commands", test_tunnel_compress_commands);
  return g_test_run ();
}
