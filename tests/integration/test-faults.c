/* The fault matrix: a fault (destination killed, QMP or NBD connection lost, the
 * destination frozen or refusing writes, a signal, a refusal) injected at a known
 * phase of `blkmig migrate`.  Every cell checks the exit code and the message, that
 * the source runs untouched on its own images with nothing of blkmig's left, and
 * that rerunning the same migration then succeeds. */
#define _GNU_SOURCE  /* unshare */
#include <errno.h>
#include <glib/gstdio.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "common/async.h"
#include "tests/integration/harness.h"

typedef enum {
  FAULT_DST_KILL,       /* SIGKILL the destination QEMU */
  FAULT_CUT_SRC,        /* cut blkmig's QMP connection to the source */
  FAULT_CUT_DST,        /* cut blkmig's QMP connection to the destination */
  FAULT_NBD_STOP,       /* nbd-server-stop on the destination */
  FAULT_DST_FREEZE,     /* SIGSTOP the destination QEMU */
  FAULT_EIO,            /* the destination's target fails writes (blkdebug) */
  FAULT_ENOSPC,         /* the target is created on a full tmpfs */
  FAULT_SIGINT,         /* to blkmig */
  FAULT_SIGTERM,
  FAULT_WRONG_SIZE,     /* the destination's vdb is smaller */
  FAULT_NO_DISK,        /* the destination has no vdb */
  FAULT_FEATURE,        /* the source cookie asks for an unknown mandatory feature */
} Fault;

/* Where: a journal step (BLKMIG_TEST_PAUSE_AT), or MIRRORING (jobs running at
 * 1 MiB/s, not READY), or NULL (the fault is in the setup). */
#define MIRRORING "mirroring"

typedef struct {
  const char *name;
  Fault fault;
  const char *at;
  const char *mode;          /* migrate --mode */
  int exit_code;
  /* The last line of stderr: exactly, or (with prefix) starting with it. */
  const char *message;
  gboolean prefix;
  /* blkmig could not reach a side and says "run blkmig recover". */
  gboolean recover;
  /* ... and the last line also contains this */
  const char *also;
} Cell;

/* How long blkmig may take to end after a fault: --stall-timeout 3, reconnect 1 s,
 * and its bounded abort; beyond that it hangs. */
#define BLKMIG_BOUND_S 40

#define INTR "interrupted by a signal; what it had started was undone"
#define RECOVER "(a side was unreachable: run blkmig recover --id "

static const Cell cells[] = {
  /* 1. the destination QEMU dies */
  /* A dead destination took everything of ours with it: no recover needed. */
  { "dst-killed/prepare", FAULT_DST_KILL, "prepare", "live", 5,
    "blkmig migrate: prepare: destination: ", TRUE, FALSE, "QMP connection closed by QEMU" },
  { "dst-killed/mirroring", FAULT_DST_KILL, MIRRORING, "live", 6,
    "blkmig migrate: mirror: vd", TRUE, FALSE },
  /* checked before the source pauses: nothing is switched */
  { "dst-killed/ready", FAULT_DST_KILL, "switch", "live", 5,
    "blkmig migrate: switch: the destination stopped answering before the switch: ", TRUE,
    FALSE },
  /* cancelling the READY mirrors flushes them into the dead export */
  { "dst-killed/pre-switchover", FAULT_DST_KILL, "pre-switchover", "live", 6,
    "blkmig migrate: switch: vda: block job blkmig-", TRUE, FALSE },
  /* 2. blkmig's QMP connection to one side closes */
  /* 2. blkmig's QMP connection to one side closes: it cleans that side through a
   * new connection, so again no recover is needed */
  { "src-qmp-cut/prepare", FAULT_CUT_SRC, "prepare", "live", 5,
    "blkmig migrate: mirror: source: ", TRUE, FALSE, "QMP connection" },
  /* exit 5: docs/exit-codes.md, "the connection to a QEMU was lost" */
  { "src-qmp-cut/mirroring", FAULT_CUT_SRC, MIRRORING, "live", 5,
    "blkmig migrate: mirror: ", TRUE, FALSE, "QMP connection closed by QEMU" },
  { "src-qmp-cut/ready", FAULT_CUT_SRC, "switch", "live", 5,
    "blkmig migrate: switch: source: migrate-set-capabilities: QMP connection", TRUE, FALSE },
  { "dst-qmp-cut/prepare", FAULT_CUT_DST, "prepare", "live", 5,
    "blkmig migrate: prepare: destination: ", TRUE, FALSE, "QMP connection" },
  /* blkmig cannot finish the destination any more: it must not switch over */
  { "dst-qmp-cut/mirroring", FAULT_CUT_DST, MIRRORING, "live", 5,
    "blkmig migrate: ", TRUE, FALSE, "destination" },
  { "dst-qmp-cut/ready", FAULT_CUT_DST, "switch", "live", 5,
    "blkmig migrate: switch: the destination stopped answering before the switch: ", TRUE,
    FALSE },
  /* 3. the NBD server goes away */
  { "nbd-stopped/mirroring", FAULT_NBD_STOP, MIRRORING, "live", 6,
    "blkmig migrate: mirror: vd", TRUE, FALSE },
  { "nbd-stopped/ready", FAULT_NBD_STOP, "switch", "copy", 6,
    "blkmig migrate: switch: vd", TRUE, FALSE },
  /* 4. the destination freezes */
  /* a frozen QEMU neither answers nor lets go: blkmig gives up on it in bounded time
   * and leaves the journal for recover once it thaws */
  { "dst-frozen/ready", FAULT_DST_FREEZE, "switch", "live", 5,
    "blkmig migrate: switch: the destination stopped answering before the switch: ", TRUE,
    TRUE },
  /* 5. the target cannot be written */
  { "target-eio/mirroring", FAULT_EIO, NULL, "live", 6,
    "blkmig migrate: mirror: vda: block job blkmig-", TRUE, FALSE },
  { "target-enospc/mirroring", FAULT_ENOSPC, NULL, "copy", 6,
    "blkmig migrate: mirror: vd", TRUE, FALSE },
  /* 6. signals to blkmig */
  { "sigint/prepare", FAULT_SIGINT, "prepare", "live", 130, "blkmig migrate: " INTR },
  { "sigint/mirroring", FAULT_SIGINT, MIRRORING, "live", 130, "blkmig migrate: " INTR },
  { "sigint/ready", FAULT_SIGINT, "switch", "live", 130, "blkmig migrate: " INTR },
  { "sigint/pre-switchover", FAULT_SIGINT, "pre-switchover", "live", 130,
    "blkmig migrate: " INTR },
  /* SIGTERM takes SIGINT's path (util_cancel_on_signals): once, while mirroring */
  { "sigterm/mirroring", FAULT_SIGTERM, MIRRORING, "live", 130, "blkmig migrate: " INTR },
  /* 7. the destination refuses */
  { "refused/wrong-size", FAULT_WRONG_SIZE, NULL, "live", 4,
    "blkmig migrate: prepare: vdb: destination target is 16 MiB (16777216 bytes), source is "
    "32 MiB (33554432 bytes): remove or resize " },
  { "refused/no-such-disk", FAULT_NO_DISK, NULL, "live", 4,
    "blkmig migrate: prepare: vdb: the destination has no disk of that name (a live "
    "migration needs the destination VM's disks)" },
  { "refused/mandatory-feature", FAULT_FEATURE, NULL, "live", 3,
    "blkmig prepare: cookie: the source requires feature 'from-the-future', which this blkmig does "
    "not support" },
};

