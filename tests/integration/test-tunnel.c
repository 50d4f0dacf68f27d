/* --tunnel: three disks' NBD connections through one stream (a command or TCP), and a broken one. */
#include <signal.h>

#include "nbd/tunnel.h"
#include "tests/integration/harness.h"

#define N_DISKS 3

typedef struct {
  Rig *rig;
  char *src[N_DISKS];
  char *dst[N_DISKS];
  Vm *vsrc, *vdst;
} Fixture;

static const char *const ids[N_DISKS] = { "vda", "vdb", "vdc" };

static void
fixture_setup (Fixture *f, gconstpointer data)
{
  VmDisk sd[N_DISKS + 1] = { { 0 } };
  VmDisk dd[N_DISKS + 1] = { { 0 } };

  f->rig = rig_new ();
  for (int i = 0; i < N_DISKS; i++)
    {
      g_autofree char *s = g_strdup_printf ("src-%s.qcow2", ids[i]);
      g_autofree char *d = g_strdup_printf ("dst-%s.qcow2", ids[i]);
      f->src[i] = rig_path (f->rig, s);
      f->dst[i] = rig_path (f->rig, d);
      img_create (f->src[i], "qcow2", "64M");
      /* "big": vda holds more than its tunnel window and the buffers before it */
      img_write (f->src[i], "qcow2", 0x31 + i, "0",
                 i == 0 && g_strcmp0 (data, "big") == 0 ? "64M" : "12M");
      img_create (f->dst[i], "qcow2", "64M");
      sd[i] = (VmDisk) { ids[i], f->src[i], "qcow2" };
      dd[i] = (VmDisk) { ids[i], f->dst[i], "qcow2" };
    }
  f->vsrc = vm_start (f->rig, "src", sd, NULL);
  f->vdst = vm_start (f->rig, "dst", dd, "incoming");
}

static void
fixture_teardown (Fixture *f, gconstpointer data)
{
  rig_free (f->rig);
  for (int i = 0; i < N_DISKS; i++)
    {
      g_free (f->src[i]);
      g_free (f->dst[i]);
    }
}

static void
assert_migrated (Fixture *f)
{
  g_autofree char *status = vm_status (f->vdst);

  g_assert_cmpstr (status, ==, "running");
  for (int i = 0; i < N_DISKS; i++)
    g_assert_true (img_identical (f->src[i], f->dst[i]));
  g_assert_cmpuint (vm_count_jobs (f->vsrc), ==, 0);
  g_assert_cmpuint (vm_count_blkmig_nodes (f->vsrc), ==, 0);
  g_assert_cmpuint (vm_count_exports (f->vdst), ==, 0);
}

static void
test_command (Fixture *f, gconstpointer data)
{
  g_autofree char *command = g_strdup_printf ("%s tunnel-endpoint --nbd-socket {nbd-socket}",
                                              g_getenv ("BLKMIG"));

  g_assert_cmpint (blkmig_run (NULL, NULL, "migrate", "-q", "--tunnel-command", command,
                               "--source", f->vsrc->qmp_path, "--dest", f->vdst->qmp_path, NULL),
                   ==, 0);
  assert_migrated (f);
}

/* The "tunnel" event of the events file @path: data-bytes, wire-bytes, compression. */
static JsonObject *
tunnel_event (const char *path)
{
  g_autofree char *text = NULL;
  g_auto(GStrv) lines = NULL;

  g_assert_true (g_file_get_contents (path, &text, NULL, NULL));
  lines = g_strsplit (text, "\n", -1);
  for (char **line = lines; *line != NULL; line++)
    {
      g_autoptr(JsonParser) parser = json_parser_new ();
      JsonObject *event;

      if (**line == '\0' || !json_parser_load_from_data (parser, *line, -1, NULL))
        continue;
      event = json_node_get_object (json_parser_get_root (parser));
      if (g_strcmp0 (json_object_get_string_member (event, "event"), "tunnel") == 0)
        return json_object_ref (event);
    }
  g_assert_not_reached ();
}

