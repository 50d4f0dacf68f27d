/* Integration tests of `blkmig ctl`: set-speed on a running copy, --hold and
 * switchover under guest writes, cancel while copying and while held, and
 * hostile requests on the control socket. */
#include <gio/gunixsocketaddress.h>
#include <glib/gstdio.h>

#include "qmp/qmp-json.h"
#include "tests/integration/harness.h"

#define MIB 1048576
#define DISK_MIB 256

typedef struct {
  Rig *rig;
  char *src_img, *dst_img;
  Vm *src;
  Vm *dst;
} Pair;

static void
pair_setup (Pair *p, gconstpointer data)
{
  const char *mib = data != NULL ? data : "32";
  g_autofree char *size = g_strdup_printf ("%sM", mib);
  VmDisk src_disks[] = { { "vda", NULL, "raw" }, { NULL } };
  VmDisk dst_disks[] = { { "vda", NULL, "raw" }, { NULL } };

  p->rig = rig_new ();
  p->src_img = rig_path (p->rig, "src.raw");
  p->dst_img = rig_path (p->rig, "dst.raw");
  img_create (p->src_img, "raw", size);
  img_write (p->src_img, "raw", 0x11, "0", size);  /* data: the rate limit counts it */
  img_create (p->dst_img, "raw", size);
  src_disks[0].path = p->src_img;
  dst_disks[0].path = p->dst_img;
  p->src = vm_start (p->rig, "src", src_disks, NULL);
  p->dst = vm_start (p->rig, "dst", dst_disks, "incoming");
}

static void
pair_teardown (Pair *p, gconstpointer data)
{
  rig_free (p->rig);
  g_free (p->src_img);
  g_free (p->dst_img);
}

static guint
count_control_sockets (Pair *p)
{
  g_autofree char *state = rig_path (p->rig, "state");
  g_autoptr(GDir) dir = g_dir_open (state, 0, NULL);
  const char *name;
  guint n = 0;

  while (dir != NULL && (name = g_dir_read_name (dir)) != NULL)
    n += g_str_has_suffix (name, ".ctl");
  return n;
}

/* `blkmig ctl ID status --json` as an object. */
static JsonObject *
ctl_status (const char *id)
{
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;
  g_autoptr(JsonNode) root = NULL;
  int status = blkmig_run (&out, &err, "ctl", id, "status", "--json", NULL);

  if (status != 0)
    g_test_message ("blkmig ctl: %s", err);
  g_assert_cmpint (status, ==, 0);
  root = json_from_string (out, NULL);
  g_assert_nonnull (root);
  return json_object_ref (json_node_get_object (root));
}

/* The first disk's state in the status, e.g. "copying" or "ready"; "none" before
 * there is a mirror or while the operation does not listen yet. */
static char *
ctl_disk_state (const char *id)
{
  g_autofree char *out = NULL;
  g_autoptr(JsonNode) root = NULL;
  JsonArray *disks;

  if (blkmig_run (&out, NULL, "ctl", id, "status", "--json", NULL) != 0)
    return g_strdup ("none");
  root = json_from_string (out, NULL);
  g_assert_nonnull (root);
  disks = json_object_get_array_member (json_node_get_object (root), "disks");
  if (json_array_get_length (disks) == 0)
    return g_strdup ("none");
  return g_strdup (qmp_member_string (json_array_get_object_element (disks, 0), "state"));
}

static void
wait_for_disk_state (const char *id, const char *want)
{
  for (int i = 0; i < 600; i++)
    {
      g_autofree char *state = ctl_disk_state (id);

      if (g_str_equal (state, want))
        return;
      g_usleep (100 * 1000);
    }
  g_error ("the disk never reached %s", want);
}

static gint64
job_offset (Vm *vm)
{
  g_autoptr(JsonNode) ret = vm_qmp (vm, "query-block-jobs", NULL);
  JsonArray *jobs = json_node_get_array (ret);

  g_assert_cmpuint (json_array_get_length (jobs), ==, 1);
  return json_object_get_int_member (json_array_get_object_element (jobs, 0), "offset");
}

/* Bytes per second the source's one mirror copies, over @ms. */
static double
measure_rate (Vm *vm, guint ms)
{
  gint64 before = job_offset (vm), t0 = g_get_monotonic_time ();

  g_usleep (ms * 1000);
  return (job_offset (vm) - before) / ((g_get_monotonic_time () - t0) / 1e6);
}

/* ctl ID set-speed BYTES; an operation just spawned may not listen yet (exit 1,
 * "no running operation"): asked again for up to 5 s. */
static void
set_speed (const char *id, gint64 bytes)
{
  g_autofree char *value = g_strdup_printf ("%" G_GINT64_FORMAT, bytes);
  int status = 1;

  for (int i = 0; i < 50 && status == 1; i++)
    if ((status = blkmig_run (NULL, NULL, "ctl", id, "set-speed", value, NULL)) == 1)
      g_usleep (100 * 1000);
  g_assert_cmpint (status, ==, 0);
}

/* Rolled back: nothing of blkmig's in either QEMU or the state directory but,
 * after a SIGKILL, the dead control socket (gc's to remove). */
static void
assert_nothing_left_but_socket (Pair *p)
{
  g_autofree char *status = vm_status (p->src);

  g_assert_cmpstr (status, ==, "running");
  g_assert_cmpuint (vm_count_jobs (p->src), ==, 0);
  g_assert_cmpuint (vm_count_blkmig_nodes (p->src), ==, 0);
  g_assert_cmpuint (vm_count_exports (p->dst), ==, 0);
  g_assert_cmpuint (rig_count_journals (p->rig), ==, 0);
}

static void
assert_nothing_left (Pair *p)
{
  assert_nothing_left_but_socket (p);
  g_assert_cmpuint (count_control_sockets (p), ==, 0);
}

/* copy-mode write-blocking switches the running mirror where QEMU can (its
 * schema has block-job-change), and says why not where it cannot. */