typedef struct {
  const Cell *cell;
  Rig *rig;
  char *src_vda, *src_vdb, *dst_vda, *dst_vdb;
  char *pristine_vda, *pristine_vdb;
  char *run_dir;             /* blkmig's XDG_RUNTIME_DIR: its private directories */
  char *create_dir;          /* --create-dir (a tmpfs for ENOSPC) */
  gboolean mounted;
  Vm *src, *dst;
  QmpProxy *proxy;
  guint generation;          /* destination QEMUs started so far */
} Fx;

/* Fails the cell with @fmt and returns from the enclosing gboolean function. */
#define CHECK(cond, ...) \
  G_STMT_START { if (!(cond)) { g_test_fail_printf (__VA_ARGS__); return FALSE; } } G_STMT_END

static void
fx_setup (Fx *fx, gconstpointer data)
{
  fx->cell = data;
  fx->rig = rig_new ();
  fx->run_dir = rig_path (fx->rig, "run");
  fx->create_dir = rig_path (fx->rig, "created");
  g_assert_cmpint (g_mkdir (fx->run_dir, 0700), ==, 0);
  g_assert_cmpint (g_mkdir (fx->create_dir, 0700), ==, 0);
  g_setenv ("XDG_RUNTIME_DIR", fx->run_dir, TRUE);
  fx->src_vda = rig_path (fx->rig, "src-vda.qcow2");
  fx->src_vdb = rig_path (fx->rig, "src-vdb.raw");
  fx->dst_vda = rig_path (fx->rig, "dst-vda.qcow2");
  fx->dst_vdb = rig_path (fx->rig, "dst-vdb.raw");
  fx->pristine_vda = rig_path (fx->rig, "pristine-vda.qcow2");
  fx->pristine_vdb = rig_path (fx->rig, "pristine-vdb.raw");
  /* 28 MiB on vda: at 1 MiB/s a mirror stays busy for the whole cell */
  img_create (fx->src_vda, "qcow2", "64M");
  img_write (fx->src_vda, "qcow2", 0x61, "0", "24M");
  img_write (fx->src_vda, "qcow2", 0x62, "48M", "4M");
  img_create (fx->src_vdb, "raw", "32M");
  img_write (fx->src_vdb, "raw", 0x11, "0", "4M");
  img_create (fx->dst_vda, "qcow2", "64M");
  img_create (fx->dst_vdb, "raw", fx->cell->fault == FAULT_WRONG_SIZE ? "16M" : "32M");
  file_copy_sparse (fx->src_vda, fx->pristine_vda);
  file_copy_sparse (fx->src_vdb, fx->pristine_vdb);
}

