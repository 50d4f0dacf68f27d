/* Integration tests of nbd_copy_layer(): a chain's layers, raw, errors, cancel, progress. */
#include <signal.h>
#include <sys/prctl.h>
#include <string.h>
#include <unistd.h>

#include <json-glib/json-glib.h>

#include "tests/integration/harness.h"

#include "common/error.h"
#include "nbd/layer-copy.h"

#define KiB ((gint64) 1 << 10)
#define MiB ((gint64) 1 << 20)
#define CHUNK (64 * KiB)

/* ---- images -------------------------------------------------------------- */

/* Runs a tool that must succeed; returns its stdout. */
static char *
run_tool (const char *const *argv)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *err = NULL;
  char *out = NULL;
  int status = -1;

  g_assert_true (g_spawn_sync (NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
                               &out, &err, &status, &error));
  g_assert_no_error (error);
  if (!g_spawn_check_wait_status (status, NULL))
    g_error ("%s failed: %s", argv[0], err);
  return out;
}

/* qemu-io -c CMD on a qcow2 image. */
static void
qemu_io (const char *path, const char *cmd)
{
  const char *argv[] = { "qemu-io", "-f", "qcow2", "-c", cmd, path, NULL };
  g_free (run_tool (argv));
}

static void
qcow2_create (const char *path, const char *size, const char *cluster, const char *backing)
{
  g_autofree char *opts = g_strdup_printf ("cluster_size=%s", cluster);
  const char *argv[] = { "qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, path, size,
                         backing != NULL ? "-b" : NULL, backing, "-F", "qcow2", NULL };
  g_free (run_tool (argv));
}

/* qemu-img map of @path with its backing chain. */
static JsonArray *
img_map (const char *path)
{
  const char *argv[] = { "qemu-img", "map", "-U", "--output=json", path, NULL };
  g_autofree char *out = run_tool (argv);
  g_autoptr(JsonNode) root = json_from_string (out, NULL);

  g_assert_nonnull (root);
  return json_array_ref (json_node_get_array (root));
}

/* The map entry of @path covering @offset. */
static JsonObject *
map_entry_at (JsonArray *map, gint64 offset)
{
  for (guint i = 0; i < json_array_get_length (map); i++)
    {
      JsonObject *e = json_array_get_object_element (map, i);
      gint64 start = json_object_get_int_member (e, "start");

      if (offset >= start && offset < start + json_object_get_int_member (e, "length"))
        return e;
    }
  g_assert_not_reached ();
}

/* Bytes of data @path holds itself (depth 0): exactly, and rounded out to 64 KiB chunks. */
static void
own_data (const char *path, gint64 *exact, gint64 *chunks)
{
  g_autoptr(JsonArray) map = img_map (path);
  g_autoptr(GHashTable) seen = g_hash_table_new (NULL, NULL);  /* chunk index + 1 */

  *exact = 0;
  for (guint i = 0; i < json_array_get_length (map); i++)
    {
      JsonObject *e = json_array_get_object_element (map, i);
      gint64 start = json_object_get_int_member (e, "start");
      gint64 end = start + json_object_get_int_member (e, "length");

      if (json_object_get_int_member (e, "depth") != 0 || !json_object_get_boolean_member (e, "data"))
        continue;
      *exact += end - start;
      for (gint64 c = start / CHUNK; c * CHUNK < end; c++)
        g_hash_table_add (seen, GSIZE_TO_POINTER ((gsize) c + 1));
    }
  *chunks = (gint64) g_hash_table_size (seen) * CHUNK;
}

/* ---- the destination: qemu-storage-daemon exporting a backing-less qcow2 ---- */

typedef struct {
  char *path;        /* the image */
  char *uri;
  GSubprocess *proc;
} Dest;

/* A failed assertion aborts the test: its daemons go with it. */
static void
die_with_test (gpointer user_data)
{
  prctl (PR_SET_PDEATHSIG, SIGKILL);
}

