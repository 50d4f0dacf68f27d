/* Hostile-peer tests of the tunnel receiver (issue 9, item 6): a client floods a real tunnel-endpoint. */
#include <glib/gstdio.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "nbd/tunnel.h"

/* What tunnel-endpoint may use at most while it is flooded: the stream's
 * buffers plus one 16 MiB window, far below the 1.5 GiB of the issue. */
#define PEAK_RSS_MAX_KIB (64 * 1024)
#define FLOOD_BYTES (256u * 1024 * 1024)
#define CHUNK (1024 * 1024)

typedef struct {
  char *dir;
  char *nbd_path;
  GSubprocess *qsd;           /* a real NBD server: qemu-storage-daemon */
  GSubprocess *endpoint;
  GSocketConnection *conn;    /* the hostile client's stream */
} Fixture;

static void
die_with_parent (gpointer data)
{
  prctl (PR_SET_PDEATHSIG, SIGKILL);  /* even a stopped child goes if the test aborts */
}

static GSubprocess * G_GNUC_NULL_TERMINATED
spawn (GSubprocessFlags flags, GError **error, const char *argv0, ...)
{
  g_autoptr(GSubprocessLauncher) launcher = g_subprocess_launcher_new (flags);
  g_autoptr(GPtrArray) argv = g_ptr_array_new ();
  va_list ap;

  g_subprocess_launcher_set_child_setup (launcher, die_with_parent, NULL, NULL);
  va_start (ap, argv0);
  for (const char *arg = argv0; arg != NULL; arg = va_arg (ap, const char *))
    g_ptr_array_add (argv, (gpointer) arg);
  va_end (ap);
  g_ptr_array_add (argv, NULL);
  return g_subprocess_launcher_spawnv (launcher, (const char *const *) argv->pdata, error);
}

static void
fixture_setup (Fixture *fx, gconstpointer data)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *image = NULL;
  g_autofree char *blockdev = NULL;
  g_autofree char *server = NULL;

  fx->dir = g_dir_make_tmp ("blkmig-sec-tunnel-XXXXXX", &error);
  g_assert_no_error (error);
  image = g_build_filename (fx->dir, "disk.raw", NULL);
  fx->nbd_path = g_build_filename (fx->dir, "nbd.sock", NULL);
  g_file_set_contents (image, "", 0, &error);
  g_assert_no_error (error);
  g_assert_cmpint (truncate (image, 16 * 1024 * 1024), ==, 0);
  blockdev = g_strdup_printf ("driver=file,filename=%s,node-name=disk", image);
  server = g_strdup_printf ("addr.type=unix,addr.path=%s", fx->nbd_path);
  fx->qsd = spawn (G_SUBPROCESS_FLAGS_STDERR_SILENCE, &error,
                   "qemu-storage-daemon", "--blockdev", blockdev, "--nbd-server", server,
                   "--export", "type=nbd,id=e0,node-name=disk,name=disk,writable=on", NULL);
  g_assert_no_error (error);
  for (guint i = 0; i < 200 && !g_file_test (fx->nbd_path, G_FILE_TEST_EXISTS); i++)
    g_usleep (25000);
  g_assert_true (g_file_test (fx->nbd_path, G_FILE_TEST_EXISTS));
}

static void
fixture_teardown (Fixture *fx, gconstpointer data)
{
  g_autofree char *image = g_build_filename (fx->dir, "disk.raw", NULL);

  g_clear_object (&fx->conn);
  if (fx->endpoint != NULL)
    {
      g_subprocess_force_exit (fx->endpoint);
      g_subprocess_wait (fx->endpoint, NULL, NULL);
      g_clear_object (&fx->endpoint);
    }
  g_subprocess_send_signal (fx->qsd, SIGCONT);
  g_subprocess_send_signal (fx->qsd, SIGTERM);
  g_subprocess_wait (fx->qsd, NULL, NULL);
  g_clear_object (&fx->qsd);
  g_unlink (fx->nbd_path);
  g_unlink (image);
  g_rmdir (fx->dir);
  g_free (fx->nbd_path);
  g_free (fx->dir);
}

/* Starts `tunnel-endpoint --listen tcp:127.0.0.1:0` and connects to it. */
static void
endpoint_connect (Fixture *fx)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GDataInputStream) out = NULL;
  g_autoptr(GSocketClient) client = g_socket_client_new ();
  g_autofree char *port = NULL;

  fx->endpoint = spawn (G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_PIPE, &error,
                        g_getenv ("BLKMIG"), "tunnel-endpoint", "--listen", "tcp:127.0.0.1:0",
                        "--nbd-socket", fx->nbd_path, NULL);
  g_assert_no_error (error);
  out = g_data_input_stream_new (g_subprocess_get_stdout_pipe (fx->endpoint));
  g_filter_input_stream_set_close_base_stream (G_FILTER_INPUT_STREAM (out), FALSE);
  port = g_data_input_stream_read_line (out, NULL, NULL, &error);
  g_assert_no_error (error);
  g_assert_nonnull (port);
  fx->conn = g_socket_client_connect_to_host (client, "127.0.0.1", atoi (port), NULL, &error);
  g_assert_no_error (error);
  g_socket_set_timeout (g_socket_connection_get_socket (fx->conn), 10);
}