static void
fx_teardown (Fx *fx, gconstpointer data)
{
  g_clear_pointer (&fx->proxy, qmp_proxy_free);
  if (fx->dst != NULL && fx->dst->proc != NULL
      && g_subprocess_get_identifier (fx->dst->proc) != NULL)
    kill (atoi (g_subprocess_get_identifier (fx->dst->proc)), SIGCONT);
  for (guint i = 0; i < fx->rig->vms->len; i++)
    vm_stop (fx->rig->vms->pdata[i]);
  if (fx->mounted)
    umount2 (fx->create_dir, MNT_DETACH);
  rig_free (fx->rig);
  g_unsetenv ("XDG_RUNTIME_DIR");
  g_free (fx->src_vda);
  g_free (fx->src_vdb);
  g_free (fx->dst_vda);
  g_free (fx->dst_vdb);
  g_free (fx->pristine_vda);
  g_free (fx->pristine_vdb);
  g_free (fx->run_dir);
  g_free (fx->create_dir);
}

/* ---- the QEMUs ------------------------------------------------------------ */

static void
fx_start_src (Fx *fx)
{
  VmDisk disks[] = { { "vda", fx->src_vda, "qcow2" }, { "vdb", fx->src_vdb, "raw" }, { NULL } };

  fx->src = vm_start (fx->rig, "src", disks, NULL);
}

static gboolean
fx_dst_alive (Fx *fx)
{
  return fx->dst != NULL && fx->dst->qmp != NULL
         && qmp_client_get_state (fx->dst->qmp) == QMP_STATE_READY;
}

/* A new destination QEMU (the previous one stopped first: it holds the images). */
static void
fx_start_dst (Fx *fx, gboolean faulty)
{
  const Cell *c = fx->cell;
  VmDisk disks[] = { { "vda", fx->dst_vda, "qcow2" }, { "vdb", fx->dst_vdb, "raw" }, { NULL } };
  g_autofree char *name = g_strdup_printf ("dst%u", fx->generation++);
  const char *flags = g_str_equal (c->mode, "live") ? "incoming" : "paused nodevices";

  if (fx->dst != NULL)
    {
      if (fx->dst->proc != NULL && g_subprocess_get_identifier (fx->dst->proc) != NULL)
        kill (atoi (g_subprocess_get_identifier (fx->dst->proc)), SIGCONT);
      vm_stop (fx->dst);
    }
  if (faulty && c->fault == FAULT_NO_DISK)
    disks[1].id = NULL;
  if (c->fault == FAULT_ENOSPC)
    fx->dst = vm_start (fx->rig, name, NULL, "paused");   /* blkmig creates the targets */
  else if (faulty && c->fault == FAULT_EIO)
    fx->dst = vm_start_blkdebug (fx->rig, name, disks, flags, "vda",
                                 "inject-error.0.event=write_aio,inject-error.0.errno=5");
  else
    fx->dst = vm_start (fx->rig, name, disks, flags);
}

static gboolean
fx_status_is (Vm *vm, const char *want)
{
  g_autofree char *status = vm_status (vm);

  CHECK (g_str_equal (status, want), "%s is %s, not %s", vm->name, status, want);
  return TRUE;
}

static int
pid_of (GSubprocess *proc)
{
  const char *id = g_subprocess_get_identifier (proc);

  g_assert_nonnull (id);
  return atoi (id);
}

/* ---- faults --------------------------------------------------------------- */

static void
fx_mount_tmpfs (Fx *fx, const char *size)
{
  g_autofree char *opts = g_strdup_printf ("size=%s", size);

  if (mount ("tmpfs", fx->create_dir, "tmpfs", fx->mounted ? MS_REMOUNT : 0, opts) != 0)
    g_error ("mount -t tmpfs -o %s %s: %s", opts, fx->create_dir, g_strerror (errno));
  fx->mounted = TRUE;
}

static void
fx_inject (Fx *fx, GSubprocess *blkmig)
{
  switch (fx->cell->fault)
    {
    case FAULT_DST_KILL:
      g_subprocess_force_exit (fx->dst->proc);
      g_subprocess_wait (fx->dst->proc, NULL, NULL);
      break;
    case FAULT_CUT_SRC:
    case FAULT_CUT_DST:
      g_assert_cmpuint (qmp_proxy_cut (fx->proxy), ==, 1);
      break;
    case FAULT_NBD_STOP:
      {
        g_autoptr(JsonNode) ret = vm_qmp (fx->dst, "nbd-server-stop", NULL);
      }
      break;
    case FAULT_DST_FREEZE:
      kill (pid_of (fx->dst->proc), SIGSTOP);
      break;
    case FAULT_SIGINT:
      kill (pid_of (blkmig), SIGINT);
      break;
    case FAULT_SIGTERM:
      kill (pid_of (blkmig), SIGTERM);
      break;
    default:
      break;
    }
}

/* The source's block jobs copy at full speed from now on. */
static void
fx_lift_speed (Fx *fx)
{
  g_autoptr(JsonNode) jobs = vm_qmp (fx->src, "query-block-jobs", NULL);
  JsonArray *list = json_node_get_array (jobs);

  for (guint i = 0; i < json_array_get_length (list); i++)
    {
      g_autofree char *args = g_strdup_printf ("{\"device\":\"%s\",\"speed\":0}",
          json_object_get_string_member (json_array_get_object_element (list, i), "device"));
      g_autoptr(JsonNode) ret = vm_qmp_try (fx->src, "block-job-set-speed", args, NULL);
    }
}