static void
check_copy_mode (Pair *p, const char *id)
{
  g_autofree char *err = NULL;
  g_autoptr(JsonObject) status = NULL;
  int rc;

  g_assert_cmpint (blkmig_run (NULL, &err, "ctl", id, "copy-mode", "background", NULL), ==, 2);
  g_assert_cmpstr (err, ==, "blkmig ctl: copy-mode: copy-mode can only switch to write-blocking "
                            "(QEMU cannot go back)\n");
  g_clear_pointer (&err, g_free);
  rc = blkmig_run (NULL, &err, "ctl", id, "copy-mode", "write-blocking", NULL);
  if (!qmp_client_has_command (p->src->qmp, "block-job-change"))
    {
      g_assert_cmpint (rc, ==, 2);
      g_assert_cmpstr (err, ==, "blkmig ctl: copy-mode: this QEMU cannot switch a running mirror "
                                "(block-job-change, QEMU 8.2); start it with --copy-mode "
                                "write-blocking\n");
      return;
    }
  g_assert_cmpint (rc, ==, 0);
  status = ctl_status (id);
  g_assert_true (qmp_member_bool (json_array_get_object_element (
                   json_object_get_array_member (status, "disks"), 0), "write-blocking", FALSE));
}

/* The switch itself needs a source QEMU with block-job-change (8.2+): PATH's, or
 * else the other QEMU run.sh names (BLKMIG_TEST_OTHER_QEMU), so that the pass on
 * QEMU 7.2 tests it too. */
static void
test_copy_mode_switch (Pair *p, gconstpointer data)
{
  g_autoptr(GSubprocess) proc = NULL;
  VmDisk disks[] = { { "vda", p->src_img, "raw" }, { NULL } };

  if (!qmp_client_has_command (p->src->qmp, "block-job-change"))
    {
      if (rig_other_qemu () == NULL)
        {
          g_test_skip ("no QEMU with block-job-change: PATH's lacks it and "
                       "BLKMIG_TEST_OTHER_QEMU is not set");
          return;
        }
      vm_stop (p->src);
      p->src = vm_start (p->rig, "src-other", disks, "other-qemu");
      g_assert_true (qmp_client_has_command (p->src->qmp, "block-job-change"));
    }
  proc = blkmig_spawn ("migrate", "--mode", "copy", "--op-id", "cm-1", "--speed", "1048576",
                       "--buf-size", "262144", "--source", p->src->qmp_path, "--dest",
                       p->dst->qmp_path, NULL);
  wait_for_disk_state ("cm-1", "copying");
  check_copy_mode (p, "cm-1");
  set_speed ("cm-1", 0);
  g_assert_cmpint (blkmig_wait (proc, NULL, NULL), ==, 0);
  g_assert_true (img_identical (p->src_img, p->dst_img));
}

/* Down to 4 MiB/s, up to 32, down again: the rate follows within 2 s each time;
 * then `ctl cancel` rolls the copy back as SIGINT does. */
static void
test_set_speed (Pair *p, gconstpointer data)
{
  g_autoptr(GSubprocess) proc = blkmig_spawn ("migrate", "--mode", "copy", "--source",
                                              p->src->qmp_path, "--dest", p->dst->qmp_path,
                                              "--speed", "4194304", "--buf-size", "1048576",
                                              NULL);
  g_autofree char *id = rig_wait_for_control (p->rig);
  g_autofree char *err = NULL;
  g_autofree char *out = NULL;
  double slow, fast, slow_again;

  wait_for_disk_state (id, "copying");
  slow = measure_rate (p->src, 2000);
  set_speed (id, 32 * MIB);
  g_usleep (2000 * 1000);
  fast = measure_rate (p->src, 2000);
  set_speed (id, 4 * MIB);
  g_usleep (2000 * 1000);
  slow_again = measure_rate (p->src, 2000);
  g_test_message ("MiB/s: %.1f, after set-speed 32 MiB/s %.1f, after 4 MiB/s %.1f",
                  slow / MIB, fast / MIB, slow_again / MIB);
  g_assert_cmpfloat (slow, <, 6.0 * MIB);
  g_assert_cmpfloat (fast, >, 24.0 * MIB);
  g_assert_cmpfloat (fast, <, 40.0 * MIB);
  g_assert_cmpfloat (slow_again, <, 6.0 * MIB);
  check_copy_mode (p, id);
  g_assert_cmpint (blkmig_run (NULL, &err, "ctl", id, "switchover", NULL), ==, 2);
  g_assert_nonnull (strstr (err, "blkmig ctl: switchover: "));
  g_assert_nonnull (strstr (err, " was not started with --hold: it switches over by itself once "
                                 "every mirror is ready\n"));
  g_clear_pointer (&err, g_free);
  g_assert_cmpint (blkmig_run (NULL, NULL, "ctl", id, "cancel", NULL), ==, 0);
  g_assert_cmpint (blkmig_wait (proc, &out, &err), ==, 130);
  g_assert_nonnull (strstr (err, "blkmig migrate: interrupted by a signal; what it had started "
                                 "was undone\n"));
  assert_nothing_left (p);
}

static int
migrate_copy (Pair *p, const char *op_id, char **out, char **err)
{
  return blkmig_run (out, err, "migrate", "--mode", "copy", "--op-id", op_id, "--source",
                     p->src->qmp_path, "--dest", p->dst->qmp_path, NULL);
}

/* The memory stream's limit (migrate-set-parameters max-bandwidth). */
static gint64
max_bandwidth (Vm *vm)
{
  g_autoptr(JsonNode) ret = vm_qmp (vm, "query-migrate-parameters", NULL);

  return json_object_get_int_member (json_node_get_object (ret), "max-bandwidth");
}

static GSubprocess *
spawn_held (Pair *p, const char *op_id)
{
  return blkmig_spawn ("migrate", "--hold", "--source", p->src->qmp_path, "--dest",
                       p->dst->qmp_path, "--speed", "4194304", "--buf-size", "1048576",
                       op_id != NULL ? "--op-id" : NULL, op_id, NULL);
}

static void
wait_until_held (const char *id)
{
  for (int i = 0; i < 600; i++)
    {
      g_autoptr(JsonObject) status = ctl_status (id);

      if (qmp_member_bool (status, "held", FALSE))
        {
          g_assert_cmpstr (qmp_member_string (status, "phase"), ==, "held");
          return;
        }
      g_usleep (100 * 1000);
    }
  g_error ("operation %s was never held", id);
}

