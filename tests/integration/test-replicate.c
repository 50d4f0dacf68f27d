/* Integration tests of replicate (issue 14): a running primary QEMU checkpointed
 * into an empty standby every interval, and what failover, resync, status and stop
 * make of it.
 *
 * A writer thread, on its own QMP connection to the primary, writes through the
 * guest's own BlockBackend: write i goes to disk i % ndisks at block i / ndisks
 * (64 KiB blocks, never wrapping) with pattern (i % 250) + 1, and its real time is
 * recorded before it is sent (issue) and once QEMU answered (ack).  After a failover
 * each replica is read back block by block: the writes present must be exactly a
 * prefix of the global sequence (a checkpoint is one point in time across disks),
 * every write acknowledged before the checkpoint's pause was requested must be in
 * it and none issued after the primary resumed. */
#include <glib/gstdio.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>

#include "common/async.h"
#include "tests/integration/harness.h"

#define BLOCK (64 * 1024)
#define BLOCKS_PER_DISK 1024          /* 64 MiB disks */
#define DISK_SIZE "64M"
#define INTERVAL "0.3"
#define INTERVAL_MS 300
#define WRITER_PACE_US 4000           /* between two writes: ~10 MiB/s with the round trip */
#define KILL_PRIMARY_TRIALS 7   /* both kill points, random ones, 1 and 2 disks (t % 3 == 2) */

/* ---- the writer ------------------------------------------------------------ */

typedef struct {
  gint64 issue;                       /* g_get_real_time () before the command was sent */
  gint64 ack;                         /* after its answer; 0 when it never came */
} WriteRec;

typedef struct {
  char *socket;                       /* the primary's test monitor */
  guint ndisks;
  GThread *thread;
  GMutex lock;
  GArray *writes;                     /* WriteRec, indexed by write number */
  gint limit;                         /* atomic: no write numbered >= limit is issued */
  gint stop;                          /* atomic */
  gint connected;                     /* atomic */
  gint done;                          /* atomic: the thread is over */
  gint acked;                         /* atomic: writes acknowledged */
  gint expect_loss;                   /* atomic: the primary is being killed */
  char *error;                        /* set by the thread when a write failed otherwise */
  Vm *primary;
} Writer;

/* How @vm's QEMU ended, or "running". */
static char *
vm_exit_text (Vm *vm)
{
  if (vm->proc == NULL)
    return g_strdup ("stopped by the test");
  if (g_subprocess_get_identifier (vm->proc) != NULL)
    return g_strdup ("running");
  if (g_subprocess_get_if_exited (vm->proc))
    return g_strdup_printf ("exited %d", g_subprocess_get_exit_status (vm->proc));
  return g_strdup_printf ("killed by signal %d", g_subprocess_get_term_sig (vm->proc));
}

static const char *const disk_ids[] = { "vda", "vdb" };

static gpointer
writer_main (gpointer data)
{
  Writer *w = data;
  GMainContext *ctx = g_main_context_new ();
  g_autoptr(GError) error = NULL;
  QmpClient *qmp;
  guint max = w->ndisks * BLOCKS_PER_DISK;
  guint i = 0;

  g_main_context_push_thread_default (ctx);
  qmp = qmp_client_connect_sync (w->socket, "writer", NULL, &error);
  if (qmp == NULL)
    {
      w->error = g_strdup_printf ("the writer cannot connect: %s", error->message);
      goto out;
    }
  g_atomic_int_set (&w->connected, 1);
  while (i < max && !g_atomic_int_get (&w->stop))
    {
      g_autofree char *cmd = NULL;
      g_autoptr(JsonNode) ret = NULL;
      WriteRec rec = { 0, 0 };
      const char *text;
      gint64 now;

      if ((gint) i >= g_atomic_int_get (&w->limit))
        {
          g_usleep (1000);
          continue;
        }
      cmd = g_strdup_printf ("qemu-io -d /machine/peripheral/%s/virtio-backend "
                             "\"write -P 0x%02x %u 64k\"", disk_ids[i % w->ndisks],
                             (i % 250) + 1, (i / w->ndisks) * BLOCK);
      rec.issue = g_get_real_time ();
      g_mutex_lock (&w->lock);
      g_array_append_val (w->writes, rec);
      g_mutex_unlock (&w->lock);
      ret = qmp_client_execute_sync (qmp, "human-monitor-command",
                                     qmp_args_new ("command-line", qmp_str (cmd), NULL), NULL,
                                     &error);
      now = g_get_real_time ();
      if (ret == NULL)
        {
          if (!g_atomic_int_get (&w->expect_loss))
            w->error = g_strdup_printf ("write %u: %s", i, error->message);
          break;
        }
      text = json_node_get_string (ret);
      if (text == NULL || strstr (text, "rror") != NULL || strstr (text, "failed") != NULL)
        {
          w->error = g_strdup_printf ("write %u: %s", i, text != NULL ? text : "(no text)");
          break;
        }
      g_mutex_lock (&w->lock);
      g_array_index (w->writes, WriteRec, i).ack = now;
      g_mutex_unlock (&w->lock);
      g_atomic_int_inc (&w->acked);
      i++;
      g_usleep (WRITER_PACE_US);
    }
out:
  if (qmp != NULL)
    {
      qmp_client_close (qmp);
      g_object_unref (qmp);
    }
  while (g_main_context_iteration (ctx, FALSE))
    ;
  g_main_context_pop_thread_default (ctx);
  g_main_context_unref (ctx);
  g_atomic_int_set (&w->done, 1);
  return NULL;
}

static char *
vm_test_socket (Rig *rig, Vm *vm)
{
  return g_strdup_printf ("%s/%s-test.qmp", rig->dir, vm->name);
}

/* Hands the primary's test monitor to a new writer thread (the harness gives QEMU
 * two monitors: blkmig's and the test's; a monitor takes one client at a time). */
static Writer *
writer_start (Rig *rig, Vm *primary, guint ndisks)
{
  Writer *w = g_new0 (Writer, 1);

  w->socket = vm_test_socket (rig, primary);
  w->primary = primary;
  w->ndisks = ndisks;
  w->writes = g_array_new (FALSE, TRUE, sizeof (WriteRec));
  w->limit = G_MAXINT;
  g_mutex_init (&w->lock);
  qmp_client_close (primary->qmp);
  g_clear_object (&primary->qmp);
  w->thread = g_thread_new ("writer", writer_main, w);
  for (int i = 0; i < 3000 && !g_atomic_int_get (&w->connected) && !g_atomic_int_get (&w->done); i++)
    g_usleep (10 * 1000);
  if (!g_atomic_int_get (&w->connected))
    g_error ("the writer did not connect: %s", w->error != NULL ? w->error : "timed out");
  return w;
}

/* Waits (bounded) until @n writes were acknowledged. */
static void
writer_wait_acked (Writer *w, guint n)
{
  for (int i = 0; i < 6000 && (guint) g_atomic_int_get (&w->acked) < n; i++)
    {
      if (g_atomic_int_get (&w->done))
        break;
      g_usleep (5 * 1000);
    }
  if ((guint) g_atomic_int_get (&w->acked) < n)
    {
      g_autofree char *how = (g_usleep (100 * 1000), vm_exit_text (w->primary));
      g_error ("the writer made %d of %u writes: %s (the primary QEMU: %s)",
               g_atomic_int_get (&w->acked), n, w->error != NULL ? w->error : "too slow", how);
    }
}

/* Stops the writer; with @reconnect the test's monitor goes back to @primary->qmp. */
static void
writer_join (Writer *w, Vm *primary, gboolean reconnect)
{
  g_autoptr(GError) error = NULL;

  g_atomic_int_set (&w->stop, 1);
  g_thread_join (w->thread);
  w->thread = NULL;
  if (w->error != NULL)
    {
      g_autofree char *how = (g_usleep (100 * 1000), vm_exit_text (primary));
      g_error ("the writer failed: %s (the primary QEMU: %s)", w->error, how);
    }
  if (reconnect)
    {
      primary->qmp = qmp_client_connect_sync (w->socket, primary->name, NULL, &error);
      g_assert_no_error (error);
    }
}