/* ---- the checks ----------------------------------------------------------- */

static gboolean
fx_check_message (Fx *fx, int status, const char *err)
{
  const Cell *c = fx->cell;
  g_auto(GStrv) lines = g_strsplit (err, "\n", -1);
  guint n = g_strv_length (lines);
  const char *last = n >= 2 ? lines[n - 2] : "";

  CHECK (status == c->exit_code, "exit %d, expected %d; stderr:\n%s", status, c->exit_code, err);
  CHECK (n >= 2 && *lines[n - 1] == '\0', "stderr does not end with a line:\n%s", err);
  if (c->prefix)
    CHECK (g_str_has_prefix (last, c->message), "the last line does not start with\n  %s\n"
           "stderr:\n%s", c->message, err);
  else if (c->fault == FAULT_WRONG_SIZE)
    CHECK (g_str_has_prefix (last, c->message) && g_str_has_suffix (last, fx->dst_vdb),
           "the last line is not\n  %s%s\nstderr:\n%s", c->message, fx->dst_vdb, err);
  else
    CHECK (g_str_equal (last, c->message), "the last line is not\n  %s\nstderr:\n%s",
           c->message, err);
  if (c->also != NULL)
    CHECK (strstr (last, c->also) != NULL, "the last line does not contain \"%s\"; "
           "stderr:\n%s", c->also, err);
  if (c->recover)
    CHECK (strstr (last, RECOVER) != NULL && g_str_has_suffix (last, ")"),
           "no \"%s...)\" in the last line; stderr:\n%s", RECOVER, err);
  else
    CHECK (strstr (err, "recover") == NULL, "an unexpected recover hint; stderr:\n%s", err);
  return TRUE;
}

static gboolean
fx_dir_is_empty (const char *dir)
{
  g_autoptr(GDir) d = g_dir_open (dir, 0, NULL);
  const char *name = d != NULL ? g_dir_read_name (d) : NULL;

  if (name != NULL)
    g_test_message ("left in %s: %s", dir, name);
  return d != NULL && name == NULL;
}

/* The source runs untouched on its own images, nothing of blkmig's is left. */
static gboolean
fx_check_clean (Fx *fx)
{
  g_autofree char *vda = vm_disk_file (fx->src, "vda");
  g_autofree char *vdb = vm_disk_file (fx->src, "vdb");
  guint n;

  if (!fx_status_is (fx->src, "running"))
    return FALSE;
  CHECK (g_strcmp0 (vda, fx->src_vda) == 0, "the source's vda runs on %s", vda);
  CHECK (g_strcmp0 (vdb, fx->src_vdb) == 0, "the source's vdb runs on %s", vdb);
  CHECK ((n = vm_count_jobs (fx->src)) == 0, "%u block jobs left on the source", n);
  CHECK ((n = vm_count_blkmig_nodes (fx->src)) == 0, "%u blkmig nodes left on the source", n);
  if (fx_dst_alive (fx))
    {
      CHECK ((n = vm_count_exports (fx->dst)) == 0, "%u exports left on the destination", n);
      CHECK ((n = vm_count_blkmig_nodes (fx->dst)) == 0,
             "%u blkmig nodes left on the destination", n);
    }
  CHECK ((n = rig_count_journals (fx->rig)) == 0, "%u journals left, with no recover hint "
         "(the destination QEMU is %s)", n, fx_dst_alive (fx) ? "alive" : "gone");
  CHECK (fx_dir_is_empty (fx->run_dir), "blkmig left files in its runtime directory %s",
         fx->run_dir);
  CHECK (fx_dir_is_empty (fx->create_dir), "blkmig left files in --create-dir %s",
         fx->create_dir);
  CHECK (img_identical (fx->src_vda, fx->pristine_vda), "the source's vda changed");
  CHECK (img_identical (fx->src_vdb, fx->pristine_vdb), "the source's vdb changed");
  return TRUE;
}

/* blkmig said a side was unreachable: recover finishes the rollback. */
static gboolean
fx_recover (Fx *fx)
{
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;
  int status;
  guint n;

  CHECK ((n = rig_count_journals (fx->rig)) == 1, "%u journals after the failure, expected 1", n);
  status = blkmig_run (&out, &err, "recover", "--all", NULL);
  CHECK (status == 0 && strstr (out, "rolled back") != NULL,
         "recover --all: exit %d; stdout:\n%s\nstderr:\n%s", status, out, err);
  return TRUE;
}