/* Switchover is refused until every mirror is READY; set-speed 0 lets the copy
 * finish; held, the guest writes on for a while and nothing switches; then
 * switchover gives what a migration without --hold gives. */
static void
test_hold_switchover (Pair *p, gconstpointer data)
{
  g_autoptr(GSubprocess) proc = spawn_held (p, NULL);
  g_autofree char *id = rig_wait_for_control (p->rig);
  g_autofree char *err = NULL;
  g_autofree char *out = NULL;
  g_autofree char *src_status = NULL;
  g_autofree char *dst_status = NULL;
  gint64 memory_limit;

  wait_for_disk_state (id, "copying");
  g_assert_cmpint (blkmig_run (NULL, &err, "ctl", id, "switchover", NULL), ==, 10);
  g_assert_nonnull (strstr (err, "blkmig ctl: switchover: not held yet (phase mirror, 0 of 1 "
                                 "mirrors ready): switchover is possible once status says held\n"));
  set_speed (id, 0);
  wait_until_held (id);
  for (guint i = 0; i < 24; i++)  /* the guest writes on while held */
    {
      g_autofree char *offset = g_strdup_printf ("%uM", (i * 5) % 31);

      vm_guest_write (p->src, "vda", 0x30 + i, offset, "1M");
      g_usleep (50 * 1000);
    }
  src_status = vm_status (p->src);
  dst_status = vm_status (p->dst);
  g_assert_cmpstr (src_status, ==, "running");
  g_assert_cmpstr (dst_status, ==, "inmigrate");
  g_assert_cmpint (proc_get_state (proc), !=, 'Z');
  memory_limit = max_bandwidth (p->src);
  set_speed (id, 100 * MIB);  /* live: the memory stream's limit too */
  g_assert_cmpint (max_bandwidth (p->src), ==, 100 * MIB);
  g_assert_cmpint (blkmig_run (NULL, NULL, "ctl", id, "switchover", NULL), ==, 0);
  g_assert_cmpint (blkmig_wait (proc, &out, &err), ==, 0);
  g_assert_nonnull (strstr (err, "; holding until `blkmig ctl "));
  g_assert_cmpint (max_bandwidth (p->src), ==, memory_limit);  /* given back at the end */
  g_free (dst_status);
  dst_status = vm_status (p->dst);
  g_assert_cmpstr (dst_status, ==, "running");
  g_assert_true (img_identical (p->src_img, p->dst_img));
  g_assert_true (img_has_pattern (p->dst_img, "raw", 0x30 + 23, "22M", "1M"));
  g_assert_cmpuint (vm_count_jobs (p->src), ==, 0);
  g_assert_cmpuint (vm_count_exports (p->dst), ==, 0);
  g_assert_cmpuint (rig_count_journals (p->rig), ==, 0);
  g_assert_cmpuint (count_control_sockets (p), ==, 0);
}

static void
test_hold_cancel (Pair *p, gconstpointer data)
{
  g_autoptr(GSubprocess) proc = spawn_held (p, "held-vm");
  g_autofree char *id = rig_wait_for_control (p->rig);
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;
  g_autofree char *dst_status = NULL;

  g_assert_cmpstr (id, ==, "held-vm");
  set_speed (id, 0);
  wait_until_held (id);
  /* the id is taken while it runs */
  g_assert_cmpint (migrate_copy (p, "held-vm", NULL, &err), ==, 10);
  g_assert_true (g_str_has_prefix (err, "blkmig migrate: operation held-vm is already running "
                                        "(its control socket "));
  g_clear_pointer (&err, g_free);
  g_assert_cmpint (blkmig_run (&out, NULL, "recover", "--all", NULL), ==, 0);
  g_assert_nonnull (strstr (out, " (migrate) is running (its control socket answers): not "
                                 "touched\n"));
  g_clear_pointer (&out, g_free);
  g_assert_cmpuint (vm_count_jobs (p->src), ==, 1);  /* still held */
  g_assert_cmpint (blkmig_run (&out, NULL, "status", "held-vm", NULL), ==, 0);
  g_assert_true (g_str_has_prefix (out, "held-vm: migrate, phase held (held: waiting for "
                                        "switchover), speed 0 B/s per disk\n  vda: 32 MiB of "
                                        "32 MiB (100%), ready\n"));
  g_assert_cmpint (blkmig_run (NULL, NULL, "ctl", id, "cancel", NULL), ==, 0);
  g_assert_cmpint (blkmig_wait (proc, NULL, &err), ==, 130);
  g_assert_nonnull (strstr (err, "blkmig migrate: interrupted by a signal; what it had started "
                                 "was undone\n"));
  dst_status = vm_status (p->dst);
  g_assert_cmpstr (dst_status, ==, "inmigrate");  /* never switched */
  assert_nothing_left (p);
}

static GSocketConnection *
ctl_connect_raw (Pair *p, const char *id)
{
  g_autofree char *name = g_strdup_printf ("state/%s.ctl", id);
  g_autofree char *path = rig_path (p->rig, name);
  g_autoptr(GSocketClient) client = g_socket_client_new ();
  g_autoptr(GSocketAddress) addr = g_unix_socket_address_new (path);
  g_autoptr(GError) error = NULL;
  GSocketConnection *conn = g_socket_client_connect (client, G_SOCKET_CONNECTABLE (addr), NULL,
                                                     &error);

  g_assert_no_error (error);
  return conn;
}

/* Sends @len bytes of @request, returns what comes back until the end. */
static char *
ctl_raw (Pair *p, const char *id, const char *request, gsize len)
{
  g_autoptr(GSocketConnection) conn = ctl_connect_raw (p, id);
  g_autoptr(GError) error = NULL;
  char buf[8192];
  gsize got = 0;

  g_output_stream_write_all (g_io_stream_get_output_stream (G_IO_STREAM (conn)), request, len,
                             NULL, NULL, &error);
  g_assert_no_error (error);
  g_input_stream_read_all (g_io_stream_get_input_stream (G_IO_STREAM (conn)), buf,
                           sizeof buf - 1, &got, NULL, &error);
  g_assert_no_error (error);
  buf[got] = '\0';
  return g_strdup (buf);
}