/* Starts qemu-storage-daemon with @args (NULL-terminated); returns once it has
 * written its pid file, which it does after making its nodes and exports. */
static GSubprocess *
qsd_start (Rig *rig, const char *name, const char *const *args)
{
  g_autofree char *pidfile = g_strdup_printf ("%s/%s.pid", rig->dir, name);
  g_autoptr(GPtrArray) argv = g_ptr_array_new ();
  g_autoptr(GSubprocessLauncher) launcher = g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_NONE);
  g_autoptr(GError) error = NULL;
  GSubprocess *proc;

  g_ptr_array_add (argv, (char *) "qemu-storage-daemon");
  for (guint i = 0; args[i] != NULL; i++)
    g_ptr_array_add (argv, (char *) args[i]);
  g_ptr_array_add (argv, (char *) "--pidfile");
  g_ptr_array_add (argv, pidfile);
  g_ptr_array_add (argv, NULL);
  g_subprocess_launcher_set_child_setup (launcher, die_with_test, NULL, NULL);
  proc = g_subprocess_launcher_spawnv (launcher, (const char *const *) argv->pdata, &error);
  g_assert_no_error (error);
  for (int i = 0; i < 1000 && !g_file_test (pidfile, G_FILE_TEST_EXISTS); i++)
    {
      g_assert_cmpint (proc_get_state (proc), !=, 0);
      g_usleep (10000);
    }
  g_assert_true (g_file_test (pidfile, G_FILE_TEST_EXISTS));
  return proc;
}

/* A fresh qcow2 of @size exported as "layer", opened with backing: null as blkmig's
 * destination opens its layer copies. */
static Dest *
dest_start (Rig *rig, const char *name, const char *size, gboolean writable)
{
  Dest *d = g_new0 (Dest, 1);
  g_autofree char *sock = g_strdup_printf ("%s/%s.sock", rig->dir, name);
  g_autofree char *node = NULL;
  g_autofree char *server = g_strdup_printf ("addr.type=unix,addr.path=%s", sock);
  const char *export = writable ? "type=nbd,id=e,node-name=d,name=layer,writable=on"
                                : "type=nbd,id=e,node-name=d,name=layer";

  d->path = rig_path (rig, name);
  qcow2_create (d->path, size, "65536", NULL);
  node = g_strdup_printf ("{\"driver\":\"qcow2\",\"node-name\":\"d\",\"backing\":null,"
                          "\"file\":{\"driver\":\"file\",\"filename\":\"%s\"}}", d->path);
  d->proc = qsd_start (rig, name, (const char *[]) { "--blockdev", node, "--nbd-server", server,
                                                      "--export", export, NULL });
  d->uri = g_strdup_printf ("nbd+unix:///layer?socket=%s", sock);
  return d;
}

/* Stops the daemon (flushing the image) and frees @d. */
static void
dest_stop (Dest *d)
{
  g_subprocess_send_signal (d->proc, SIGCONT);
  g_subprocess_send_signal (d->proc, SIGTERM);
  g_subprocess_wait (d->proc, NULL, NULL);
  g_object_unref (d->proc);
  g_free (d->path);
  g_free (d->uri);
  g_free (d);
}

/* ---- running a copy ------------------------------------------------------ */

/* What a test does to the copy once it has sent some bytes. */
typedef enum { ACT_NONE, ACT_CANCEL, ACT_KILL, ACT_STOP_THEN_CANCEL } Act;

typedef struct {
  LayerCopy copy;
  GCancellable *cancellable;
  gint64 speed;      /* the limit to copy with (0: none) */
  gint64 done, sent;
  gboolean ok;
  GError *error;
  gint finished;
  gint64 ended;      /* monotonic time the call returned */
} CopyRun;