static void
writer_free (Writer *w)
{
  if (w == NULL)
    return;
  if (w->thread != NULL)
    {
      g_atomic_int_set (&w->stop, 1);
      g_thread_join (w->thread);
    }
  g_array_unref (w->writes);
  g_mutex_clear (&w->lock);
  g_free (w->socket);
  g_free (w->error);
  g_free (w);
}

/* Bytes of the writes issued after @since (each 64 KiB, each to its own block). */
static guint64
writer_bytes_issued_after (Writer *w, gint64 since)
{
  guint64 n = 0;

  g_mutex_lock (&w->lock);
  for (guint i = 0; i < w->writes->len; i++)
    n += g_array_index (w->writes, WriteRec, i).issue > since ? BLOCK : 0;
  g_mutex_unlock (&w->lock);
  return n;
}

/* ---- blkmig runs with their events ---------------------------------------- */

typedef struct {
  GSubprocess *proc;
  char *out_path, *err_path;
  gsize consumed;                     /* bytes of out_path parsed */
  GPtrArray *events;                  /* JsonNode (objects), in order */
  guint cursor;                       /* run_next looks from here */
  char *err;                          /* stderr, once ended */
  gboolean json;                      /* stdout is JSON events (--json of start, resync) */
  int status;
  gint64 started;
} Run;

static void
child_setup (gpointer user_data)
{
  /* a test that fails (abort) leaves no blkmig behind */
  prctl (PR_SET_PDEATHSIG, SIGKILL);
}

/* Starts blkmig with @argv (NULL-terminated, no program name), its stdout and stderr
 * into files of the rig; @env: NAME, VALUE pairs, NULL-terminated, or NULL; with
 * @events its stdout is parsed as events. */
static Run *
run_spawnv (Rig *rig, const char *const *env, gboolean events, const char *const *argv)
{
  static guint counter;
  g_autoptr(GSubprocessLauncher) launcher = g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_NONE);
  g_autoptr(GPtrArray) args = g_ptr_array_new ();
  g_autoptr(GError) error = NULL;
  const char *bin = g_getenv ("BLKMIG");
  Run *run = g_new0 (Run, 1);
  guint n = ++counter;

  run->out_path = g_strdup_printf ("%s/blkmig-%u.out", rig->dir, n);
  run->err_path = g_strdup_printf ("%s/blkmig-%u.err", rig->dir, n);
  run->events = g_ptr_array_new_with_free_func ((GDestroyNotify) json_node_unref);
  run->status = -1;
  run->json = events;
  g_ptr_array_add (args, (char *) (bin != NULL ? bin : "build/blkmig"));
  for (guint i = 0; argv[i] != NULL; i++)
    g_ptr_array_add (args, (char *) argv[i]);
  g_ptr_array_add (args, NULL);
  for (guint i = 0; env != NULL && env[i] != NULL; i += 2)
    g_subprocess_launcher_setenv (launcher, env[i], env[i + 1], TRUE);
  g_subprocess_launcher_set_stdout_file_path (launcher, run->out_path);
  g_subprocess_launcher_set_stderr_file_path (launcher, run->err_path);
  g_subprocess_launcher_set_child_setup (launcher, child_setup, NULL, NULL);
  run->started = g_get_monotonic_time ();
  run->proc = g_subprocess_launcher_spawnv (launcher, (const char *const *) args->pdata, &error);
  g_assert_no_error (error);
  return run;
}

static void
run_free (Run *run)
{
  if (run == NULL)
    return;
  if (g_subprocess_get_identifier (run->proc) != NULL)
    {
      g_subprocess_force_exit (run->proc);
      g_subprocess_wait (run->proc, NULL, NULL);
    }
  g_object_unref (run->proc);
  g_ptr_array_unref (run->events);
  g_free (run->out_path);
  g_free (run->err_path);
  g_free (run->err);
  g_free (run);
}

/* What the file @path holds, "" when it cannot be read. */
static char *
file_text (const char *path)
{
  char *text = NULL;

  if (!g_file_get_contents (path, &text, NULL, NULL))
    text = g_strdup ("");
  return text;
}

static char *
run_stderr (Run *run)
{
  return file_text (run->err_path);
}

/* Parses the complete lines blkmig wrote since the last call: each a JSON object
 * with v 1, ms and event. */
static void
run_poll (Run *run)
{
  g_autofree char *text = NULL;
  gsize len = 0;
  const char *p, *end;

  if (!run->json || !g_file_get_contents (run->out_path, &text, &len, NULL)
      || len <= run->consumed)
    return;
  p = text + run->consumed;
  while ((end = memchr (p, '\n', text + len - p)) != NULL)
    {
      g_autofree char *line = g_strndup (p, end - p);
      g_autoptr(GError) error = NULL;
      JsonNode *node = json_from_string (line, &error);
      JsonObject *obj;

      if (node == NULL || !JSON_NODE_HOLDS_OBJECT (node))
        g_error ("blkmig --json wrote a line that is not a JSON object: %s", line);
      obj = json_node_get_object (node);
      if (json_object_get_int_member_with_default (obj, "v", 0) != 1
          || !json_object_has_member (obj, "ms")
          || json_object_get_string_member_with_default (obj, "event", NULL) == NULL)
        g_error ("an event without v 1, ms and event: %s", line);
      if (g_test_verbose ())
        g_printerr ("# event: %s\n", line);
      g_ptr_array_add (run->events, node);
      p = end + 1;
    }
  run->consumed = p - text;
}

static const char *
ev_type (JsonObject *ev)
{
  return json_object_get_string_member (ev, "event");
}

static gint64
ev_int (JsonObject *ev, const char *member)
{
  JsonNode *node = json_object_get_member (ev, member);

  if (node == NULL || json_node_get_value_type (node) != G_TYPE_INT64)
    g_error ("event %s has no integer %s", ev_type (ev), member);
  return json_node_get_int (node);
}

/* An integer or a fraction. */
static double
ev_num (JsonObject *ev, const char *member)
{
  JsonNode *node = json_object_get_member (ev, member);

  if (node == NULL || (json_node_get_value_type (node) != G_TYPE_INT64
                       && json_node_get_value_type (node) != G_TYPE_DOUBLE))
    g_error ("event %s has no number %s", ev_type (ev), member);
  return json_node_get_double (node);
}

static JsonObject *
run_event (Run *run, guint i)
{
  return json_node_get_object (run->events->pdata[i]);
}

/* The next event of @type from the cursor on, waiting up to @timeout_ms; NULL when
 * blkmig ended without it or the time ran out. */
static JsonObject *
run_next (Run *run, const char *type, guint timeout_ms)
{
  gint64 deadline = g_get_monotonic_time () + (gint64) timeout_ms * 1000;

  for (;;)
    {
      gboolean alive = g_subprocess_get_identifier (run->proc) != NULL;

      run_poll (run);
      for (; run->cursor < run->events->len; run->cursor++)
        if (g_strcmp0 (ev_type (run_event (run, run->cursor)), type) == 0)
          return run_event (run, run->cursor++);
      if (!alive || g_get_monotonic_time () > deadline)
        return NULL;
      g_main_context_iteration (NULL, FALSE);
      g_usleep (2 * 1000);
    }
}

static JsonObject *
run_expect (Run *run, const char *type, guint timeout_ms)
{
  JsonObject *ev = run_next (run, type, timeout_ms);

  if (ev == NULL)
    {
      g_autofree char *err = run_stderr (run);
      g_error ("no \"%s\" event from blkmig within %u ms (%s); stderr: %s", type, timeout_ms,
               g_subprocess_get_identifier (run->proc) != NULL ? "still running" : "it ended",
               err);
    }
  return ev;
}