static void
assert_raw_reply (Pair *p, const char *id, const char *request, gsize len, const char *want)
{
  g_autofree char *reply = ctl_raw (p, id, request, len);

  g_test_message ("%.60s... -> %s", request, reply);
  g_assert_cmpstr (reply, ==, want);
}

/* What a hostile or broken client sends changes nothing: each gets an error, silent
 * ones are dropped after 5 s, and the held operation switches over as asked. */
static void
test_hostile_requests (Pair *p, gconstpointer data)
{
  g_autoptr(GSubprocess) proc = spawn_held (p, NULL);
  g_autofree char *id = rig_wait_for_control (p->rig);
  g_autofree char *big = g_strnfill (5000, 'x');
  g_autofree char *err = NULL;
  g_autoptr(GPtrArray) silent = g_ptr_array_new_with_free_func (g_object_unref);
  g_autoptr(GSocketConnection) ninth = NULL;
  char byte;

  set_speed (id, 0);
  wait_until_held (id);
  assert_raw_reply (p, id, big, 5000, "{\"ok\":false,\"error\":\"request longer than 4096 bytes\","
                                      "\"exit-code\":2}\n");
  assert_raw_reply (p, id, "}{\n", 3, "{\"ok\":false,\"error\":\"a request is one JSON object "
                                      "on one line\",\"exit-code\":2}\n");
  assert_raw_reply (p, id, "[1]\n", 4, "{\"ok\":false,\"error\":\"a request is one JSON object "
                                       "on one line\",\"exit-code\":2}\n");
  assert_raw_reply (p, id, "{\"command\":\"set-speed\",\"bytes\":-5}\n", 35,
                    "{\"ok\":false,\"error\":\"set-speed needs bytes per second, a whole number "
                    ">= 0\",\"exit-code\":2}\n");
  assert_raw_reply (p, id, "{\"command\":\"set-speed\",\"bytes\":\"1\"}\n", 36,
                    "{\"ok\":false,\"error\":\"set-speed needs bytes per second, a whole number "
                    ">= 0\",\"exit-code\":2}\n");
  g_assert_cmpint (blkmig_run (NULL, &err, "ctl", id, "\033[2J", NULL), ==, 2);
  g_assert_nonnull (strstr (err, "blkmig ctl: \\x1b[2J: unknown control command '\\x1b[2J' "));
  for (guint i = 0; i < 8; i++)  /* silent clients take every slot ... */
    g_ptr_array_add (silent, ctl_connect_raw (p, id));
  g_usleep (300 * 1000);
  ninth = ctl_connect_raw (p, id);  /* ... the next one is closed at once */
  g_assert_cmpint (g_input_stream_read (g_io_stream_get_input_stream (G_IO_STREAM (ninth)),
                                        &byte, 1, NULL, NULL), ==, 0);
  g_usleep (5500 * 1000);  /* the silent ones are dropped */
  g_assert_cmpint (blkmig_run (NULL, NULL, "ctl", id, "switchover", NULL), ==, 0);
  g_assert_cmpint (blkmig_wait (proc, NULL, NULL), ==, 0);
  g_assert_true (img_identical (p->src_img, p->dst_img));
  g_assert_cmpuint (count_control_sockets (p), ==, 0);
}


/* The same --op-id again after a success: nothing to do, and it says so; the id
 * is not another command's; an id that could name another file is refused. */
static void
test_op_id_rerun (Pair *p, gconstpointer data)
{
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;
  g_autofree char *done = rig_path (p->rig, "state/evac-vm1.done");
  g_autofree char *target = rig_path (p->rig, "moved.raw");

  g_assert_cmpint (migrate_copy (p, "evac-vm1", &out, NULL), ==, 0);
  g_assert_true (g_str_has_prefix (out, "blkmig: copied 1 disk"));
  g_assert_true (g_file_test (done, G_FILE_TEST_IS_REGULAR));
  g_assert_true (img_identical (p->src_img, p->dst_img));
  vm_guest_write (p->src, "vda", 0x42, "0", "1M");  /* a second copy would differ */
  g_clear_pointer (&out, g_free);
  g_assert_cmpint (migrate_copy (p, "evac-vm1", &out, NULL), ==, 0);
  g_assert_cmpstr (out, ==, "blkmig: operation evac-vm1 had already succeeded (copied): "
                            "nothing to do\n");
  g_assert_false (img_identical (p->src_img, p->dst_img));
  g_assert_cmpint (blkmig_run (NULL, &err, "move", "--op-id", "evac-vm1", "--qmp",
                               p->src->qmp_path, "--disk", "vda", "--to", target, NULL), ==, 2);
  g_assert_cmpstr (err, ==, "blkmig move: operation id evac-vm1 was already used by migrate\n");
  g_clear_pointer (&err, g_free);
  g_assert_cmpint (migrate_copy (p, "../evil", NULL, &err), ==, 2);
  g_assert_cmpstr (err, ==, "blkmig migrate: operation id '../evil' is not valid: 1 to 40 "
                            "letters, digits, '.', '_' or '-', not starting with '.' or '-'\n");
  g_assert_cmpuint (count_control_sockets (p), ==, 0);
  g_assert_cmpuint (rig_count_journals (p->rig), ==, 0);
}

/* Killed at @step, the same --op-id again recovers what the kill left and then
 * goes on (or, past the copy, reports it done). */