/* --tunnel-compress on both ends (@endpoint_mode at the far end): the disks
 * arrive identical, and the stream carried them compressed exactly when both
 * ends agreed (the disks hold 12 MiB of one byte each: they compress well). */
static void
test_compress (Fixture *f, gconstpointer data)
{
  const char *endpoint_mode = data;
  gboolean zstd = g_str_equal (endpoint_mode, "zstd");
  g_autofree char *events = rig_path (f->rig, "events");
  g_autofree char *command = g_strdup_printf (
      "%s tunnel-endpoint --tunnel-compress %s --nbd-socket {nbd-socket}", g_getenv ("BLKMIG"),
      endpoint_mode);
  g_autoptr(JsonObject) event = NULL;
  gint64 data_bytes, wire_bytes;

  g_assert_cmpint (blkmig_run (NULL, NULL, "migrate", "-q", "--tunnel-command", command,
                               "--tunnel-compress", "zstd", "--events", events, "--source",
                               f->vsrc->qmp_path, "--dest", f->vdst->qmp_path, NULL), ==, 0);
  assert_migrated (f);
  event = tunnel_event (events);
  data_bytes = json_object_get_int_member (event, "data-bytes");
  wire_bytes = json_object_get_int_member (event, "wire-bytes");
  g_test_message ("%" G_GINT64_FORMAT " bytes of NBD traffic as %" G_GINT64_FORMAT, data_bytes,
                  wire_bytes);
  g_assert_cmpstr (json_object_get_string_member (event, "compression"), ==,
                   zstd ? "zstd" : "none");
  g_assert_cmpint (data_bytes, >, N_DISKS * 12 * 1024 * 1024);
  if (zstd)
    g_assert_cmpint (wire_bytes, <, data_bytes / 10);
  else
    g_assert_cmpint (wire_bytes, >, data_bytes);
}

/* Starts `tunnel-endpoint --listen tcp:127.0.0.1:0` and returns "tcp:127.0.0.1:PORT". */
static char *
start_endpoint (const char *nbd_socket, GSubprocess **proc)
{
  g_autoptr(GDataInputStream) out = NULL;
  g_autofree char *port = NULL;

  *proc = blkmig_spawn ("tunnel-endpoint", "--listen", "tcp:127.0.0.1:0", "--nbd-socket",
                        nbd_socket, NULL);
  out = g_data_input_stream_new (g_subprocess_get_stdout_pipe (*proc));
  port = g_data_input_stream_read_line (out, NULL, NULL, NULL);
  g_assert_nonnull (port);
  return g_strdup_printf ("tcp:127.0.0.1:%s", port);
}

/* The phases, so the destination's NBD socket is known to start the endpoint. */
static char *
prepare_dest (Fixture *f, const char *sock)
{
  g_autofree char *c1 = rig_path (f->rig, "c1");
  char *c2 = rig_path (f->rig, "c2");
  g_autofree char *listen = g_strdup_printf ("unix:%s", sock);

  g_assert_cmpint (blkmig_run (NULL, NULL, "begin", "--qmp", f->vsrc->qmp_path, "-o", c1, NULL), ==, 0);
  g_assert_cmpint (blkmig_run (NULL, NULL, "prepare", "--qmp", f->vdst->qmp_path, "--listen",
                               listen, "-c", c1, "-o", c2, NULL), ==, 0);
  return c2;
}