/* In a thread of its own, as blkmig's GTask runs it. */
static gpointer
copy_thread (gpointer data)
{
  CopyRun *run = data;

  run->ok = nbd_copy_layer (&run->copy, run->cancellable, &run->error);
  run->ended = g_get_monotonic_time ();
  g_atomic_int_set (&run->finished, 1);
  return NULL;
}

/* Processes that are this process's children running @comm (zombies too). */
static guint
count_children (const char *comm)
{
  g_autoptr(GDir) proc = g_dir_open ("/proc", 0, NULL);
  g_autofree char *want = g_strdup_printf ("(%s) ", comm);
  const char *name;
  guint n = 0;

  while ((name = g_dir_read_name (proc)) != NULL)
    {
      g_autofree char *path = g_strdup_printf ("/proc/%s/stat", name);
      g_autofree char *stat = NULL;
      const char *p;

      if (!g_ascii_isdigit (*name) || !g_file_get_contents (path, &stat, NULL, NULL))
        continue;
      p = strstr (stat, want);
      /* "PID (comm) S PPID ..." */
      if (p != NULL && g_ascii_strtoll (p + strlen (want) + 2, NULL, 10) == getpid ())
        n++;
    }
  return n;
}

/* Open fds, leaving out GLib's pidfds for its children (one goes with a killed
 * destination). */
static guint
count_fds (void)
{
  g_autoptr(GDir) dir = g_dir_open ("/proc/self/fd", 0, NULL);
  const char *name;
  guint n = 0;

  while ((name = g_dir_read_name (dir)) != NULL)
    {
      g_autofree char *path = g_strdup_printf ("/proc/self/fd/%s", name);
      g_autofree char *target = g_file_read_link (path, NULL);

      n += target != NULL && strstr (target, "pidfd") == NULL;
    }
  return n;
}

/* Copies @path into @d; with @act, does it once @act_after bytes were sent and
 * returns the monotonic time it did. */
static gint64
copy_run (CopyRun *run, const char *path, const char *format, Dest *d, gboolean bottom,
          Act act, gint64 act_after)
{
  guint fds = count_fds ();
  gint64 start = g_get_monotonic_time ();
  GThread *thread;
  gint64 acted = 0;

  run->copy = (LayerCopy) { path, format, d->uri, bottom, 0, &run->done, &run->sent,
                            run->speed };
  run->cancellable = g_cancellable_new ();
  thread = g_thread_new ("copy", copy_thread, run);
  while (!g_atomic_int_get (&run->finished))
    {
      gint64 sent = __atomic_load_n (&run->sent, __ATOMIC_RELAXED);

      if (act != ACT_NONE && acted == 0 && sent >= act_after)
        {
          acted = g_get_monotonic_time ();
          if (act == ACT_CANCEL)
            g_cancellable_cancel (run->cancellable);
          else if (act == ACT_KILL)
            g_subprocess_force_exit (d->proc);
          else
            g_subprocess_send_signal (d->proc, SIGSTOP);
        }
      if (act == ACT_STOP_THEN_CANCEL && acted != 0 && g_get_monotonic_time () > acted + 300000
          && !g_cancellable_is_cancelled (run->cancellable))
        {
          acted = g_get_monotonic_time ();
          g_cancellable_cancel (run->cancellable);
        }
      if (g_get_monotonic_time () - start > 60 * G_USEC_PER_SEC)
        g_error ("the copy of %s hangs", path);
      /* meson's SIGTERM (the rig's handler) is noticed here */
      g_main_context_iteration (NULL, FALSE);
      g_usleep (500);
    }
  g_thread_join (thread);
  g_clear_object (&run->cancellable);
  g_assert_cmpuint (count_children ("qemu-nbd"), ==, 0);
  g_assert_cmpuint (count_fds (), ==, fds);
  return acted;
}

static void
copy_ok (const char *path, const char *format, Dest *d, gboolean bottom)
{
  CopyRun run = { 0 };

  copy_run (&run, path, format, d, bottom, ACT_NONE, 0);
  g_assert_no_error (run.error);
  g_assert_true (run.ok);
}