static void
op_id_after_kill (Pair *p, const char *step, const char *want_err, const char *want_out)
{
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;

  g_setenv ("BLKMIG_TEST_KILL_AT", step, TRUE);
  g_assert_cmpint (migrate_copy (p, "vm2", NULL, NULL), ==, 128 + 9);
  g_unsetenv ("BLKMIG_TEST_KILL_AT");
  g_assert_cmpuint (rig_count_journals (p->rig), ==, 1);
  g_assert_cmpuint (count_control_sockets (p), ==, 1);  /* a dead one */
  g_assert_cmpint (blkmig_run (&out, NULL, "status", "vm2", NULL), ==, 0);
  g_assert_true (g_str_has_prefix (out, "vm2: interrupted, migrate at step "));
  g_assert_nonnull (strstr (out, "; run blkmig recover --id "));
  g_clear_pointer (&out, g_free);
  g_assert_cmpint (migrate_copy (p, "vm2", &out, &err), ==, 0);
  g_test_message ("after a kill at %s: %s%s", step, err, out);
  g_assert_nonnull (strstr (err, want_err));
  g_assert_nonnull (strstr (out, want_out));
  g_assert_true (img_identical (p->src_img, p->dst_img));
  g_assert_cmpuint (vm_count_jobs (p->src), ==, 0);
  g_assert_cmpuint (vm_count_blkmig_nodes (p->src), ==, 0);
  g_assert_cmpuint (vm_count_exports (p->dst), ==, 0);
  g_assert_cmpuint (rig_count_journals (p->rig), ==, 0);
  g_assert_cmpuint (count_control_sockets (p), ==, 0);
  g_clear_pointer (&out, g_free);
  g_assert_cmpint (blkmig_run (&out, NULL, "status", NULL), ==, 0);
  g_assert_true (g_str_has_prefix (out, "vm2: succeeded, migrate "));
}

static void
test_op_id_after_kill (Pair *p, gconstpointer data)
{
  op_id_after_kill (p, "mirror", "rolled back: the source runs on its own disks\n",
                    "blkmig: copied 1 disk");
}

static void
test_op_id_after_kill_done (Pair *p, gconstpointer data)
{
  op_id_after_kill (p, "copied", "had completed: the destination was finished\n",
                    "blkmig: operation vm2 had already succeeded (completed): nothing to do\n");
}

/* The phases with --op-id: perform again gives the same result cookie (finish
 * needs it) without migrating again; a cookie of another operation is refused. */
static void
test_op_id_phases (Pair *p, gconstpointer data)
{
  g_autofree char *c1 = rig_path (p->rig, "source.cookie");
  g_autofree char *c2 = rig_path (p->rig, "dest.cookie");
  g_autofree char *c2again = rig_path (p->rig, "dest-again.cookie");
  g_autofree char *c3 = rig_path (p->rig, "result.cookie");
  g_autofree char *c3again = rig_path (p->rig, "result-again.cookie");
  g_autofree char *sock = rig_path (p->rig, "nbd.sock");
  g_autofree char *listen = g_strdup_printf ("unix:%s", sock);
  g_autofree char *first = NULL;
  g_autofree char *again = NULL;
  g_autofree char *err = NULL;
  g_autofree char *dst_status = NULL;

  g_assert_cmpint (blkmig_run (NULL, NULL, "begin", "--op-id", "ph1", "--qmp", p->src->qmp_path,
                               "-o", c1, NULL), ==, 0);
  g_assert_cmpint (blkmig_run (NULL, NULL, "prepare", "--qmp", p->dst->qmp_path, "--listen",
                               listen, "-c", c1, "-o", c2, NULL), ==, 0);
  /* prepare again (a lost reply): the same answer, the exports untouched */
  g_assert_cmpint (blkmig_run (NULL, &err, "prepare", "--qmp", p->dst->qmp_path, "--listen",
                               listen, "-c", c1, "-o", c2again, NULL), ==, 0);
  g_assert_nonnull (strstr (err, " is already prepared: its answer again\n"));
  g_clear_pointer (&err, g_free);
  g_assert_true (g_file_get_contents (c2, &first, NULL, NULL));
  g_assert_true (g_file_get_contents (c2again, &again, NULL, NULL));
  g_assert_cmpstr (first, ==, again);
  g_clear_pointer (&first, g_free);
  g_clear_pointer (&again, g_free);
  g_assert_cmpuint (vm_count_exports (p->dst), ==, 1);
  /* perform killed while it mirrors, then again: recovered, then done */
  g_setenv ("BLKMIG_TEST_KILL_AT", "mirror", TRUE);
  g_assert_cmpint (blkmig_run (NULL, NULL, "perform", "--op-id", "ph1", "--local-destination",
                               "--qmp", p->src->qmp_path, "-c", c2, "-o", c3, NULL), ==, 128 + 9);
  g_unsetenv ("BLKMIG_TEST_KILL_AT");
  g_assert_cmpint (blkmig_run (NULL, &err, "perform", "--op-id", "ph2", "--local-destination",
                               "--qmp", p->src->qmp_path, "-c", c2, "-o", c3, NULL), ==, 3);
  g_assert_nonnull (strstr (err, ", not of operation ph2 (give begin the same --op-id)\n"));
  g_clear_pointer (&err, g_free);
  g_assert_cmpint (blkmig_run (NULL, NULL, "perform", "--op-id", "ph1", "--local-destination",
                               "--qmp", p->src->qmp_path, "-c", c2, "-o", c3, NULL), ==, 0);
  g_assert_cmpint (blkmig_run (NULL, &err, "perform", "--op-id", "ph1", "--local-destination",
                               "--qmp", p->src->qmp_path, "-c", c2, "-o", c3again, NULL), ==, 0);
  g_assert_cmpstr (err, ==, "blkmig: operation ph1 had already succeeded (completed): "
                            "nothing to do\n");
  g_assert_true (g_file_get_contents (c3, &first, NULL, NULL));
  g_assert_true (g_file_get_contents (c3again, &again, NULL, NULL));
  g_assert_cmpstr (first, ==, again);
  g_assert_cmpint (blkmig_run (NULL, NULL, "finish", "--qmp", p->dst->qmp_path, "-c", c3again,
                               NULL), ==, 0);
  g_assert_cmpint (blkmig_run (NULL, NULL, "finish", "--qmp", p->dst->qmp_path, "-c", c3again,
                               NULL), ==, 0);  /* again: nothing left to do */
  dst_status = vm_status (p->dst);
  g_assert_cmpstr (dst_status, ==, "running");
  g_assert_true (img_identical (p->src_img, p->dst_img));
  g_assert_cmpuint (rig_count_journals (p->rig), ==, 0);
  g_assert_cmpuint (count_control_sockets (p), ==, 0);
}