/* The same migration again, on a destination without the fault. */
static gboolean
fx_rerun (Fx *fx)
{
  const Cell *c = fx->cell;
  const char *mode = c->mode;
  g_autofree char *err = NULL;
  g_autofree char *out = NULL;
  g_autofree char *dst_vda = NULL;
  g_autofree char *dst_vdb = NULL;
  int status;

  g_clear_pointer (&fx->proxy, qmp_proxy_free);
  if (c->fault == FAULT_WRONG_SIZE)
    {
      vm_stop (fx->dst);
      g_unlink (fx->dst_vdb);
      img_create (fx->dst_vdb, "raw", "32M");
    }
  if (c->fault == FAULT_ENOSPC)
    fx_mount_tmpfs (fx, "128M");
  fx_start_dst (fx, FALSE);
  if (c->fault == FAULT_ENOSPC)
    status = blkmig_run (&out, &err, "migrate", "--mode", mode, "--create-dir", fx->create_dir,
                         "--source", fx->src->qmp_path, "--dest", fx->dst->qmp_path, NULL);
  else
    status = blkmig_run (&out, &err, "migrate", "--mode", mode, "--source", fx->src->qmp_path,
                         "--dest", fx->dst->qmp_path, NULL);
  CHECK (status == 0, "the rerun failed: exit %d; stderr:\n%s", status, err);
  CHECK (g_str_has_prefix (out, "blkmig: "), "rerun stdout: %s", out);
  if (!fx_status_is (fx->src, g_str_equal (mode, "live") ? "postmigrate" : "running"))
    return FALSE;
  if (g_str_equal (mode, "live") && !fx_status_is (fx->dst, "running"))
    return FALSE;
  dst_vda = c->fault == FAULT_ENOSPC ? g_build_filename (fx->create_dir, "vda.qcow2", NULL)
                                     : g_strdup (fx->dst_vda);
  dst_vdb = c->fault == FAULT_ENOSPC ? g_build_filename (fx->create_dir, "vdb.raw", NULL)
                                     : g_strdup (fx->dst_vdb);
  CHECK (img_identical (fx->src_vda, dst_vda), "after the rerun vda differs");
  CHECK (img_identical (fx->src_vdb, dst_vdb), "after the rerun vdb differs");
  CHECK (rig_count_journals (fx->rig) == 0, "the rerun left a journal");
  return TRUE;
}

/* Polls until @proc ended, at most @seconds; its pipes hold its little output meanwhile. */
static gboolean
fx_wait_ended (GSubprocess *proc, int seconds)
{
  for (int i = 0; i < seconds * 20 && g_subprocess_get_identifier (proc) != NULL; i++)
    blkmig_sleep (50, NULL);
  return g_subprocess_get_identifier (proc) == NULL;
}

/* Until both disks' mirrors run (a fault between the two would hit the second
 * disk's NBD connect instead); FALSE (not an abort) when blkmig ends first. */
static gboolean
fx_wait_for_jobs (Fx *fx, GSubprocess *proc)
{
  for (int i = 0; i < 600; i++)
    {
      if (vm_count_jobs (fx->src) >= 2)
        return TRUE;
      if (g_subprocess_get_identifier (proc) == NULL)
        return FALSE;
      blkmig_sleep (50, NULL);
    }
  return FALSE;
}

/* Worth retrying as it is (docs/exit-codes.md): a peer or link that went away or
 * froze, a target that failed writes; not a refusal, full storage or a signal. */
static gboolean
fault_retryable (Fault fault)
{
  switch (fault)
    {
    case FAULT_DST_KILL: case FAULT_CUT_SRC: case FAULT_CUT_DST: case FAULT_NBD_STOP:
    case FAULT_DST_FREEZE: case FAULT_EIO:
      return TRUE;
    default:
      return FALSE;
    }
}

/* The final event is the error, with the exit code and the retryable flag. */
static gboolean
fx_check_error_event (Fx *fx, int status)
{
  g_autofree char *path = rig_path (fx->rig, "events.jsonl");
  g_autofree char *text = NULL;
  g_auto(GStrv) lines = NULL;
  g_autoptr(JsonNode) last = NULL;
  JsonObject *obj;
  guint n;

  if (fx->cell->fault == FAULT_FEATURE)
    return TRUE;  /* prepare has no events: its exit code 3 is never retryable */
  CHECK (g_file_get_contents (path, &text, NULL, NULL), "no events file");
  lines = g_strsplit (text, "\n", -1);
  n = g_strv_length (lines);
  CHECK (n >= 2 && (last = json_from_string (lines[n - 2], NULL)) != NULL
         && JSON_NODE_HOLDS_OBJECT (last), "no final event:\n%s", text);
  obj = json_node_get_object (last);
  CHECK (g_strcmp0 (json_object_get_string_member_with_default (obj, "event", ""), "error") == 0
         && json_object_get_int_member_with_default (obj, "exit-code", -1) == status,
         "the last event is not the error: %s", lines[n - 2]);
  CHECK (json_object_get_boolean_member_with_default (obj, "retryable", FALSE)
         == fault_retryable (fx->cell->fault)
         && json_object_has_member (obj, "retryable"),
         "retryable should be %s: %s", fault_retryable (fx->cell->fault) ? "true" : "false",
         lines[n - 2]);
  return TRUE;
}

/* ---- the cells ------------------------------------------------------------ */