/* Waits (bounded) for blkmig to end; its exit status (128 + signal when killed). */
static int
run_end (Run *run, guint timeout_ms)
{
  gint64 deadline = g_get_monotonic_time () + (gint64) timeout_ms * 1000;

  while (g_subprocess_get_identifier (run->proc) != NULL)
    {
      if (g_get_monotonic_time () > deadline)
        {
          g_autofree char *err = run_stderr (run);
          g_subprocess_force_exit (run->proc);
          g_subprocess_wait (run->proc, NULL, NULL);
          g_error ("blkmig did not end within %u ms; stderr: %s", timeout_ms, err);
        }
      g_main_context_iteration (NULL, FALSE);
      g_usleep (5 * 1000);
    }
  g_subprocess_wait (run->proc, NULL, NULL);
  run_poll (run);
  run->err = run_stderr (run);
  run->status = g_subprocess_get_if_exited (run->proc) ? g_subprocess_get_exit_status (run->proc)
                                                       : 128 + g_subprocess_get_term_sig (run->proc);
  if (g_test_verbose ())
    g_printerr ("# blkmig exited %d after %.1f s; stderr:\n%s", run->status,
                (g_get_monotonic_time () - run->started) / 1e6, run->err);
  return run->status;
}

static void
run_end_expect (Run *run, int want)
{
  int status = run_end (run, 30000);

  if (status != want)
    g_error ("blkmig exited %d, not %d; stderr: %s", status, want, run->err);
}

/* The last event of @type so far, or NULL. */
static JsonObject *
run_last (Run *run, const char *type)
{
  run_poll (run);
  for (guint i = run->events->len; i > 0; i--)
    if (g_strcmp0 (ev_type (run_event (run, i - 1)), type) == 0)
      return run_event (run, i - 1);
  return NULL;
}

/* The order of the events of replicate start (@first "replicate": the first event
 * that is not a "phase" of the migration steps it runs) or resync: synced
 * before any checkpoint, checkpoint N acknowledged only after its checkpoint-start,
 * in increasing order, its pause bracketed by paused-at and resumed-at. */
static void
run_check_events (Run *run, const char *first)
{
  gint64 started = -1, acked = -1;
  gboolean synced = FALSE;

  run_poll (run);
  g_assert_cmpuint (run->events->len, >, 0);
  if (first != NULL)
    {
      guint i = 0;

      while (i + 1 < run->events->len && g_strcmp0 (ev_type (run_event (run, i)), "phase") == 0)
        i++;
      g_assert_cmpstr (ev_type (run_event (run, i)), ==, first);
    }
  for (guint i = 0; i < run->events->len; i++)
    {
      JsonObject *ev = run_event (run, i);
      const char *type = ev_type (ev);

      if (g_str_equal (type, "synced") || g_str_equal (type, "resync"))
        synced = TRUE;
      else if (g_str_equal (type, "checkpoint-start"))
        {
          g_assert_true (synced);
          g_assert_cmpint (ev_int (ev, "number"), >, started);
          g_assert_cmpint (ev_int (ev, "number"), >, acked);
          started = ev_int (ev, "number");
        }
      else if (g_str_equal (type, "checkpoint"))
        {
          gint64 p = ev_int (ev, "paused-at-us"), r = ev_int (ev, "resumed-at-us");

          g_assert_cmpint (ev_int (ev, "number"), ==, started);
          g_assert_cmpint (ev_int (ev, "number"), >, acked);
          acked = ev_int (ev, "number");
          ev_int (ev, "time-us");
          g_assert_cmpint (p, <=, r);
          g_assert_cmpfloat (ev_num (ev, "paused-ms"), >=, 0);
          g_assert_cmpfloat (ev_num (ev, "paused-ms"), <=, (r - p) / 1000.0 + 2);
        }
      else if (g_str_equal (type, "checkpoint-failed"))
        g_assert_cmpint (ev_int (ev, "number"), ==, started);
    }
}

/* ---- a replication ---------------------------------------------------------- */

typedef struct {
  Rig *rig;
  guint ndisks;
  char *dir;                          /* the replica directory */
  char *disks[2];                     /* the primary's images */
  char *replicas[2];
  Vm *primary;
  Writer *writer;
  Run *run;
  char *id;
  const char *const *extra;           /* more options for replicate start, or NULL */
} Repl;

/* A primary @tag running on @ndisks empty 64 MiB qcow2 disks, and its replica
 * directory (empty). */
static Repl *
repl_new (Rig *rig, const char *tag, guint ndisks)
{
  Repl *r = g_new0 (Repl, 1);
  g_autofree char *dirname = g_strdup_printf ("%s-replica", tag);
  VmDisk vmdisks[3] = { { NULL } };

  r->rig = rig;
  r->ndisks = ndisks;
  r->dir = rig_path (rig, dirname);
  g_assert_cmpint (g_mkdir (r->dir, 0700), ==, 0);
  for (guint d = 0; d < ndisks; d++)
    {
      g_autofree char *name = g_strdup_printf ("%s-%s.qcow2", tag, disk_ids[d]);
      g_autofree char *replica = g_strdup_printf ("%s.qcow2", disk_ids[d]);

      r->disks[d] = rig_path (rig, name);
      r->replicas[d] = g_build_filename (r->dir, replica, NULL);
      img_create (r->disks[d], "qcow2", DISK_SIZE);
      vmdisks[d] = (VmDisk) { disk_ids[d], r->disks[d], "qcow2" };
    }
  r->primary = vm_start (rig, tag, vmdisks, NULL);
  return r;
}

static void
repl_free (Repl *r)
{
  if (r == NULL)
    return;
  writer_free (r->writer);
  run_free (r->run);
  for (guint d = 0; d < 2; d++)
    {
      g_free (r->disks[d]);
      g_free (r->replicas[d]);
    }
  g_free (r->dir);
  g_free (r->id);
  g_free (r);
}

/* --replica vda=DIR/vda.qcow2 ... into @argv. */
static void
repl_add_replicas (Repl *r, GPtrArray *argv, GPtrArray *owned)
{
  for (guint d = 0; d < r->ndisks; d++)
    {
      char *arg = g_strdup_printf ("%s=%s", disk_ids[d], r->replicas[d]);

      g_ptr_array_add (owned, arg);
      g_ptr_array_add (argv, (char *) "--replica");
      g_ptr_array_add (argv, arg);
    }
}

static gboolean
id_is_hex32 (const char *id)
{
  if (strlen (id) != 32)
    return FALSE;
  for (const char *p = id; *p != '\0'; p++)
    if (!g_ascii_isdigit (*p) && !(*p >= 'a' && *p <= 'f'))
      return FALSE;
  return TRUE;
}

/* blkmig replicate start into @standby, with @env; takes the id from the first event. */
static void
repl_start (Repl *r, Vm *standby, const char *const *env)
{
  g_autoptr(GPtrArray) argv = g_ptr_array_new ();
  g_autoptr(GPtrArray) owned = g_ptr_array_new_with_free_func (g_free);
  JsonObject *ev;

  g_ptr_array_add (argv, (char *) "replicate");
  g_ptr_array_add (argv, (char *) "start");
  g_ptr_array_add (argv, (char *) "--primary");
  g_ptr_array_add (argv, r->primary->qmp_path);
  g_ptr_array_add (argv, (char *) "--standby");
  g_ptr_array_add (argv, standby->qmp_path);
  repl_add_replicas (r, argv, owned);
  g_ptr_array_add (argv, (char *) "--interval");
  g_ptr_array_add (argv, (char *) INTERVAL);
  g_ptr_array_add (argv, (char *) "--json");
  for (guint i = 0; r->extra != NULL && r->extra[i] != NULL; i++)
    g_ptr_array_add (argv, (char *) r->extra[i]);
  g_ptr_array_add (argv, NULL);
  r->run = run_spawnv (r->rig, env, TRUE, (const char *const *) argv->pdata);
  ev = run_expect (r->run, "replicate", 30000);
  for (guint i = 0; i + 1 < r->run->cursor; i++)
    if (g_strcmp0 (ev_type (run_event (r->run, i)), "phase") != 0)
      g_error ("\"replicate\" is not the first event but number %u (after %s)", r->run->cursor,
               ev_type (run_event (r->run, i)));
  r->id = g_strdup (json_object_get_string_member_with_default (ev, "id", ""));
  /* a UUID, with its dashes or without (docs/cookie.md: 32 lowercase hex digits) */
  if (!g_uuid_string_is_valid (r->id) && !id_is_hex32 (r->id))
    g_error ("the replication id '%s' is not a UUID", r->id);
  g_assert_cmpint (ev_int (ev, "disks"), ==, r->ndisks);
}