/* blkmig killed while it holds READY mirrors: status tells from the journal and
 * QEMU what is left (the mirror still runs) and how to clean it. */
static void
test_status_after_kill (Pair *p, gconstpointer data)
{
  g_autoptr(GSubprocess) proc = spawn_held (p, "killed-vm");
  g_autofree char *id = rig_wait_for_control (p->rig);
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;
  g_autoptr(JsonNode) root = NULL;
  JsonObject *status;
  JsonArray *jobs;

  set_speed (id, 0);
  wait_until_held (id);
  g_subprocess_force_exit (proc);
  blkmig_wait (proc, NULL, NULL);
  g_assert_cmpint (blkmig_run (&out, NULL, "status", "killed-vm", "--json", NULL), ==, 0);
  root = json_from_string (out, NULL);
  status = json_node_get_object (root);
  g_assert_cmpstr (qmp_member_string (status, "state"), ==, "interrupted");
  g_assert_cmpstr (qmp_member_string (status, "command"), ==, "migrate");
  g_assert_cmpstr (qmp_member_string (status, "step"), ==, "mirror");
  g_assert_true (qmp_member_bool (status, "qemu-reachable", FALSE));
  jobs = json_object_get_array_member (status, "jobs");
  g_assert_cmpuint (json_array_get_length (jobs), ==, 1);
  g_assert_cmpstr (qmp_member_string (json_array_get_object_element (jobs, 0), "status"), ==,
                   "ready");
  g_assert_cmpuint (vm_count_jobs (p->src), ==, 1);
  g_assert_cmpint (blkmig_run (NULL, NULL, "recover", "--id",
                               qmp_member_string (status, "migration-id"), NULL), ==, 0);
  assert_nothing_left_but_socket (p);
  g_assert_cmpint (blkmig_run (NULL, &err, "status", "killed-vm", NULL), ==, 1);
  g_assert_cmpstr (err, ==, "blkmig status: no operation killed-vm: not running, no journal, no "
                            "record of a success\n");
}

/* Bytes per second the source mirrors of @a and @b copy together, over @ms. */
static double
measure_combined (Vm *a, Vm *b, guint ms)
{
  gint64 before = job_offset (a) + job_offset (b), t0 = g_get_monotonic_time ();

  g_usleep (ms * 1000);
  return (job_offset (a) + job_offset (b) - before) / ((g_get_monotonic_time () - t0) / 1e6);
}

static GSubprocess *
spawn_budgeted (Pair *p, const char *op_id)
{
  return blkmig_spawn ("migrate", "--mode", "copy", "--op-id", op_id, "--host-bandwidth",
                       "16777216", "--buf-size", "1048576", "--source", p->src->qmp_path,
                       "--dest", p->dst->qmp_path, NULL);
}

static guint
count_state_files (Pair *p, const char *suffix)
{
  g_autofree char *state = rig_path (p->rig, "state");
  g_autoptr(GDir) dir = g_dir_open (state, 0, NULL);
  const char *name;
  guint n = 0;

  while (dir != NULL && (name = g_dir_read_name (dir)) != NULL)
    n += g_str_has_suffix (name, suffix);
  return n;
}

/* Two operations share one --host-bandwidth: together they stay within 10 % of
 * it, and the one left speeds up to all of it when the other ends. */
static void
test_host_bandwidth (Pair *p, gconstpointer data)
{
  Pair other = { 0 };
  g_autoptr(GSubprocess) a = NULL;
  g_autoptr(GSubprocess) b = NULL;
  double both, alone;

  pair_setup (&other, G_STRINGIFY (DISK_MIB));  /* its rig's state directory is now both's */
  a = spawn_budgeted (p, "bw-a");
  b = spawn_budgeted (&other, "bw-b");
  wait_for_disk_state ("bw-a", "copying");
  wait_for_disk_state ("bw-b", "copying");
  g_usleep (1500 * 1000);  /* a budget tick (1 s) after both mirrors run */
  both = measure_combined (p->src, other.src, 2000);
  g_assert_cmpint (blkmig_run (NULL, NULL, "ctl", "bw-a", "cancel", NULL), ==, 0);
  g_assert_cmpint (blkmig_wait (a, NULL, NULL), ==, 130);
  g_usleep (1500 * 1000);
  alone = measure_rate (other.src, 2000);
  g_test_message ("MiB/s: both %.1f (budget 16), then the one left %.1f", both / MIB,
                  alone / MIB);
  g_assert_cmpfloat (both, >, 0.9 * 16 * MIB);
  g_assert_cmpfloat (both, <, 1.1 * 16 * MIB);
  g_assert_cmpfloat (alone, >, 0.9 * 16 * MIB);
  g_assert_cmpfloat (alone, <, 1.1 * 16 * MIB);
  g_assert_cmpint (blkmig_run (NULL, NULL, "ctl", "bw-b", "cancel", NULL), ==, 0);
  g_assert_cmpint (blkmig_wait (b, NULL, NULL), ==, 130);
  assert_nothing_left (p);
  assert_nothing_left (&other);
  g_assert_cmpuint (count_state_files (&other, ".bw"), ==, 0);
  pair_teardown (&other, NULL);
}

/* Until operation @id (maybe not listening yet) reports phase @want. */
static void
wait_for_phase (const char *id, const char *want)
{
  g_autofree char *needle = g_strdup_printf ("\"phase\":\"%s\"", want);

  for (int i = 0; i < 600; i++)
    {
      g_autofree char *out = NULL;

      if (blkmig_run (&out, NULL, "ctl", id, "status", "--json", NULL) == 0
          && strstr (out, needle) != NULL)
        return;
      g_usleep (100 * 1000);
    }
  g_error ("operation %s never reached phase %s", id, want);
}

/* --max-parallel 1: while one operation runs (held) the next waits, queued; one
 * cancelled while queued leaves nothing; one queued runs once the first is done. */