static gboolean
fx_run_fault (Fx *fx, int *status, char **err)
{
  const Cell *c = fx->cell;
  g_autoptr(GSubprocess) proc = NULL;
  g_autoptr(GPtrArray) argv = g_ptr_array_new ();
  g_autofree char *proxy_path = rig_path (fx->rig, "proxy.qmp");
  g_autofree char *events = rig_path (fx->rig, "events.jsonl");
  const char *src_path = fx->src->qmp_path;
  const char *dst_path = fx->dst->qmp_path;
  gboolean mirroring = g_strcmp0 (c->at, MIRRORING) == 0;
  gboolean ended;

  if (c->fault == FAULT_CUT_SRC)
    fx->proxy = qmp_proxy_new (src_path, proxy_path), src_path = proxy_path;
  if (c->fault == FAULT_CUT_DST)
    fx->proxy = qmp_proxy_new (dst_path, proxy_path), dst_path = proxy_path;
  if (c->at != NULL && !mirroring)
    g_setenv ("BLKMIG_TEST_PAUSE_AT", c->at, TRUE);
  if (c->fault == FAULT_ENOSPC)
    proc = blkmig_spawn ("migrate", "--mode", c->mode, "--source", src_path, "--dest", dst_path,
                         "--create-dir", fx->create_dir, "--stall-timeout", "3",
                         "--nbd-reconnect-delay", "1", "--events", events, NULL);
  else
    /* --buf-size: QEMU's rate limiter then sleeps 0.25 s at a time, not 16 s */
    proc = blkmig_spawn ("migrate", "--mode", c->mode, "--source", src_path, "--dest", dst_path,
                         "--stall-timeout", "3", "--nbd-reconnect-delay", "1", "--events", events,
                         mirroring ? "--speed" : NULL, "1048576", "--buf-size", "262144", NULL);
  g_unsetenv ("BLKMIG_TEST_PAUSE_AT");
  if (mirroring)
    {
      if (!fx_wait_for_jobs (fx, proc))
        {
          gboolean early = g_subprocess_get_identifier (proc) == NULL;

          if (!early)
            g_subprocess_force_exit (proc);
          *status = blkmig_wait (proc, NULL, err);
          CHECK (FALSE, "%s; stderr:\n%s", early ? "blkmig ended before its mirrors started"
                                                : "the mirrors did not start within 30 s", *err);
        }
      fx_inject (fx, proc);
      if (c->fault == FAULT_CUT_DST)
        fx_lift_speed (fx);   /* blkmig does not notice: no need to wait 28 s */
    }
  else if (c->at != NULL)
    {
      proc_wait_stopped (proc);
      fx_inject (fx, proc);
      kill (pid_of (proc), SIGCONT);
    }
  ended = fx_wait_ended (proc, BLKMIG_BOUND_S);
  if (!ended)
    {
      if (c->fault == FAULT_DST_FREEZE)
        kill (pid_of (fx->dst->proc), SIGCONT);   /* then it ends */
      else
        g_subprocess_force_exit (proc);
    }
  *status = blkmig_wait (proc, NULL, err);
  if (c->fault == FAULT_DST_FREEZE)
    kill (pid_of (fx->dst->proc), SIGCONT);
  CHECK (ended, "blkmig hung: still running %d s after the fault (exit %d once %s); stderr:\n%s",
         BLKMIG_BOUND_S, *status, c->fault == FAULT_DST_FREEZE ? "the destination was resumed"
                                                            : "killed", *err);
  return TRUE;
}

/* begin, then prepare with a source cookie that asks for a feature from the future. */
static gboolean
fx_run_feature (Fx *fx, int *status, char **err)
{
  g_autofree char *c1 = rig_path (fx->rig, "source.cookie");
  g_autofree char *c1x = rig_path (fx->rig, "source-future.cookie");
  g_autofree char *c2 = rig_path (fx->rig, "dest.cookie");
  g_autofree char *sock = rig_path (fx->rig, "nbd.sock");
  g_autofree char *listen = g_strdup_printf ("unix:%s", sock);
  g_autofree char *text = NULL;
  g_autoptr(JsonParser) parser = json_parser_new ();
  g_autoptr(JsonNode) info = NULL;
  g_autoptr(GError) error = NULL;
  JsonObject *feature = json_object_new ();
  JsonArray *features;

  CHECK (blkmig_run (NULL, NULL, "begin", "--qmp", fx->src->qmp_path, "-o", c1, NULL) == 0,
         "begin failed");
  json_parser_load_from_file (parser, c1, &error);
  g_assert_no_error (error);
  features = json_object_get_array_member (json_node_get_object (json_parser_get_root (parser)),
                                           "features");
  json_object_set_string_member (feature, "name", "from-the-future");
  json_object_set_boolean_member (feature, "mandatory", TRUE);
  json_array_add_object_element (features, feature);
  text = json_to_string (json_parser_get_root (parser), TRUE);
  g_file_set_contents (c1x, text, -1, &error);
  g_assert_no_error (error);
  *status = blkmig_run (NULL, err, "prepare", "--qmp", fx->dst->qmp_path, "--listen", listen,
                        "-c", c1x, "-o", c2, NULL);
  /* Nothing started on the destination: no server socket, no incoming migration. */
  CHECK (!g_file_test (sock, G_FILE_TEST_EXISTS), "prepare left %s", sock);
  CHECK (!g_file_test (c2, G_FILE_TEST_EXISTS) || g_file_test (c2, G_FILE_TEST_IS_REGULAR),
         "bad output");
  info = vm_qmp (fx->dst, "query-migrate", NULL);
  CHECK (!json_object_has_member (json_node_get_object (info), "status"),
         "the destination's incoming migration was started");
  /* The source withdraws its offer (begin's journal), as hook-source.sh does. */
  CHECK (blkmig_run (NULL, NULL, "abort", "--qmp", fx->src->qmp_path, "-c", c1, NULL) == 0,
         "abort on the source failed");
  g_unlink (c1x);
  g_unlink (c1);
  g_unlink (c2);
  return TRUE;
}