static void
repl_kill_primary (Repl *r)
{
  if (r->writer != NULL)
    g_atomic_int_set (&r->writer->expect_loss, 1);
  g_subprocess_force_exit (r->primary->proc);
}

/* The primary is lost: blkmig says so, naming the last acknowledged checkpoint,
 * and exits 9; returns that checkpoint's event. */
static JsonObject *
repl_expect_primary_lost (Repl *r)
{
  JsonObject *lost, *last;

  run_end_expect (r->run, 9);
  run_check_events (r->run, "replicate");
  lost = run_last (r->run, "primary-lost");
  g_assert_nonnull (lost);
  last = run_last (r->run, "checkpoint");
  g_assert_nonnull (last);
  g_assert_cmpint (ev_int (lost, "checkpoint"), ==, ev_int (last, "number"));
  writer_join (r->writer, r->primary, FALSE);
  return last;
}

static char *
run_stdout (Run *run)
{
  return file_text (run->out_path);
}

/* The first line of @out that is a JSON object with event @type, or NULL. */
static JsonNode *
find_event_line (const char *out, const char *type)
{
  g_auto(GStrv) lines = g_strsplit (out, "\n", -1);

  for (guint i = 0; lines[i] != NULL; i++)
    {
      JsonNode *node = json_from_string (lines[i], NULL);

      if (node != NULL && JSON_NODE_HOLDS_OBJECT (node)
          && g_strcmp0 (json_object_get_string_member_with_default (
                          json_node_get_object (node), "event", NULL), type) == 0)
        return node;
      if (node != NULL)
        json_node_unref (node);
    }
  return NULL;
}

/* Runs blkmig with the @argc words of @argv (NULL ones left out: optional options)
 * to its end (bounded). */
static Run *
run_sync (Rig *rig, guint argc, const char *const *argv)
{
  g_autoptr(GPtrArray) args = g_ptr_array_new ();
  Run *run;

  for (guint i = 0; i < argc; i++)
    if (argv[i] != NULL)
      g_ptr_array_add (args, (char *) argv[i]);
  g_ptr_array_add (args, NULL);
  run = run_spawnv (rig, NULL, FALSE, (const char *const *) args->pdata);
  run_end (run, 60000);
  return run;
}

#define RUN_SYNC(rig, ...) \
  run_sync ((rig), G_N_ELEMENTS (((const char *const[]) { __VA_ARGS__ })), \
            (const char *const[]) { __VA_ARGS__ })

/* blkmig replicate failover (--standby when @standby, --json when @json): exit 0,
 * it says which checkpoint; returns that number. */
static gint64
repl_failover (Repl *r, Vm *standby, gboolean json)
{
  Run *run = RUN_SYNC (r->rig, "replicate", "failover", "--id", r->id,
                       json ? "--json" : NULL,
                       standby != NULL ? "--standby" : NULL,
                       standby != NULL ? standby->qmp_path : NULL);
  g_autofree char *out = run_stdout (run);
  gint64 n = -1;

  if (run->status != 0)
    g_error ("failover exited %d; stderr: %s", run->status, run->err);
  if (json)
    {
      g_autoptr(JsonNode) node = find_event_line (out, "failover");

      if (node == NULL)
        g_error ("failover --json gave no failover event: %s", out);
      n = ev_int (json_node_get_object (node), "checkpoint");
    }
  else
    {
      const char *p = out;
      char *end = NULL;

      if (!g_str_has_prefix (p, "blkmig: failover to checkpoint "))
        g_error ("failover said: %s", out);
      p += strlen ("blkmig: failover to checkpoint ");
      n = g_ascii_strtoll (p, &end, 10);
      g_assert_true (end != p && !g_ascii_isdigit (*end));
    }
  run_free (run);
  return n;
}

static JsonNode *repl_status (Repl *r);

/* A failover that crashes (SIGKILL once the layers are committed, before they are
 * removed), then `recover --id`, which finishes it: checkpoint @want. */
static void
repl_failover_crash (Repl *r, gint64 want)
{
  static const char *const env[] = { "BLKMIG_TEST_KILL_AT", "replica-composed", NULL };
  const char *const argv[] = { "replicate", "failover", "--id", r->id, NULL };
  g_autofree char *expect = g_strdup_printf ("recover: replication %s failed over to "
                                             "checkpoint %" G_GINT64_FORMAT "\n", r->id, want);
  g_autofree char *out = NULL;
  g_autoptr(JsonNode) status = NULL;
  Run *run = run_spawnv (r->rig, env, FALSE, argv);

  g_assert_cmpint (run_end (run, 60000), ==, 128 + SIGKILL);
  run_free (run);
  status = repl_status (r);  /* the record says where it stopped */
  g_assert_cmpstr (json_object_get_string_member_with_default (json_node_get_object (status),
                                                               "state", ""), ==, "failover");
  run = RUN_SYNC (r->rig, "recover", "--id", r->id);
  out = run_stdout (run);
  if (run->status != 0 || g_strcmp0 (out, expect) != 0)
    g_error ("recover after a crashed failover exited %d and said '%s'; stderr: %s",
             run->status, out, run->err);
  run_free (run);
}

/* ---- checks ------------------------------------------------------------------ */

/* What the block of write @i holds: 1 its pattern, 0 zeroes, -1 anything else. */
static int
block_state (const guint8 *block, guint8 pattern)
{
  gboolean all_pattern = TRUE, all_zero = TRUE;

  for (guint j = 0; j < BLOCK && (all_pattern || all_zero); j++)
    {
      all_pattern = all_pattern && block[j] == pattern;
      all_zero = all_zero && block[j] == 0;
    }
  return all_zero ? 0 : all_pattern ? 1 : -1;
}

/* Each replica, read back as raw, holds exactly a prefix 0..k-1 of the writes;
 * every write acknowledged before @ckpt's paused-at-us is in it, none issued after
 * its resumed-at-us; nothing else was written.  The replica is a file of its own
 * (no backing file: blkmig's layers are gone).  Returns k. */