static void
test_max_parallel (Pair *p, gconstpointer data)
{
  Pair other = { 0 };
  g_autoptr(GSubprocess) first = NULL;
  g_autoptr(GSubprocess) cancelled = NULL;
  g_autoptr(GSubprocess) next = NULL;
  g_autofree char *err = NULL;
  g_autofree char *out = NULL;

  pair_setup (&other, NULL);
  first = blkmig_spawn ("migrate", "--hold", "--max-parallel", "1", "--op-id", "mp-1",
                        "--source", p->src->qmp_path, "--dest", p->dst->qmp_path, NULL);
  wait_until_held ("mp-1");
  cancelled = blkmig_spawn ("migrate", "--mode", "copy", "--max-parallel", "1", "--op-id", "mp-2",
                            "--source", other.src->qmp_path, "--dest", other.dst->qmp_path, NULL);
  wait_for_phase ("mp-2", "queued");
  g_assert_cmpuint (vm_count_exports (other.dst), ==, 0);  /* nothing started */
  g_assert_cmpint (blkmig_run (NULL, NULL, "ctl", "mp-2", "cancel", NULL), ==, 0);
  g_assert_cmpint (blkmig_wait (cancelled, NULL, &err), ==, 130);
  g_assert_cmpuint (vm_count_jobs (other.src), ==, 0);   /* the state directory holds mp-1's */
  g_assert_cmpuint (vm_count_blkmig_nodes (other.src), ==, 0);
  g_assert_cmpuint (vm_count_exports (other.dst), ==, 0);
  g_assert_cmpint (blkmig_run (NULL, NULL, "status", "mp-2", NULL), ==, 1);  /* no trace */
  next = blkmig_spawn ("migrate", "--json", "--mode", "copy", "--max-parallel", "1", "--op-id",
                       "mp-3", "--source", other.src->qmp_path, "--dest", other.dst->qmp_path,
                       NULL);
  wait_for_phase ("mp-3", "queued");
  g_assert_cmpint (blkmig_run (NULL, NULL, "ctl", "mp-1", "switchover", NULL), ==, 0);
  g_assert_cmpint (blkmig_wait (first, NULL, NULL), ==, 0);
  g_assert_cmpint (blkmig_wait (next, &out, NULL), ==, 0);
  g_assert_nonnull (strstr (out, "\"event\":\"phase\",\"phase\":\"queued\",\"max-parallel\":1}\n"
                                 "{\"v\":1,\"ms\":"));
  g_assert_true (strstr (out, "\"phase\":\"queued\"") < strstr (out, "\"phase\":\"begin\""));
  g_assert_true (img_identical (other.src_img, other.dst_img));
  g_assert_true (img_identical (p->src_img, p->dst_img));
  pair_teardown (&other, NULL);
}

/* The only file in @dir (the target --create-dir made), or NULL. */
static char *
only_file (const char *dir)
{
  g_autoptr(GDir) d = g_dir_open (dir, 0, NULL);
  const char *name = d != NULL ? g_dir_read_name (d) : NULL;

  if (name == NULL || g_dir_read_name (d) != NULL)
    return NULL;
  return g_build_filename (dir, name, NULL);
}

/* --keep-target: a cancelled copy keeps the target it created, listed in ID.kept;
 * everything else is rolled back. */
static void
test_keep_target (Pair *p, gconstpointer data)
{
  g_autofree char *create_dir = rig_path (p->rig, "created");
  g_autofree char *target = NULL;
  g_autofree char *kept = NULL;
  g_autofree char *err = NULL;
  g_autoptr(GSubprocess) proc = NULL;

  vm_stop (p->dst);
  p->dst = vm_start (p->rig, "dst2", NULL, "paused");  /* no disks: copy creates them */
  g_assert_cmpint (g_mkdir (create_dir, 0700), ==, 0);
  proc = blkmig_spawn ("migrate", "--mode", "copy", "--create-dir", create_dir, "--keep-target",
                       "--op-id", "keep-1", "--speed", "1048576", "--buf-size", "262144",
                       "--source", p->src->qmp_path, "--dest", p->dst->qmp_path, NULL);
  wait_for_disk_state ("keep-1", "copying");
  g_assert_cmpint (blkmig_run (NULL, NULL, "ctl", "keep-1", "cancel", NULL), ==, 0);
  g_assert_cmpint (blkmig_wait (proc, NULL, &err), ==, 130);
  target = only_file (create_dir);
  g_assert_nonnull (target);
  g_assert_nonnull (strstr (err, "blkmig: kept the partly copied target "));
  g_assert_cmpuint (count_state_files (p, ".kept"), ==, 1);
  {
    g_autofree char *state = rig_path (p->rig, "state");
    g_autofree char *id = NULL;
    g_autofree char *name = NULL;

    id = g_compute_checksum_for_string (G_CHECKSUM_SHA256, "blkmig operation id:keep-1", -1);
    name = g_strdup_printf ("%s/%.32s.kept", state, id);
    g_assert_true (g_file_get_contents (name, &kept, NULL, NULL));
  }
  g_assert_nonnull (strstr (kept, target));
  g_assert_cmpuint (vm_count_jobs (p->src), ==, 0);
  g_assert_cmpuint (vm_count_blkmig_nodes (p->src), ==, 0);
  g_assert_cmpuint (rig_count_journals (p->rig), ==, 0);
}

/* gc after blkmig and its destination QEMU were killed (SIGKILL) mid-copy, with an
 * orphan node of a lost journal too: all of it goes, nothing of a live (held)
 * operation does, and that one still switches over. */