/* Signals and refusals are blkmig's own doing, whatever the QEMU (rig_first_pass_only). */
static gboolean
cell_once (const Cell *c)
{
  return c->fault == FAULT_SIGINT || c->fault == FAULT_SIGTERM || c->fault == FAULT_WRONG_SIZE
         || c->fault == FAULT_NO_DISK || c->fault == FAULT_FEATURE;
}

static void
test_cell (Fx *fx, gconstpointer data)
{
  const Cell *c = fx->cell;
  g_autofree char *err = NULL;
  int status = -1;
  gint64 start = g_get_monotonic_time ();

  if (cell_once (c) && rig_first_pass_only ("blkmig's own handling of a signal or refusal"))
    return;

  if (c->fault == FAULT_ENOSPC)
    fx_mount_tmpfs (fx, "8M");
  fx_start_src (fx);
  fx_start_dst (fx, TRUE);
  if (!(c->fault == FAULT_FEATURE ? fx_run_feature (fx, &status, &err)
                                  : fx_run_fault (fx, &status, &err)))
    return;
  g_test_message ("%s: exit %d in %.1f s: %s", c->name, status,
                  (g_get_monotonic_time () - start) / 1e6, err);
  if (!fx_check_message (fx, status, err) || !fx_check_error_event (fx, status))
    return;
  if (c->recover && !fx_recover (fx))
    return;
  if (!fx_check_clean (fx))
    return;
  fx_rerun (fx);
}

/* ---- two lanes ------------------------------------------------------------ */

/* The cells run in two processes at once: most of a cell's time is spent waiting
 * (for QEMU, for blkmig's timeouts: dst-frozen alone waits out 10 s + 10 s), and
 * the cells share nothing (each has its own rig, QEMUs, state, runtime and mount
 * namespace).  The cells below run in a second test-faults process, the worker,
 * started with the same arguments (so the same -p/-s selection); this process
 * reports each of them as its own test, with the worker's verdict and messages. */
static const char *const worker_cells[] = {
  "dst-frozen/ready", "target-eio/mirroring", "target-enospc/mirroring", "nbd-stopped/ready",
  "sigint/ready", "sigint/pre-switchover", "sigterm/mirroring",
  "refused/wrong-size", "refused/no-such-disk", "refused/mandatory-feature",
};
#define LANE_ENV "BLKMIG_TEST_FAULTS_WORKER"

static GSubprocess *worker;
static char *worker_log;            /* the worker's TAP output */

static gboolean
in_worker_lane (const Cell *c)
{
  return g_strv_contains ((const char *const *) worker_cells, c->name);
}

static void
worker_child_setup (gpointer user_data)
{
  /* this process ends (say, at meson's timeout): the worker cleans up and ends too */
  prctl (PR_SET_PDEATHSIG, SIGTERM);
}

static void
worker_start (int argc, char **argv)
{
  g_autoptr(GSubprocessLauncher) launcher = g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_NONE);
  g_autoptr(GPtrArray) wargv = g_ptr_array_new ();
  g_autoptr(GError) error = NULL;
  g_autofree char *self = g_file_read_link ("/proc/self/exe", NULL);
  int fd = g_file_open_tmp ("blkmig-faults-worker-XXXXXX.tap", &worker_log, &error);

  g_assert_no_error (error);
  close (fd);
  g_ptr_array_add (wargv, self != NULL ? self : (char *) "/proc/self/exe");
  for (int i = 1; i < argc; i++)
    g_ptr_array_add (wargv, argv[i]);
  g_ptr_array_add (wargv, NULL);
  g_subprocess_launcher_setenv (launcher, LANE_ENV, "1", TRUE);
  g_subprocess_launcher_set_stdout_file_path (launcher, worker_log);
  g_subprocess_launcher_set_child_setup (launcher, worker_child_setup, NULL, NULL);
  worker = g_subprocess_launcher_spawnv (launcher, (const char *const *) wargv->pdata, &error);
  g_assert_no_error (error);
}

static gboolean
is_result_line (const char *line)
{
  const char *p = g_str_has_prefix (line, "not ok ") ? line + 7
                  : g_str_has_prefix (line, "ok ") ? line + 3 : NULL;

  return p != NULL && g_ascii_isdigit (*p);
}

/* The worker's result line for @path ("ok 3 /faults/x/y", "not ok ...", maybe with
 * " # SKIP ..."): its index in @lines, or -1. */