static guint
check_replicas (Repl *r, JsonObject *ckpt)
{
  gint64 paused_at = ev_int (ckpt, "paused-at-us");
  gint64 resumed_at = ev_int (ckpt, "resumed-at-us");
  Writer *w = r->writer;
  guint nwrites = w->writes->len;
  g_autofree gint8 *present = g_new0 (gint8, r->ndisks * BLOCKS_PER_DISK);
  guint k = 0, must = 0, must_not = nwrites;

  for (guint d = 0; d < r->ndisks; d++)
    {
      g_autofree char *raw = g_strdup_printf ("%s/check-%s.raw", r->rig->dir, disk_ids[d]);
      g_autofree char *data = NULL;
      g_autofree char *info = NULL;
      gsize len = 0;
      int status = 0;
      const char *convert[] = { "qemu-img", "convert", "-U", "-O", "raw", r->replicas[d], raw,
                                NULL };
      const char *info_argv[] = { "qemu-img", "info", "-U", "--output=json", r->replicas[d],
                                  NULL };
      g_autoptr(GError) error = NULL;

      g_assert_true (g_spawn_sync (NULL, (char **) info_argv, NULL, G_SPAWN_SEARCH_PATH, NULL,
                                   NULL, &info, NULL, &status, &error));
      g_assert_no_error (error);
      g_assert_true (g_spawn_check_wait_status (status, NULL));
      if (strstr (info, "\"backing-filename\"") != NULL)
        g_error ("%s still has a backing file: %s", r->replicas[d], info);
      g_assert_true (g_spawn_sync (NULL, (char **) convert, NULL,
                                   G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL,
                                   NULL, NULL, &status, &error));
      g_assert_no_error (error);
      g_assert_true (g_spawn_check_wait_status (status, NULL));
      g_assert_true (g_file_get_contents (raw, &data, &len, NULL));
      g_assert_cmpuint (len, ==, (gsize) BLOCKS_PER_DISK * BLOCK);
      g_unlink (raw);
      for (guint b = 0; b < BLOCKS_PER_DISK; b++)
        {
          guint i = b * r->ndisks + d;
          int state = block_state ((const guint8 *) data + (gsize) b * BLOCK,
                                   i < nwrites ? (i % 250) + 1 : 0);

          if (state < 0)
            g_error ("%s: block %u (write %u, pattern 0x%02x) holds neither its pattern nor "
                     "zeroes", r->replicas[d], b, i, (i % 250) + 1);
          if (i >= nwrites && state != 0)
            g_error ("%s: block %u was never written but is not zero", r->replicas[d], b);
          present[i] = state;
        }
    }
  while (k < nwrites && present[k])
    k++;
  for (guint i = k; i < nwrites; i++)
    if (present[i])
      g_error ("not a prefix: write %u (%s) is in the replica but write %u (%s) is not", i,
               disk_ids[i % r->ndisks], k, disk_ids[k % r->ndisks]);
  for (guint i = 0; i < nwrites; i++)
    {
      WriteRec rec = g_array_index (w->writes, WriteRec, i);

      if (rec.ack != 0 && rec.ack < paused_at)
        must = i + 1;
      if (rec.issue > resumed_at && i < must_not)
        must_not = i;
    }
  g_test_message ("checkpoint %" G_GINT64_FORMAT ": %u of %u writes present (at least %u, at "
                  "most %u); paused %.1f ms", ev_int (ckpt, "number"), k, nwrites, must,
                  must_not, (resumed_at - paused_at) / 1000.0);
  if (k < must)
    g_error ("write %u was acknowledged %.1f ms before checkpoint %" G_GINT64_FORMAT
             " paused the primary but is not in the replica (%u writes are)", must - 1,
             (paused_at - g_array_index (w->writes, WriteRec, must - 1).ack) / 1000.0,
             ev_int (ckpt, "number"), k);
  if (k > must_not)
    g_error ("write %u was issued %.1f ms after checkpoint %" G_GINT64_FORMAT
             " resumed the primary but is in the replica (%u writes are)", must_not,
             (g_array_index (w->writes, WriteRec, must_not).issue - resumed_at) / 1000.0,
             ev_int (ckpt, "number"), k);
  g_assert_cmpuint (must, >, 0);    /* the check tells something */
  return k;
}

/* @dir holds exactly the replica files. */
static void
assert_dir_only_replicas (Repl *r)
{
  g_autoptr(GDir) d = g_dir_open (r->dir, 0, NULL);
  g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
  const char *name;

  g_assert_nonnull (d);
  while ((name = g_dir_read_name (d)) != NULL)
    g_ptr_array_add (names, g_strdup (name));
  for (guint i = 0; i < names->len; i++)
    {
      gboolean replica = FALSE;

      for (guint k = 0; k < r->ndisks; k++)
        replica = replica || g_str_has_suffix (r->replicas[k], names->pdata[i]);
      if (!replica)
        g_error ("%s holds %s besides the replicas", r->dir, (char *) names->pdata[i]);
    }
  g_assert_cmpuint (names->len, ==, r->ndisks);
}

/* Nothing of blkmig's in the standby: it started with no block node, export, job or
 * NBD server, and has none again. */
static void
assert_standby_clean (Vm *standby)
{
  g_autoptr(JsonNode) nodes = vm_qmp (standby, "query-named-block-nodes", NULL);
  g_autoptr(JsonNode) ret = NULL;
  g_autoptr(GError) error = NULL;

  g_assert_cmpuint (json_array_get_length (json_node_get_array (nodes)), ==, 0);
  g_assert_cmpuint (vm_count_exports (standby), ==, 0);
  g_assert_cmpuint (vm_count_jobs (standby), ==, 0);
  ret = vm_qmp_try (standby, "nbd-server-stop", NULL, &error);
  g_assert_nonnull (error);   /* no NBD server left running */
}

/* The primary runs on its own images with no job, node or dirty bitmap of blkmig's. */
static void
assert_primary_clean (Repl *r)
{
  g_autofree char *status = vm_status (r->primary);
  g_autoptr(JsonNode) block = vm_qmp (r->primary, "query-block", NULL);
  JsonArray *list = json_node_get_array (block);

  g_assert_cmpstr (status, ==, "running");
  g_assert_cmpuint (vm_count_jobs (r->primary), ==, 0);
  g_assert_cmpuint (vm_count_blkmig_nodes (r->primary), ==, 0);
  for (guint d = 0; d < r->ndisks; d++)
    {
      g_autofree char *file = vm_disk_file (r->primary, disk_ids[d]);
      g_assert_cmpstr (file, ==, r->disks[d]);
    }
  for (guint i = 0; i < json_array_get_length (list); i++)
    {
      JsonObject *entry = json_array_get_object_element (list, i);
      JsonObject *inserted = json_object_get_object_member (entry, "inserted");
      JsonArray *bitmaps = inserted != NULL && json_object_has_member (inserted, "dirty-bitmaps")
                           ? json_object_get_array_member (inserted, "dirty-bitmaps") : NULL;

      if (bitmaps != NULL && json_array_get_length (bitmaps) > 0)
        g_error ("%s still has a dirty bitmap", json_object_get_string_member (entry, "device"));
    }
}

/* The names in the state directory, for messages. */
static char *
state_dir_listing (void)
{
  g_autoptr(GDir) d = g_dir_open (g_getenv ("BLKMIG_STATE_DIR"), 0, NULL);
  g_autoptr(GString) names = g_string_new (NULL);
  const char *name;

  while (d != NULL && (name = g_dir_read_name (d)) != NULL)
    g_string_append_printf (names, "%s%s", names->len > 0 ? " " : "", name);
  return g_string_free (g_steal_pointer (&names), FALSE);
}

/* No journal in the state directory, and nothing else naming replication @id. */
static void
assert_no_state (Rig *rig, const char *id)
{
  g_autofree char *listing = state_dir_listing ();

  g_assert_cmpuint (rig_count_journals (rig), ==, 0);
  if (strstr (listing, id) != NULL)
    g_error ("the state directory still holds %s", listing);
}

static void
sleep_ms (guint ms)
{
  blkmig_sleep (ms, NULL);
}

/* ---- the cases ----------------------------------------------------------------- */

typedef struct {
  Rig *rig;
} Fixture;

static void
fixture_setup (Fixture *f, gconstpointer data)
{
  f->rig = rig_new ();
}

static void
fixture_teardown (Fixture *f, gconstpointer data)
{
  rig_free (f->rig);
}

/* A fresh standby: a QEMU with no disk and no device. */
static Vm *
standby_start (Rig *rig, const char *name)
{
  return vm_start (rig, name, NULL, "nodevices");
}

/* blkmig replicate status --id ID --json: exit 0, one JSON object. */
static JsonNode *
repl_status (Repl *r)
{
  Run *run = RUN_SYNC (r->rig, "replicate", "status", "--id", r->id, "--json");
  g_autofree char *out = run_stdout (run);
  g_autoptr(GError) error = NULL;
  JsonNode *node;

  if (run->status != 0)
    g_error ("status exited %d; stderr: %s", run->status, run->err);
  run_free (run);
  node = json_from_string (out, &error);
  if (node == NULL || !JSON_NODE_HOLDS_OBJECT (node))
    g_error ("status --json did not print one JSON object: %s", out);
  g_test_message ("status: %s", g_strchomp (out));
  return node;
}