static void
rebase_unsafe (const char *path, const char *backing)
{
  const char *argv[] = { "qemu-img", "rebase", "-u", "-b", backing, "-F", "qcow2", path, NULL };
  g_free (run_tool (argv));
}

/* ---- the cases ----------------------------------------------------------- */

/* base: 64 MiB, 64 KiB clusters: data here and there, zero clusters, a data tail. */
static char *
make_base (Rig *rig)
{
  char *base = rig_path (rig, "base.qcow2");

  qcow2_create (base, "64M", "65536", NULL);
  qemu_io (base, "write -P 0x11 0 4M");
  qemu_io (base, "write -P 0x22 10M 3M");
  qemu_io (base, "write -z 20M 1M");
  qemu_io (base, "write -P 0x33 30M 2M");
  qemu_io (base, "write -z 30720k 256k");     /* zero clusters inside data */
  qemu_io (base, "write -P 0x34 40M 1036k");  /* ends mid-cluster */
  qemu_io (base, "write -P 0x35 63M 1M");
  return base;
}

/* mid: 4 KiB clusters over base: 4 KiB writes at spots that are not 64 KiB chunks,
 * zeroes and a discard over base's data, data where base has none. */
static char *
make_mid (Rig *rig, const char *base)
{
  char *mid = rig_path (rig, "mid.qcow2");

  qcow2_create (mid, "64M", "4096", base);
  qemu_io (mid, "write -P 0x41 12k 4k");
  qemu_io (mid, "write -P 0x42 1060k 4k");
  qemu_io (mid, "write -P 0x43 10300k 6k");       /* unaligned to 4 KiB: COW inside mid */
  qemu_io (mid, "write -P 0x44 40956k 8k");       /* across a chunk boundary */
  qemu_io (mid, "write -z 10752k 128k");          /* whole chunks of zeroes over 0x22 */
  qemu_io (mid, "write -z 8k 4k");                /* zeroes beside base's data in a chunk */
  qemu_io (mid, "discard 40960k 64k");            /* a zero cluster over 0x34 */
  qemu_io (mid, "write -z 20484k 4k");            /* zeroes beside base's zero clusters */
  qemu_io (mid, "write -P 0x45 50M 4k");          /* over base's nothing */
  qemu_io (mid, "write -P 0x46 52M 64k");
  qemu_io (mid, "discard 52M 64k");               /* its own data discarded: zeroes */
  return mid;
}

/* (1) base (bottom) and mid copied into fresh backing-less qcow2s, while a
 * storage daemon runs the chain's top (as a VM would); the destination's mid
 * rebased onto its base reads as the source's; holes stay holes; zeroes over the
 * layer below are zero clusters there. */