static void
test_tcp (Fixture *f, gconstpointer data)
{
  g_autofree char *sock = rig_path (f->rig, "nbd.sock");
  g_autofree char *c2 = prepare_dest (f, sock);
  g_autofree char *c3 = rig_path (f->rig, "c3");
  g_autoptr(GSubprocess) endpoint = NULL;
  g_autofree char *addr = start_endpoint (sock, &endpoint);

  g_assert_cmpint (blkmig_run (NULL, NULL, "perform", "-q", "--local-destination", "--tunnel",
                               addr, "--qmp", f->vsrc->qmp_path, "-c", c2, "-o", c3, NULL), ==, 0);
  g_assert_cmpint (blkmig_run (NULL, NULL, "finish", "--qmp", f->vdst->qmp_path, "-c", c3, NULL),
                   ==, 0);
  g_assert_true (g_subprocess_wait (endpoint, NULL, NULL));
  g_assert_true (g_subprocess_get_successful (endpoint));
  assert_migrated (f);
}

/* Starts the delaying relay as a slow reader in front of the NBD socket @sock:
 * returns the relay's own socket. */
static char *
start_slow_reader (Fixture *f, const char *sock, GSubprocess **proc)
{
  char *path = rig_path (f->rig, "slow.sock");
  g_autofree char *listen = g_strdup_printf ("unix:%s", path);
  g_autofree char *connect = g_strdup_printf ("unix:%s", sock);
  g_autoptr(GDataInputStream) out = NULL;
  g_autofree char *line = NULL;
  g_autoptr(GError) error = NULL;

  /* 40 MB/s: the relay's buffer fills and stays full */
  *proc = g_subprocess_new (G_SUBPROCESS_FLAGS_STDOUT_PIPE, &error, g_getenv ("DELAY_RELAY"),
                            "--listen", listen, "--connect", connect, "--delay-ms", "1",
                            "--rate", "320000000", NULL);
  g_assert_no_error (error);
  out = g_data_input_stream_new (g_subprocess_get_stdout_pipe (*proc));
  line = g_data_input_stream_read_line (out, NULL, NULL, NULL);
  g_assert_nonnull (line);  /* listening */
  return path;
}

/* "tunnel: ROLE process peak memory N KiB" in @err, the trace of BLKMIG_DEBUG=tunnel. */
static guint64
peak_kib (const char *err, const char *role)
{
  g_autofree char *needle = g_strdup_printf ("tunnel: %s process peak memory ", role);
  const char *at = strstr (err, needle);

  g_assert_nonnull (at);
  return g_ascii_strtoull (at + strlen (needle), NULL, 10);
}

/* Memory stays bounded with a core kept busy and a destination that reads
 * slowly (the delaying relay at 40 MB/s before its NBD socket): vda's 64 MiB
 * outrun the relay, the sockets and the window, so the tunnel holds back.
 * Bounds: the process itself (BASE_KIB, measured ~20 MiB), plus for the
 * endpoint one window per disk, for perform its output queue (8 MiB) and a
 * read per disk. */
#define BASE_KIB (24 * 1024)
static void
test_memory_bound (Fixture *f, gconstpointer data)
{
  g_autofree char *sock = rig_path (f->rig, "nbd.sock");
  g_autofree char *c2 = prepare_dest (f, sock);
  g_autofree char *c3 = rig_path (f->rig, "c3");
  g_autoptr(GSubprocess) relay = NULL;
  g_autofree char *slow = start_slow_reader (f, sock, &relay);
  g_autoptr(GSubprocess) busy = g_subprocess_new (0, NULL, "sh", "-c", "while :; do :; done",
                                                  NULL);
  g_autofree char *command = g_strdup_printf ("%s tunnel-endpoint --nbd-socket %s",
                                              g_getenv ("BLKMIG"), slow);
  g_autofree char *err = NULL;
  guint64 listener, connector;
  int rc;

  g_setenv ("BLKMIG_DEBUG", "tunnel", TRUE);
  rc = blkmig_run (NULL, &err, "perform", "-q", "--local-destination", "--tunnel-command",
                   command, "--tunnel-compress", "none", "--qmp", f->vsrc->qmp_path, "-c", c2,
                   "-o", c3, NULL);
  g_unsetenv ("BLKMIG_DEBUG");
  g_subprocess_force_exit (busy);
  g_subprocess_force_exit (relay);
  g_assert_cmpint (rc, ==, 0);
  g_assert_cmpint (blkmig_run (NULL, NULL, "finish", "--qmp", f->vdst->qmp_path, "-c", c3, NULL),
                   ==, 0);
  assert_migrated (f);
  listener = peak_kib (err, "listener");
  connector = peak_kib (err, "connector");
  g_test_message ("peak memory: perform %" G_GUINT64_FORMAT " KiB, tunnel-endpoint %"
                  G_GUINT64_FORMAT " KiB", listener, connector);
  g_assert_cmpuint (connector, <=, BASE_KIB + N_DISKS * (TUNNEL_WINDOW / 1024));
  g_assert_cmpuint (listener, <=, BASE_KIB + 8 * 1024 + N_DISKS * 1024);
}