typedef enum {
  KILL_RANDOM,                        /* a random moment within the interval */
  KILL_AT_CHECKPOINT_START,           /* right after checkpoint-start: while paused */
  KILL_AT_COMMIT_START,               /* right after commit-start: while committing */
} KillAt;

/* One trial: the primary SIGKILLed @at; blkmig exits 9 naming the last acknowledged
 * checkpoint; failover (alternately with --json) leaves the replicas at exactly it
 * and the standby empty. */
static void
kill_primary_trial (Fixture *f, Vm *standby, guint t, KillAt at, guint ndisks)
{
  static const char *const delay_env[] = { "BLKMIG_TEST_CHECKPOINT_DELAY_MS", "300", NULL };
  static const char *const commit_env[] = { "BLKMIG_TEST_COMMIT_SPEED", "1048576", NULL };
  gint64 t0 = g_get_monotonic_time ();
  g_autofree char *tag = g_strdup_printf ("p%u", t);
  g_autofree char *how = NULL;
  Repl *r = repl_new (f->rig, tag, ndisks);
  JsonObject *ev, *last;
  gint64 paused_in = -1, committing = -1, n;
  guint k;

  r->writer = writer_start (f->rig, r->primary, ndisks);
  repl_start (r, standby, at == KILL_AT_CHECKPOINT_START ? delay_env
                          : at == KILL_AT_COMMIT_START ? commit_env : NULL);
  run_expect (r->run, "synced", 30000);
  run_expect (r->run, "checkpoint", 10000);
  switch (at)
    {
    case KILL_RANDOM:
      {
        guint delay = g_test_rand_int_range (0, INTERVAL_MS);

        sleep_ms (delay);
        repl_kill_primary (r);
        how = g_strdup_printf ("%u ms after the first checkpoint", delay);
        break;
      }
    case KILL_AT_CHECKPOINT_START:
      ev = run_expect (r->run, "checkpoint-start", 10000);
      repl_kill_primary (r);
      paused_in = ev_int (ev, "number");
      how = g_strdup_printf ("at checkpoint-start %" G_GINT64_FORMAT, paused_in);
      break;
    case KILL_AT_COMMIT_START:
      ev = run_expect (r->run, "commit-start", 10000);
      repl_kill_primary (r);
      committing = ev_int (ev, "number");
      how = g_strdup_printf ("at commit-start %" G_GINT64_FORMAT, committing);
      break;
    }
  last = repl_expect_primary_lost (r);
  if (paused_in >= 0)
    g_assert_cmpint (ev_int (last, "number"), ==, paused_in - 1);
  if (committing >= 0)
    {
      /* the kill did land inside the commit */
      for (guint i = 0; i < r->run->events->len; i++)
        {
          JsonObject *e = run_event (r->run, i);
          if (g_str_equal (ev_type (e), "commit") && ev_int (e, "number") == committing)
            g_error ("commit %" G_GINT64_FORMAT " completed before the primary was lost: "
                     "BLKMIG_TEST_COMMIT_SPEED had no effect", committing);
        }
    }
  n = repl_failover (r, standby, t % 2 == 0);
  g_assert_cmpint (n, ==, ev_int (last, "number"));
  k = check_replicas (r, last);
  assert_standby_clean (standby);
  assert_dir_only_replicas (r);
  g_test_message ("trial %u (%u disk%s, killed %s): checkpoint %" G_GINT64_FORMAT
                  ", %u writes in it, %.1f s", t, ndisks, ndisks > 1 ? "s" : "", how, n, k,
                  (g_get_monotonic_time () - t0) / 1e6);
  repl_free (r);
}

/* The primary dies at any moment: the replicas are always one acknowledged
 * checkpoint, never a mix, never one that was not acknowledged. */
static void
test_kill_primary (Fixture *f, gconstpointer data)
{
  Vm *standby = standby_start (f->rig, "standby");

  for (guint t = 0; t < KILL_PRIMARY_TRIALS; t++)
    kill_primary_trial (f, standby, t,
                        t == 0 ? KILL_AT_CHECKPOINT_START
                        : t == 1 ? KILL_AT_COMMIT_START : KILL_RANDOM,
                        t % 3 == 2 ? 2 : 1);
}

/* Two disks, a few checkpoints, status while replicating; the primary is killed
 * and failover gives one point in time across both disks. */
static void
test_two_disks (Fixture *f, gconstpointer data)
{
  Vm *standby = standby_start (f->rig, "standby");
  Repl *r = repl_new (f->rig, "primary", 2);
  g_autoptr(JsonNode) status = NULL;
  JsonObject *ev = NULL, *st, *last;

  r->writer = writer_start (f->rig, r->primary, 2);
  repl_start (r, standby, NULL);
  run_expect (r->run, "synced", 30000);
  for (int i = 0; i < 3; i++)
    ev = run_expect (r->run, "checkpoint", 10000);
  status = repl_status (r);
  st = json_node_get_object (status);
  g_assert_cmpstr (json_object_get_string_member_with_default (st, "state", ""), ==,
                   "replicating");
  g_assert_cmpint (ev_int (st, "checkpoint"), >=, ev_int (ev, "number"));
  g_assert_true (json_object_has_member (st, "lag-ms"));
  repl_kill_primary (r);
  last = repl_expect_primary_lost (r);
  g_assert_cmpint (repl_failover (r, standby, TRUE), ==, ev_int (last, "number"));
  check_replicas (r, last);
  assert_standby_clean (standby);
  assert_dir_only_replicas (r);
  repl_free (r);
}

/* The standby is killed while checkpoint N holds the primary paused: blkmig reports
 * degraded and exits 8, the primary runs on; failover without the standby gives
 * checkpoint N-1. */
static void
test_standby_dies_in_checkpoint (Fixture *f, gconstpointer data)
{
  static const char *const env[] = { "BLKMIG_TEST_CHECKPOINT_DELAY_MS", "500", NULL };
  Vm *standby = standby_start (f->rig, "standby");
  Repl *r = repl_new (f->rig, "primary", 2);
  g_autoptr(JsonNode) status = NULL;
  g_autofree char *vmstate = NULL;
  JsonObject *ev, *degraded, *last, *st;
  gint64 n;

  r->writer = writer_start (f->rig, r->primary, 2);
  repl_start (r, standby, env);
  run_expect (r->run, "synced", 30000);
  run_expect (r->run, "checkpoint", 10000);
  ev = run_expect (r->run, "checkpoint-start", 10000);
  n = ev_int (ev, "number");
  g_subprocess_force_exit (standby->proc);
  run_end_expect (r->run, 8);
  run_check_events (r->run, "replicate");
  degraded = run_last (r->run, "degraded");
  g_assert_nonnull (degraded);
  g_assert_cmpint (ev_int (degraded, "checkpoint"), ==, n - 1);
  g_assert_true (json_object_has_member (degraded, "message"));
  g_assert_null (run_last (r->run, "primary-lost"));
  last = run_last (r->run, "checkpoint");
  g_assert_nonnull (last);
  g_assert_cmpint (ev_int (last, "number"), ==, n - 1);
  sleep_ms (200);                       /* the guest's disk keeps taking writes */
  writer_join (r->writer, r->primary, TRUE);
  vmstate = vm_status (r->primary);
  g_assert_cmpstr (vmstate, ==, "running");
  status = repl_status (r);
  st = json_node_get_object (status);
  g_assert_cmpstr (json_object_get_string_member_with_default (st, "state", ""), ==, "degraded");
  g_assert_cmpint (ev_int (st, "checkpoint"), ==, n - 1);
  vm_stop (r->primary);
  repl_failover_crash (r, n - 1);
  check_replicas (r, last);
  assert_dir_only_replicas (r);
  repl_free (r);
}

/* The standby dies, 8 MiB more are written, a fresh standby is given: resync copies
 * about what changed since the last acknowledged checkpoint (not the disk), then
 * checkpoints go on; failover gives the new checkpoint. */