static int
worker_find_result (char **lines, const char *path)
{
  gsize n = strlen (path);

  for (int i = 0; lines[i] != NULL; i++)
    {
      const char *p = lines[i] + (g_str_has_prefix (lines[i], "not ") ? 7 : 3);

      if (!is_result_line (lines[i]))
        continue;
      p += strspn (p, "0123456789");
      if (*p == ' ' && strncmp (p + 1, path, n) == 0 && (p[1 + n] == ' ' || p[1 + n] == '\0'))
        return i;
    }
  return -1;
}

/* A cell of the worker's lane: waits for the worker's verdict on it (the worker
 * runs its cells in this process's order, so by the time this one is reached it
 * has mostly finished), repeats the worker's messages about it and takes the verdict. */
static void
test_worker_cell (gconstpointer data)
{
  const Cell *c = data;
  g_autofree char *path = g_strdup_printf ("/faults/%s", c->name);
  g_auto(GStrv) lines = NULL;
  const char *skip;
  int at = -1, from;
  gboolean ended = FALSE;
  gint64 start = g_get_monotonic_time ();

  /* a cell is bounded (BLKMIG_BOUND_S, the harness's 30 s waits): 10 min is a hang */
  for (int i = 0; i < 10 * 60 * 20 && at < 0 && !ended; i++)
    {
      g_autofree char *text = NULL;

      ended = g_subprocess_get_identifier (worker) == NULL;   /* then the log is complete */
      g_file_get_contents (worker_log, &text, NULL, NULL);
      g_clear_pointer (&lines, g_strfreev);
      lines = g_strsplit (text != NULL ? text : "", "\n", -1);
      at = worker_find_result (lines, path);
      if (at < 0 && !ended)
        blkmig_sleep (50, NULL);
    }
  if (at < 0)
    {
      g_autofree char *text = g_strjoinv ("\n", lines);

      g_test_fail_printf ("the worker process gave no result for %s (%s); its output:\n%s",
                          path, ended ? "it ended" : "it hangs", text);
      return;
    }
  g_test_message ("%s: the worker's verdict came %.1f s after this process asked for it",
                  c->name, (g_get_monotonic_time () - start) / 1e6);
  /* the messages since the worker's previous result, then the verdict */
  for (from = at; from > 0 && !is_result_line (lines[from - 1]); from--)
    ;
  for (int i = from; i < at; i++)
    if (g_str_has_prefix (lines[i], "# ") && !g_str_has_prefix (lines[i], "# Start of ")
        && !g_str_has_prefix (lines[i], "# End of ") && !g_str_has_prefix (lines[i], "# random seed"))
      g_test_message ("%s", lines[i] + 2);
  skip = strstr (lines[at], " # SKIP");
  if (g_str_has_prefix (lines[at], "not ok "))
    {
      /* the failure's message may go on over the next lines */
      g_autoptr(GString) text = g_string_new (lines[at]);

      for (int i = at + 1; lines[i] != NULL && !is_result_line (lines[i])
                           && !g_str_has_prefix (lines[i], "# Start of ")
                           && !g_str_has_prefix (lines[i], "# End of "); i++)
        g_string_append_printf (text, "\n%s", lines[i]);
      g_test_fail_printf ("failed in the worker process: %s", text->str);
    }
  else if (skip != NULL)
    g_test_skip (skip + strlen (" # SKIP"));
}

int
main (int argc, char **argv)
{
  g_autofree char **args = g_new0 (char *, argc + 2);
  g_autofree char **all_args = NULL;
  gboolean is_worker = g_getenv (LANE_ENV) != NULL;
  gboolean listing = FALSE;
  int all_argc;
  int status;

  /* --keep-going: a failing cell must not hide the cells after it. */
  memcpy (args, argv, argc * sizeof *argv);
  args[argc++] = (char *) "--keep-going";
  argv = args;
  all_argc = argc;
  all_args = g_memdup2 (args, (argc + 1) * sizeof *args);   /* g_test_init eats some */
  for (int i = 1; i < argc; i++)
    listing |= g_str_equal (argv[i], "-l");
  if (is_worker)
    setvbuf (stdout, NULL, _IOLBF, 0);   /* each result as it comes, for the other lane */
  g_test_init (&argc, &argv, NULL);
  /* A private mount namespace: the ENOSPC cell's tmpfs cannot outlive this process. */
  if (geteuid () == 0 && unshare (CLONE_NEWNS) == 0)
    mount (NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
  for (gsize i = 0; i < G_N_ELEMENTS (cells); i++)
    {
      g_autofree char *path = g_strdup_printf ("/faults/%s", cells[i].name);

      if (cells[i].fault == FAULT_ENOSPC && geteuid () != 0)
        continue;   /* mounting the small tmpfs needs root */
      if (is_worker && !in_worker_lane (&cells[i]))
        continue;
      if (!is_worker && !listing && in_worker_lane (&cells[i]))
        g_test_add_data_func (path, &cells[i], test_worker_cell);
      else
        g_test_add (path, Fx, &cells[i], fx_setup, test_cell, fx_teardown);
    }
  if (!is_worker && !listing)
    worker_start (all_argc, all_args);
  status = g_test_run ();
  if (worker != NULL)
    {
      g_subprocess_wait (worker, NULL, NULL);
      g_clear_object (&worker);
      g_unlink (worker_log);
      g_free (worker_log);
    }
  return status;
}