static void
test_broken (Fixture *f, gconstpointer data)
{
  g_autofree char *sock = rig_path (f->rig, "nbd.sock");
  g_autofree char *c2 = prepare_dest (f, sock);
  g_autofree char *c3 = rig_path (f->rig, "c3");
  g_autoptr(GSubprocess) endpoint = NULL;
  g_autofree char *addr = start_endpoint (sock, &endpoint);
  g_autoptr(GSubprocess) perform = NULL;
  g_autofree char *err = NULL;
  g_autofree char *status = NULL;
  gint64 cut;

  perform = blkmig_spawn ("perform", "-q", "--local-destination", "--speed", "1048576",
                          "--tunnel", addr, "--qmp", f->vsrc->qmp_path, "-c", c2, "-o", c3, NULL);
  for (int i = 0; i < 600 && vm_count_jobs (f->vsrc) < N_DISKS; i++)
    g_usleep (20 * 1000);  /* every disk's mirror runs through the tunnel */
  g_assert_cmpuint (vm_count_jobs (f->vsrc), ==, N_DISKS);
  cut = g_get_monotonic_time ();
  g_subprocess_force_exit (endpoint);
  g_assert_cmpint (blkmig_wait (perform, NULL, &err), ==, 6);
  g_test_message ("blkmig gave up %.1f s after the tunnel broke",
                  (g_get_monotonic_time () - cut) / 1e6);
  g_assert_cmpint (g_get_monotonic_time () - cut, <, 10 * G_USEC_PER_SEC);
  g_assert_nonnull (strstr (err, "the tunnel to the destination broke"));
  status = vm_status (f->vsrc);
  g_assert_cmpstr (status, ==, "running");
  g_assert_cmpuint (vm_count_jobs (f->vsrc), ==, 0);
  g_assert_cmpuint (vm_count_blkmig_nodes (f->vsrc), ==, 0);
  g_assert_cmpint (blkmig_run (NULL, NULL, "abort", "--qmp", f->vdst->qmp_path, "-c", c2, NULL), ==, 0);
  g_assert_cmpuint (vm_count_exports (f->vdst), ==, 0);
  g_assert_cmpuint (rig_count_journals (f->rig), ==, 0);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add ("/tunnel/command-three-disks", Fixture, NULL, fixture_setup, test_command, fixture_teardown);
  g_test_add ("/tunnel/compress-zstd", Fixture, "zstd", fixture_setup, test_compress,
              fixture_teardown);
  g_test_add ("/tunnel/compress-endpoint-without", Fixture, "none", fixture_setup, test_compress,
              fixture_teardown);
  g_test_add ("/tunnel/memory-busy-core-slow-reader", Fixture, "big", fixture_setup,
              test_memory_bound, fixture_teardown);
  g_test_add ("/tunnel/tcp-three-disks", Fixture, NULL, fixture_setup, test_tcp, fixture_teardown);
  g_test_add ("/tunnel/broken-mid-copy", Fixture, NULL, fixture_setup, test_broken, fixture_teardown);
  return g_test_run ();
}