static void
test_resync (Fixture *f, gconstpointer data)
{
  Vm *standby = standby_start (f->rig, "standby");
  Vm *standby2;
  Repl *r = repl_new (f->rig, "primary", 1);
  JsonObject *ev, *degraded, *last, *resync, *lost;
  g_autoptr(GPtrArray) argv = g_ptr_array_new ();
  gint64 n;
  guint issued;
  guint64 written, bytes;

  r->writer = writer_start (f->rig, r->primary, 1);
  repl_start (r, standby, NULL);
  run_expect (r->run, "synced", 30000);
  run_expect (r->run, "checkpoint", 10000);
  g_subprocess_force_exit (standby->proc);
  run_end_expect (r->run, 8);
  run_check_events (r->run, "replicate");
  last = run_last (r->run, "checkpoint");
  degraded = run_last (r->run, "degraded");
  g_assert_nonnull (degraded);
  n = ev_int (last, "number");
  g_assert_cmpint (ev_int (degraded, "checkpoint"), ==, n);

  /* 8 MiB after the standby is gone, then the writer waits */
  g_mutex_lock (&r->writer->lock);
  issued = r->writer->writes->len;
  g_atomic_int_set (&r->writer->limit, issued + 128);
  g_mutex_unlock (&r->writer->lock);
  writer_wait_acked (r->writer, issued + 128);
  written = writer_bytes_issued_after (r->writer, ev_int (last, "paused-at-us"));

  standby2 = standby_start (f->rig, "standby2");
  g_ptr_array_add (argv, (char *) "replicate");
  g_ptr_array_add (argv, (char *) "resync");
  g_ptr_array_add (argv, (char *) "--id");
  g_ptr_array_add (argv, r->id);
  g_ptr_array_add (argv, (char *) "--primary");
  g_ptr_array_add (argv, r->primary->qmp_path);
  g_ptr_array_add (argv, (char *) "--standby");
  g_ptr_array_add (argv, standby2->qmp_path);
  g_ptr_array_add (argv, (char *) "--interval");
  g_ptr_array_add (argv, (char *) INTERVAL);
  g_ptr_array_add (argv, (char *) "--json");
  g_ptr_array_add (argv, NULL);
  run_free (r->run);
  r->run = run_spawnv (f->rig, NULL, TRUE, (const char *const *) argv->pdata);
  resync = run_expect (r->run, "resync", 30000);
  bytes = ev_int (resync, "bytes");
  g_test_message ("resync copied %" G_GUINT64_FORMAT " bytes; %" G_GUINT64_FORMAT
                  " were written since checkpoint %" G_GINT64_FORMAT " paused the primary",
                  bytes, written, n);
  g_assert_cmpint (ev_int (resync, "checkpoint"), ==, n);
  g_assert_cmpuint (bytes, <=, written * 6 / 5);
  g_atomic_int_set (&r->writer->limit, G_MAXINT);

  ev = run_expect (r->run, "checkpoint", 10000);
  g_assert_cmpint (ev_int (ev, "number"), >, n);
  repl_kill_primary (r);
  run_end_expect (r->run, 9);
  run_check_events (r->run, NULL);
  lost = run_last (r->run, "primary-lost");
  last = run_last (r->run, "checkpoint");
  g_assert_nonnull (lost);
  g_assert_cmpint (ev_int (lost, "checkpoint"), ==, ev_int (last, "number"));
  writer_join (r->writer, r->primary, FALSE);
  g_assert_cmpint (repl_failover (r, standby2, TRUE), ==, ev_int (last, "number"));
  check_replicas (r, last);
  assert_standby_clean (standby2);
  assert_dir_only_replicas (r);
  repl_free (r);
}

/* SIGTERM: exit 0, both sides as they were before, the replicas at the last
 * acknowledged checkpoint, no journal. */
static void
test_stop (Fixture *f, gconstpointer data)
{
  Vm *standby = standby_start (f->rig, "standby");
  Repl *r = repl_new (f->rig, "primary", 2);
  g_autofree char *out = NULL;
  JsonObject *last;
  guint delay;

  r->writer = writer_start (f->rig, r->primary, 2);
  repl_start (r, standby, NULL);
  run_expect (r->run, "synced", 30000);
  run_expect (r->run, "checkpoint", 10000);
  /* its control socket answers meanwhile (ctl cancel takes SIGTERM's path) */
  g_assert_cmpint (blkmig_run (&out, NULL, "ctl", r->id, "status", "--json", NULL), ==, 0);
  g_assert_nonnull (strstr (out, "\"command\":\"replicate\""));
  g_assert_nonnull (strstr (out, "\"state\":\"ready\""));
  run_expect (r->run, "checkpoint", 10000);
  delay = g_test_rand_int_range (0, INTERVAL_MS);
  sleep_ms (delay);
  g_subprocess_send_signal (r->run->proc, SIGTERM);
  run_end_expect (r->run, 0);
  run_check_events (r->run, "replicate");
  last = run_last (r->run, "checkpoint");
  g_assert_nonnull (last);
  sleep_ms (100);                       /* writes go on after the end */
  writer_join (r->writer, r->primary, TRUE);
  assert_primary_clean (r);
  assert_standby_clean (standby);
  assert_dir_only_replicas (r);
  assert_no_state (f->rig, r->id);
  g_test_message ("SIGTERM %u ms after a checkpoint", delay);
  check_replicas (r, last);
  repl_free (r);
}

/* Through the tunnel (--tunnel-command, its endpoint a command of its own that
 * leaves a mark): checkpoints and stop as without it. */
static void
test_tunnel (Fixture *f, gconstpointer data)
{
  Vm *standby = standby_start (f->rig, "standby");
  Repl *r = repl_new (f->rig, "primary", 1);
  g_autofree char *mark = rig_path (f->rig, "endpoint-ran");
  g_autofree char *command = g_strdup_printf ("sh -c 'touch %s && exec %s tunnel-endpoint "
                                              "--nbd-socket \"$0\"' {nbd-socket}", mark,
                                              g_getenv ("BLKMIG"));
  const char *const extra[] = { "--tunnel-command", command, NULL };
  JsonObject *last;

  r->extra = extra;
  r->writer = writer_start (f->rig, r->primary, 1);
  repl_start (r, standby, NULL);
  run_expect (r->run, "synced", 30000);
  run_expect (r->run, "checkpoint", 10000);
  run_expect (r->run, "checkpoint", 10000);
  g_assert_true (g_file_test (mark, G_FILE_TEST_EXISTS));
  g_subprocess_send_signal (r->run->proc, SIGTERM);
  run_end_expect (r->run, 0);
  run_check_events (r->run, "replicate");
  last = run_last (r->run, "checkpoint");
  writer_join (r->writer, r->primary, TRUE);
  assert_primary_clean (r);
  assert_standby_clean (standby);
  assert_dir_only_replicas (r);
  check_replicas (r, last);
  repl_free (r);
}

/* With --tls-creds: the standby's NBD server takes TLS only (its x509 object is
 * there while replicating), checkpoints and stop as without. */