static void
test_layercopy_chain (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *base = make_base (rig);
  g_autofree char *mid = make_mid (rig, base);
  g_autofree char *top = rig_path (rig, "top.qcow2");
  g_autofree char *running = NULL;
  Dest *dbase = dest_start (rig, "dbase.qcow2", "64M", TRUE);
  Dest *dmid = dest_start (rig, "dmid.qcow2", "64M", TRUE);
  g_autofree char *dbase_path = g_strdup (dbase->path);
  g_autofree char *dmid_path = g_strdup (dmid->path);
  g_autoptr(JsonArray) map = NULL;
  g_autoptr(GSubprocess) vm = NULL;
  gint64 exact, chunks, copy_exact, copy_chunks;

  qcow2_create (top, "64M", "65536", mid);
  qemu_io (top, "write -P 0x77 0 8M");
  running = g_strdup_printf ("driver=qcow2,node-name=top,file.driver=file,file.filename=%s", top);
  vm = qsd_start (rig, "vm", (const char *[]) { "--blockdev", running, NULL });

  copy_ok (base, "qcow2", dbase, TRUE);
  copy_ok (mid, "qcow2", dmid, FALSE);
  g_subprocess_force_exit (vm);
  g_subprocess_wait (vm, NULL, NULL);
  dest_stop (dbase);
  dest_stop (dmid);

  /* mid's whole zero chunks and its discard are zero clusters, not holes. */
  map = img_map (dmid_path);
  for (gint64 at = 10752 * KiB; at < 10880 * KiB; at += CHUNK)
    {
      JsonObject *e = map_entry_at (map, at);
      g_assert_true (json_object_get_boolean_member (e, "present"));
      g_assert_true (json_object_get_boolean_member (e, "zero"));
    }
  g_assert_true (json_object_get_boolean_member (map_entry_at (map, 40 * MiB), "present"));
  g_assert_true (json_object_get_boolean_member (map_entry_at (map, 40 * MiB), "zero"));
  /* what mid does not hold is not written */
  g_assert_false (json_object_get_boolean_member (map_entry_at (map, 5 * MiB), "present"));
  g_assert_false (json_object_get_boolean_member (map_entry_at (map, 30 * MiB), "present"));

  rebase_unsafe (dmid_path, dbase_path);
  g_assert_true (img_identical (base, dbase_path));
  g_assert_true (img_identical (mid, dmid_path));

  own_data (base, &exact, &chunks);
  own_data (dbase_path, &copy_exact, &copy_chunks);
  g_assert_cmpint (copy_exact, <=, chunks);
  own_data (mid, &exact, &chunks);
  own_data (dmid_path, &copy_exact, &copy_chunks);
  g_assert_cmpint (copy_exact, <=, chunks);
  g_assert_cmpint (file_allocated (dmid_path), <=, chunks + 2 * MiB);
}

/* (2) A sparse raw bottom layer into a qcow2: holes are skipped. */
static void
test_layercopy_raw (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *raw = rig_path (rig, "base.raw");
  Dest *d = dest_start (rig, "dbase.qcow2", "64M", TRUE);
  g_autofree char *copy = g_strdup (d->path);
  gint64 exact, chunks;

  img_create (raw, "raw", "64M");
  img_write (raw, "raw", 0x51, "1M", "2M");
  img_write (raw, "raw", 0x52, "33796k", "8k");
  img_write (raw, "raw", 0x53, "64508k", "4k");
  copy_ok (raw, "raw", d, TRUE);
  dest_stop (d);
  g_assert_true (img_identical (raw, copy));
  own_data (copy, &exact, &chunks);
  g_assert_cmpint (exact, <=, 2 * MiB + 3 * CHUNK);
  g_assert_cmpint (file_allocated (copy), <=, 4 * MiB);
}

/* The error of a copy that must fail at once. */
static char *
copy_error (const char *path, Dest *d, GQuark domain, int code)
{
  CopyRun run = { 0 };

  copy_run (&run, path, "qcow2", d, TRUE, ACT_NONE, 0);
  g_assert_false (run.ok);
  g_assert_error (run.error, domain, code);
  return g_strdup (run.error->message);
}

/* (3a) A destination of another size, or read-only, is refused before anything
 * is written; a destination that is not there, or a layer qemu-nbd cannot open,
 * is a disk error naming the layer. */