static gboolean
send_frame (Fixture *fx, guint32 id, guint8 type, const guint8 *payload, guint32 len)
{
  guint8 header[9] = { id >> 24, id >> 16, id >> 8, id, type, len >> 24, len >> 16, len >> 8, len };
  GOutputStream *out = g_io_stream_get_output_stream (G_IO_STREAM (fx->conn));

  return g_output_stream_write_all (out, header, sizeof header, NULL, NULL, NULL)
         && (len == 0 || g_output_stream_write_all (out, payload, len, NULL, NULL, NULL));
}

/* VmHWM of the endpoint in KiB (0 once it is gone). */
static guint64
endpoint_hwm_kib (Fixture *fx)
{
  g_autofree char *path = g_strdup_printf ("/proc/%s/status",
                                           g_subprocess_get_identifier (fx->endpoint));
  g_autofree char *status = NULL;
  const char *line;

  if (!g_file_get_contents (path, &status, NULL, NULL)
      || (line = strstr (status, "VmHWM:")) == NULL)
    return 0;
  return g_ascii_strtoull (line + strlen ("VmHWM:"), NULL, 10);
}

/* Waits up to 5 s for the endpoint to end; checks it failed with exactly @message. */
static void
endpoint_expect_failure (Fixture *fx, const char *message)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *expected = g_strdup_printf ("blkmig tunnel-endpoint: %s\n", message);
  char text[1024] = "";
  gsize got = 0;
  gint64 end = g_get_monotonic_time () + 5 * G_USEC_PER_SEC;
  const char *id;

  while ((id = g_subprocess_get_identifier (fx->endpoint)) != NULL
         && g_get_monotonic_time () < end)
    if (!g_main_context_iteration (NULL, FALSE))
      g_usleep (10000);
  g_assert_null (g_subprocess_get_identifier (fx->endpoint));  /* ended within 5 s */
  g_input_stream_read_all (g_subprocess_get_stderr_pipe (fx->endpoint), text, sizeof text - 1,
                           &got, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (text, ==, expected);
  g_assert_cmpint (g_subprocess_get_exit_status (fx->endpoint), ==, 1);
}

/* The NBD server is stuck (SIGSTOP) and the client sends DATA without ever
 * reading, i.e. without credit coming back: the endpoint must cut the stream
 * after one window, not buffer what it is sent. */
static void
test_flood_without_credit (Fixture *fx, gconstpointer data)
{
  g_autofree guint8 *chunk = g_malloc0 (CHUNK);
  guint64 peak = 0;
  guint sent = 0;
  struct rusage usage;

  g_subprocess_send_signal (fx->qsd, SIGSTOP);
  endpoint_connect (fx);
  g_assert_true (send_frame (fx, 1, 1 /* OPEN */, NULL, 0));
  for (; sent < FLOOD_BYTES / CHUNK && send_frame (fx, 1, 2 /* DATA */, chunk, CHUNK); sent++)
    peak = MAX (peak, endpoint_hwm_kib (fx));
  g_test_message ("flooded %u MiB; endpoint VmHWM seen: %" G_GUINT64_FORMAT " KiB", sent, peak);
  endpoint_expect_failure (fx, "tunnel: the peer broke the protocol: 1048576 bytes of DATA on "
                           "channel 1 beyond the credit it was given");
  g_assert_cmpuint (sent, <, FLOOD_BYTES / CHUNK);
  g_assert_cmpuint (peak, <, PEAK_RSS_MAX_KIB);
  /* the endpoint is the only child reaped so far: its whole-life peak */
  g_assert_cmpint (getrusage (RUSAGE_CHILDREN, &usage), ==, 0);
  g_test_message ("endpoint peak RSS (ru_maxrss): %ld KiB", usage.ru_maxrss);
  g_assert_cmpint (usage.ru_maxrss, <, PEAK_RSS_MAX_KIB);
}

/* One OPEN more than TUNNEL_MAX_CHANNELS; the NBD server keeps every one open. */
static void
test_too_many_channels (Fixture *fx, gconstpointer data)
{
  g_autofree char *message = g_strdup_printf ("tunnel: the peer broke the protocol: more than "
                                              "%d channels open", TUNNEL_MAX_CHANNELS);

  endpoint_connect (fx);
  for (guint32 id = 1; id <= TUNNEL_MAX_CHANNELS + 1; id++)
    g_assert_true (send_frame (fx, id, 1 /* OPEN */, NULL, 0));
  endpoint_expect_failure (fx, message);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  if (g_getenv ("BLKMIG") == NULL || g_find_program_in_path ("qemu-storage-daemon") == NULL)
    {
      g_test_skip ("needs $BLKMIG and qemu-storage-daemon");
      return 77;
    }
  /* the flood test first: getrusage (RUSAGE_CHILDREN) then sees only its endpoint */
  g_test_add ("/sec-tunnel/flood-without-credit", Fixture, NULL, fixture_setup,
              test_flood_without_credit, fixture_teardown);
  g_test_add ("/sec-tunnel/too-many-channels", Fixture, NULL, fixture_setup,
              test_too_many_channels, fixture_teardown);
  return g_test_run ();
}