static void
test_tls (Fixture *f, gconstpointer data)
{
  Vm *standby = standby_start (f->rig, "standby");
  Repl *r = repl_new (f->rig, "primary", 1);
  g_autofree char *certs = rig_path (f->rig, "certs");
  g_autofree char *make = g_test_build_filename (G_TEST_DIST, "integration", "make-certs.sh",
                                                 NULL);
  const char *const extra[] = { "--tls-creds", certs, NULL };
  const char *const mk[] = { "sh", make, certs, "127.0.0.1", NULL };
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonNode) objects = NULL;
  g_autofree char *tls = NULL;
  g_autofree char *text = NULL;
  int status = 0;
  JsonObject *last;

  g_spawn_sync (NULL, (char **) mk, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL,
                NULL, NULL, NULL, NULL, &status, &error);
  g_assert_no_error (error);
  g_assert_true (g_spawn_check_wait_status (status, NULL));
  r->extra = extra;
  r->writer = writer_start (f->rig, r->primary, 1);
  repl_start (r, standby, NULL);
  run_expect (r->run, "synced", 30000);
  run_expect (r->run, "checkpoint", 10000);
  tls = g_strdup_printf ("\"blkmig%.8st0\"", r->id);
  objects = vm_qmp (standby, "qom-list", "{\"path\": \"/objects\"}");
  text = json_to_string (objects, FALSE);
  if (strstr (text, tls) == NULL)
    g_error ("no TLS object %s on the standby: %s", tls, text);
  run_expect (r->run, "checkpoint", 10000);
  g_subprocess_send_signal (r->run->proc, SIGTERM);
  run_end_expect (r->run, 0);
  run_check_events (r->run, "replicate");
  last = run_last (r->run, "checkpoint");
  writer_join (r->writer, r->primary, TRUE);
  assert_primary_clean (r);
  assert_standby_clean (standby);
  json_node_unref (objects);
  objects = vm_qmp (standby, "qom-list", "{\"path\": \"/objects\"}");
  g_free (text);
  text = json_to_string (objects, FALSE);
  g_assert_null (strstr (text, tls));
  assert_dir_only_replicas (r);
  check_replicas (r, last);
  repl_free (r);
}

/* Collects the absolute paths under the members whose name mentions a layer. */
static void
collect_layer_paths (JsonNode *node, gboolean in_layers, GPtrArray *found)
{
  if (JSON_NODE_HOLDS_OBJECT (node))
    {
      JsonObject *obj = json_node_get_object (node);
      g_autoptr(GList) members = json_object_get_members (obj);

      for (GList *m = members; m != NULL; m = m->next)
        {
          JsonNode *child = json_object_get_member (obj, m->data);
          gboolean layers = in_layers || strstr (m->data, "layer") != NULL;

          if (layers && JSON_NODE_HOLDS_VALUE (child)
              && json_node_get_value_type (child) == G_TYPE_STRING
              && json_node_get_string (child)[0] == '/')
            g_ptr_array_add (found, child);
          else
            collect_layer_paths (child, layers, found);
        }
    }
  else if (JSON_NODE_HOLDS_ARRAY (node))
    {
      JsonArray *arr = json_node_get_array (node);

      for (guint i = 0; i < json_array_get_length (arr); i++)
        collect_layer_paths (json_array_get_element (arr, i), in_layers, found);
    }
}

/* A state file naming a file outside the replica directory as a layer: failover
 * refuses in one line and does not touch it; with the real state, stop cleans up. */
static void
test_hostile_state (Fixture *f, gconstpointer data)
{
  if (rig_first_pass_only ("hostile state files"))
    return;
  static const char passwd[] = "root:x:0:0:root:/root:/bin/bash\n"
                               "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n";
  Vm *standby = standby_start (f->rig, "standby");
  Repl *r = repl_new (f->rig, "primary", 1);
  g_autofree char *elsewhere = rig_path (f->rig, "elsewhere");
  g_autofree char *victim = g_build_filename (elsewhere, "passwd", NULL);
  g_autofree char *state = NULL;
  g_autofree char *real = NULL;
  g_autofree char *hostile = NULL;
  g_autofree char *after = NULL;
  g_autoptr(JsonNode) root = NULL;
  g_autoptr(JsonGenerator) gen = json_generator_new ();
  g_autoptr(GPtrArray) layers = g_ptr_array_new ();
  g_autoptr(GError) error = NULL;
  g_autofree char *replaced = NULL;
  GStatBuf before, now;
  Run *run;

  g_assert_cmpint (g_mkdir (elsewhere, 0700), ==, 0);
  g_assert_true (g_file_set_contents (victim, passwd, -1, NULL));
  g_assert_cmpint (g_stat (victim, &before), ==, 0);

  r->writer = writer_start (f->rig, r->primary, 1);
  repl_start (r, standby, NULL);
  run_expect (r->run, "synced", 30000);
  for (int i = 0; i < 3; i++)
    run_expect (r->run, "checkpoint", 10000);
  repl_kill_primary (r);
  repl_expect_primary_lost (r);

  state = g_strdup_printf ("%s/%s.replica", g_getenv ("BLKMIG_STATE_DIR"), r->id);
  if (!g_file_get_contents (state, &real, NULL, NULL))
    {
      g_autofree char *listing = state_dir_listing ();
      g_error ("no state file %s after the primary was lost; the state directory holds: %s",
               state, listing);
    }
  root = json_from_string (real, &error);
  g_assert_no_error (error);
  collect_layer_paths (root, FALSE, layers);
  if (layers->len == 0)
    g_error ("the state file names no layer file: %s", real);
  replaced = g_strdup (json_node_get_string (layers->pdata[0]));
  json_node_set_string (layers->pdata[0], victim);
  json_generator_set_root (gen, root);
  json_generator_set_pretty (gen, TRUE);
  hostile = json_generator_to_data (gen, NULL);
  g_assert_true (g_file_set_contents_full (state, hostile, -1, G_FILE_SET_CONTENTS_CONSISTENT,
                                           0600, NULL));
  g_test_message ("layer %s replaced by %s", replaced, victim);

  run = RUN_SYNC (f->rig, "replicate", "failover", "--id", r->id, "--standby",
                  standby->qmp_path);
  g_test_message ("failover: exit %d: %s", run->status, run->err);
  g_assert_cmpint (run->status, !=, 0);
  g_assert_true (g_str_has_prefix (run->err, "blkmig replicate"));
  g_assert_true (strchr (run->err, '\n') == run->err + strlen (run->err) - 1);
  run_free (run);
  g_assert_true (g_file_get_contents (victim, &after, NULL, NULL));
  g_assert_cmpstr (after, ==, passwd);
  g_assert_cmpint (g_stat (victim, &now), ==, 0);
  g_assert_cmpint (now.st_mtime, ==, before.st_mtime);
  g_assert_cmpint (now.st_size, ==, before.st_size);
  g_assert_cmpint (now.st_mode, ==, before.st_mode);

  /* the real state back: stop takes down what the lost replication left */
  g_assert_true (g_file_set_contents_full (state, real, -1, G_FILE_SET_CONTENTS_CONSISTENT,
                                           0600, NULL));
  run = RUN_SYNC (f->rig, "replicate", "stop", "--id", r->id, "--standby", standby->qmp_path);
  if (run->status != 0)
    g_error ("stop exited %d; stderr: %s", run->status, run->err);
  run_free (run);
  assert_standby_clean (standby);
  assert_dir_only_replicas (r);
  assert_no_state (f->rig, r->id);
  g_clear_pointer (&after, g_free);
  g_assert_true (g_file_get_contents (victim, &after, NULL, NULL));
  g_assert_cmpstr (after, ==, passwd);
  repl_free (r);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add ("/replicate/kill-primary", Fixture, NULL, fixture_setup, test_kill_primary,
              fixture_teardown);
  g_test_add ("/replicate/two-disks", Fixture, NULL, fixture_setup, test_two_disks,
              fixture_teardown);
  g_test_add ("/replicate/standby-dies-in-checkpoint", Fixture, NULL, fixture_setup,
              test_standby_dies_in_checkpoint, fixture_teardown);
  g_test_add ("/replicate/resync", Fixture, NULL, fixture_setup, test_resync,
              fixture_teardown);
  g_test_add ("/replicate/stop", Fixture, NULL, fixture_setup, test_stop, fixture_teardown);
  g_test_add ("/replicate/tunnel", Fixture, NULL, fixture_setup, test_tunnel, fixture_teardown);
  g_test_add ("/replicate/tls", Fixture, NULL, fixture_setup, test_tls, fixture_teardown);
  g_test_add ("/replicate/hostile-state", Fixture, NULL, fixture_setup, test_hostile_state,
              fixture_teardown);
  return g_test_run ();
}