static void
test_gc (Pair *p, gconstpointer data)
{
  Pair other = { 0 };
  g_autoptr(GSubprocess) live = NULL;
  g_autoptr(GSubprocess) dead = NULL;
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;
  g_autofree char *dst_status = NULL;
  int status;

  pair_setup (&other, NULL);  /* its state directory is both's */
  live = spawn_held (p, "gc-live");
  dead = spawn_held (&other, "gc-dead");
  set_speed ("gc-live", 0);
  set_speed ("gc-dead", 0);
  wait_until_held ("gc-live");
  wait_until_held ("gc-dead");
  g_subprocess_force_exit (dead);
  blkmig_wait (dead, NULL, NULL);
  g_subprocess_force_exit (other.dst->proc);
  g_subprocess_wait (other.dst->proc, NULL, NULL);
  {
    g_autoptr(JsonNode) ret = vm_qmp (other.src, "blockdev-add", "{\"driver\":\"null-co\","
                                      "\"node-name\":\"blkmigdeadbeefx0\"}");
  }
  status = blkmig_run (&out, &err, "gc", "--qmp", other.src->qmp_path, "--qmp",
                       p->src->qmp_path, NULL);
  g_test_message ("gc: %s%s", out, err);
  g_assert_cmpint (status, ==, 0);
  g_assert_nonnull (strstr (out, "gc: removed the dead control socket "));
  g_assert_nonnull (strstr (out, "recover: "));
  g_assert_nonnull (strstr (out, "gc: removed the jobs, nodes and exports of operation deadbeef "
                                 "in "));
  /* the live operation holds its QEMUs' monitors: skipped, not waited for */
  g_assert_nonnull (strstr (out, "src.qmp: qemu: no QMP greeting within 3000 ms (a running "
                                 "blkmig or another client may hold its monitor)\n"));
  g_assert_cmpuint (vm_count_jobs (other.src), ==, 0);
  g_assert_cmpuint (vm_count_blkmig_nodes (other.src), ==, 0);
  g_assert_cmpint (blkmig_run (NULL, NULL, "status", "gc-dead", NULL), ==, 1);
  /* the live one is untouched and finishes */
  g_assert_cmpuint (vm_count_jobs (p->src), ==, 1);
  g_assert_cmpuint (vm_count_exports (p->dst), ==, 1);
  g_clear_pointer (&out, g_free);
  g_assert_cmpint (blkmig_run (&out, NULL, "gc", NULL), ==, 0);
  g_assert_cmpstr (out, ==, "gc: nothing to remove\n");
  g_assert_cmpint (blkmig_run (NULL, NULL, "ctl", "gc-live", "switchover", NULL), ==, 0);
  g_assert_cmpint (blkmig_wait (live, NULL, NULL), ==, 0);
  dst_status = vm_status (p->dst);
  g_assert_cmpstr (dst_status, ==, "running");
  g_assert_true (img_identical (p->src_img, p->dst_img));
  g_assert_cmpuint (count_control_sockets (p), ==, 0);
  g_assert_cmpuint (rig_count_journals (other.rig), ==, 0);
  pair_teardown (&other, NULL);
}

/* move --op-id: again after a success says so; again after a kill at the mirror
 * step recovers (the old image stays the guest's) and moves. */
static void
test_op_id_move (Pair *p, gconstpointer data)
{
  g_autofree char *target = rig_path (p->rig, "moved.raw");
  g_autofree char *again = rig_path (p->rig, "moved-again.raw");
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;
  g_autofree char *file = NULL;

  g_setenv ("BLKMIG_TEST_KILL_AT", "mirror", TRUE);
  g_assert_cmpint (blkmig_run (NULL, NULL, "move", "--op-id", "mv1", "--qmp", p->src->qmp_path,
                               "--disk", "vda", "--to", target, NULL), ==, 128 + 9);
  g_unsetenv ("BLKMIG_TEST_KILL_AT");
  g_assert_cmpint (blkmig_run (&out, &err, "move", "--op-id", "mv1", "--qmp", p->src->qmp_path,
                               "--disk", "vda", "--to", target, NULL), ==, 0);
  g_assert_nonnull (strstr (err, "rolled back: the guest runs on its old image"));
  g_assert_null (strstr (out, "recover: "));  /* stdout carries results only */
  file = vm_disk_file (p->src, "vda");
  g_assert_cmpstr (file, ==, target);
  g_clear_pointer (&out, g_free);
  g_assert_cmpint (blkmig_run (&out, NULL, "move", "--op-id", "mv1", "--qmp", p->src->qmp_path,
                               "--disk", "vda", "--to", again, NULL), ==, 0);
  g_assert_cmpstr (out, ==, "blkmig: operation mv1 had already succeeded (moved): nothing to do\n");
  g_assert_false (g_file_test (again, G_FILE_TEST_EXISTS));
  g_assert_cmpuint (vm_count_jobs (p->src), ==, 0);
  g_assert_cmpuint (rig_count_journals (p->rig), ==, 0);
  g_assert_cmpuint (count_control_sockets (p), ==, 0);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add ("/control/set-speed-and-cancel", Pair, G_STRINGIFY (DISK_MIB), pair_setup,
              test_set_speed, pair_teardown);
  g_test_add ("/control/copy-mode-switch", Pair, NULL, pair_setup, test_copy_mode_switch,
              pair_teardown);
  g_test_add ("/control/hold-switchover", Pair, NULL, pair_setup, test_hold_switchover,
              pair_teardown);
  g_test_add ("/control/hold-cancel", Pair, NULL, pair_setup, test_hold_cancel, pair_teardown);
  g_test_add ("/control/op-id-rerun", Pair, NULL, pair_setup, test_op_id_rerun, pair_teardown);
  g_test_add ("/control/op-id-after-kill", Pair, NULL, pair_setup, test_op_id_after_kill,
              pair_teardown);
  g_test_add ("/control/op-id-after-kill-done", Pair, NULL, pair_setup,
              test_op_id_after_kill_done, pair_teardown);
  g_test_add ("/control/op-id-move", Pair, NULL, pair_setup, test_op_id_move, pair_teardown);
  g_test_add ("/control/op-id-phases", Pair, NULL, pair_setup, test_op_id_phases, pair_teardown);
  g_test_add ("/control/status-after-kill", Pair, NULL, pair_setup, test_status_after_kill,
              pair_teardown);
  g_test_add ("/control/host-bandwidth", Pair, G_STRINGIFY (DISK_MIB), pair_setup,
              test_host_bandwidth, pair_teardown);
  g_test_add ("/control/max-parallel", Pair, NULL, pair_setup, test_max_parallel, pair_teardown);
  g_test_add ("/control/keep-target", Pair, NULL, pair_setup, test_keep_target, pair_teardown);
  g_test_add ("/control/gc", Pair, NULL, pair_setup, test_gc, pair_teardown);
  g_test_add ("/control/hostile-requests", Pair, NULL, pair_setup, test_hostile_requests,
              pair_teardown);
  return g_test_run ();
}