static void
test_layercopy_refused (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *base = make_base (rig);
  Dest *small = dest_start (rig, "small.qcow2", "32M", TRUE);
  Dest *ro = dest_start (rig, "ro.qcow2", "64M", FALSE);
  g_autofree char *want_size = g_strdup_printf ("%s: the destination export 'layer' is 33554432 "
                                                "bytes, the layer 67108864 bytes", base);
  g_autofree char *want_ro = g_strdup_printf ("%s: the destination export 'layer' is read-only",
                                              base);
  g_autofree char *got_size = copy_error (base, small, BLKMIG_ERROR, BLKMIG_ERROR_DISK);
  g_autofree char *got_ro = copy_error (base, ro, BLKMIG_ERROR, BLKMIG_ERROR_DISK);

  g_autofree char *nowhere = rig_path (rig, "nowhere.sock");
  g_autofree char *nowhere_uri = g_strdup_printf ("nbd+unix:///layer?socket=%s", nowhere);
  Dest gone = { .uri = nowhere_uri };
  g_autofree char *want_gone = g_strdup_printf ("%s: cannot connect to %s: ", base, nowhere_uri);
  g_autofree char *got_gone = copy_error (base, &gone, BLKMIG_ERROR, BLKMIG_ERROR_DISK);
  g_autofree char *want_bad = g_strdup_printf ("%s: cannot serve the layer with qemu-nbd: ",
                                               nowhere);
  g_autofree char *got_bad = NULL;

  g_assert_cmpstr (got_size, ==, want_size);
  g_assert_cmpstr (got_ro, ==, want_ro);
  g_assert_true (g_str_has_prefix (got_gone, want_gone));
  g_file_set_contents (nowhere, "not an image", -1, NULL);
  got_bad = copy_error (nowhere, ro, BLKMIG_ERROR, BLKMIG_ERROR_DISK);
  g_test_message ("%s", got_bad);
  g_assert_true (g_str_has_prefix (got_bad, want_bad));
  dest_stop (small);
  dest_stop (ro);
}

/* A 128 MiB layer of data. */
static char *
make_big (Rig *rig)
{
  char *path = rig_path (rig, "big.qcow2");

  qcow2_create (path, "128M", "65536", NULL);
  qemu_io (path, "write -P 0x66 0 128M");
  return path;
}

/* (3b) Cancelled mid-copy: G_IO_ERROR_CANCELLED, soon; also while every request
 * waits on a destination that stopped answering. */
static void
test_layercopy_cancel (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *big = make_big (rig);
  Dest *d = dest_start (rig, "d.qcow2", "128M", TRUE);
  CopyRun run = { 0 };
  CopyRun stuck = { 0 };
  gint64 acted;

  acted = copy_run (&run, big, "qcow2", d, TRUE, ACT_CANCEL, 16 * MiB);
  g_assert_error (run.error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_assert_cmpint (run.sent, <, 128 * MiB);
  g_assert_cmpint (run.ended - acted, <, 500000);
  g_clear_error (&run.error);

  acted = copy_run (&stuck, big, "qcow2", d, TRUE, ACT_STOP_THEN_CANCEL, 16 * MiB);
  g_assert_error (stuck.error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_assert_cmpint (stuck.ended - acted, <, 500000);
  g_test_message ("cancelled after %" G_GINT64_FORMAT " ms waiting on a stopped destination",
                  (stuck.ended - acted) / 1000);
  g_clear_error (&stuck.error);
  dest_stop (d);
}

/* (3c) The destination killed mid-copy: a disk error naming the layer, no hang. */
static void
test_layercopy_dest_killed (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *big = make_big (rig);
  Dest *d = dest_start (rig, "d.qcow2", "128M", TRUE);
  g_autofree char *prefix = g_strdup_printf ("%s: ", big);
  CopyRun run = { 0 };
  gint64 acted;

  acted = copy_run (&run, big, "qcow2", d, TRUE, ACT_KILL, 16 * MiB);
  g_assert_error (run.error, BLKMIG_ERROR, BLKMIG_ERROR_DISK);
  g_assert_true (g_str_has_prefix (run.error->message, prefix));
  g_assert_null (strchr (run.error->message, '\n'));
  g_assert_cmpint (run.ended - acted, <, 3 * G_USEC_PER_SEC);
  g_test_message ("%s", run.error->message);
  g_clear_error (&run.error);
  dest_stop (d);
}

/* (4) Progress of a 256 MiB layer: done ends at the virtual size, sent at the
 * layer's data rounded to chunks. */
static void
test_layercopy_progress (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *path = rig_path (rig, "layer.qcow2");
  Dest *d = dest_start (rig, "d.qcow2", "256M", TRUE);
  g_autofree char *copy = g_strdup (d->path);
  CopyRun run = { 0 };
  gint64 exact, chunks;

  qcow2_create (path, "256M", "4096", NULL);
  for (int i = 0; i < 8; i++)
    {
      g_autofree char *cmd = g_strdup_printf ("write -P 0x%02x %dM 8M", 0x70 + i, 5 + 31 * i);
      g_autofree char *small = g_strdup_printf ("write -P 0x%02x %dk 4k", 0x80 + i,
                                                200 * 1024 + 100 * i);
      qemu_io (path, cmd);
      qemu_io (path, small);
    }
  copy_run (&run, path, "qcow2", d, TRUE, ACT_NONE, 0);
  g_assert_no_error (run.error);
  dest_stop (d);
  own_data (path, &exact, &chunks);
  g_assert_cmpint (run.done, ==, 256 * MiB);
  g_assert_cmpint (run.sent, >=, exact);
  g_assert_cmpint (run.sent, <=, chunks);
  g_test_message ("data %" G_GINT64_FORMAT ", in chunks %" G_GINT64_FORMAT ", sent %"
                  G_GINT64_FORMAT, exact, chunks, run.sent);
  g_assert_true (img_identical (path, copy));
}

/* (5) A speed limit holds the copy back: 16 MiB of data at 16 MiB/s cannot be
 * through in much less than a second (the last 2 MiB request may run ahead). */
static void
test_layercopy_speed (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *path = rig_path (rig, "layer.qcow2");
  Dest *d = dest_start (rig, "d.qcow2", "64M", TRUE);
  g_autofree char *copy = g_strdup (d->path);
  CopyRun run = { .speed = 16 * MiB };
  gint64 start = g_get_monotonic_time ();

  qcow2_create (path, "64M", "65536", NULL);
  qemu_io (path, "write -P 0x5c 8M 16M");
  copy_run (&run, path, "qcow2", d, TRUE, ACT_NONE, 0);
  g_assert_no_error (run.error);
  g_assert_cmpint (run.ended - start, >=, 800000);
  dest_stop (d);
  g_assert_true (img_identical (path, copy));
}

/* -m perf: MiB/s of a 1 GiB layer of data over a unix socket. */
static void
test_layercopy_throughput (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *path = rig_path (rig, "layer.qcow2");
  Dest *d = NULL;
  gint64 start;
  double seconds;

  if (!g_test_perf ())
    {
      g_test_skip ("a measurement: run with -m perf");
      return;
    }
  qcow2_create (path, "1G", "65536", NULL);
  qemu_io (path, "write -P 0x5a 0 960M");
  d = dest_start (rig, "d.qcow2", "1G", TRUE);
  start = g_get_monotonic_time ();
  copy_ok (path, "qcow2", d, TRUE);
  seconds = (g_get_monotonic_time () - start) / 1e6;
  dest_stop (d);
  g_test_maximized_result (960 / seconds, "%.0f MiB/s (960 MiB of data in a 1 GiB layer)",
                           960 / seconds);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/layercopy/chain", test_layercopy_chain);
  g_test_add_func ("/layercopy/raw", test_layercopy_raw);
  g_test_add_func ("/layercopy/refused", test_layercopy_refused);
  g_test_add_func ("/layercopy/cancel", test_layercopy_cancel);
  g_test_add_func ("/layercopy/dest-killed", test_layercopy_dest_killed);
  g_test_add_func ("/layercopy/progress", test_layercopy_progress);
  g_test_add_func ("/layercopy/speed", test_layercopy_speed);
  g_test_add_func ("/layercopy/throughput", test_layercopy_throughput);
  return g_test_run ();
}
