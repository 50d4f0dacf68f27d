/* Integration tests of `blkmig snapshot` and `blkmig merge` on a real QEMU: live merges
 * of an internal and of the active layer while the guest writes, snapshots of two disks
 * in one transaction (and its all-or-nothing refusal), a kill after each journal step
 * followed by `blkmig recover --all`, and refused command lines. */
#include <glib/gstdio.h>
#include <signal.h>
#include <sys/wait.h>

#include "common/async.h"
#include "tests/integration/harness.h"

/* vda runs on top.qcow2 -> mid.qcow2 -> base.qcow2, each layer with its own pattern at
 * overlapping offsets; vdb is a plain qcow2.  ref.qcow2 is the chain flattened by
 * qemu-img before QEMU opened it; every write the test makes through the guest's disk
 * is made to it too, so whatever chain vda ends on must read exactly like it. */
typedef struct {
  Rig *rig;
  Vm *vm;
  char *base, *mid, *top, *ref;
  char *vdb;
} Chain;

#define MERGE_SPEED "8388608"  /* 8 MiB/s: an 8 MiB layer takes about a second */

/* ---- helpers ------------------------------------------------------------ */

static int
tool_status (const char *const *argv, char **out)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *err = NULL;
  int status = 0;

  g_spawn_sync (NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, out, &err,
                &status, &error);
  g_assert_no_error (error);
  if (g_test_verbose () && (!WIFEXITED (status) || WEXITSTATUS (status) != 0))
    g_printerr ("# %s: %s", argv[0], err);
  return WIFEXITED (status) ? WEXITSTATUS (status) : 128 + WTERMSIG (status);
}

static void
tool_ok (const char *const *argv)
{
  g_autofree char *out = NULL;

  g_assert_cmpint (tool_status (argv, &out), ==, 0);
}

static void
overlay_create (const char *path, const char *backing)
{
  tool_ok ((const char *const[]) { "qemu-img", "create", "-q", "-f", "qcow2", "-b", backing,
                                   "-F", "qcow2", path, NULL });
}

/* The backing file qemu-img reads from @path's header (NULL: none). */
static char *
img_backing (const char *path)
{
  g_autofree char *out = NULL;
  g_autoptr(JsonParser) parser = json_parser_new ();
  JsonObject *info;

  g_assert_cmpint (tool_status ((const char *const[]) { "qemu-img", "info", "-U", "--output=json",
                                                        path, NULL }, &out), ==, 0);
  g_assert_true (json_parser_load_from_data (parser, out, -1, NULL));
  info = json_node_get_object (json_parser_get_root (parser));
  return json_object_has_member (info, "backing-filename")
         ? g_strdup (json_object_get_string_member (info, "backing-filename")) : NULL;
}

/* Whether QEMU still holds @path open (its lock): qemu-img info without -U fails then. */
static gboolean
img_locked (const char *path)
{
  g_autofree char *out = NULL;

  return tool_status ((const char *const[]) { "qemu-img", "info", path, NULL }, &out) != 0;
}

static Chain *
chain_new (void)
{
  Chain *c = g_new0 (Chain, 1);
  VmDisk disks[] = { { "vda", NULL, "qcow2" }, { "vdb", NULL, "qcow2" }, { NULL } };

  c->rig = rig_new ();
  c->base = rig_path (c->rig, "base.qcow2");
  c->mid = rig_path (c->rig, "mid.qcow2");
  c->top = rig_path (c->rig, "top.qcow2");
  c->ref = rig_path (c->rig, "ref.qcow2");
  c->vdb = rig_path (c->rig, "vdb.qcow2");
  img_create (c->base, "qcow2", "32M");
  img_write (c->base, "qcow2", 0x11, "0", "12M");
  img_write (c->base, "qcow2", 0x12, "24M", "2M");
  overlay_create (c->mid, c->base);
  img_write (c->mid, "qcow2", 0x22, "4M", "8M");
  overlay_create (c->top, c->mid);
  img_write (c->top, "qcow2", 0x33, "8M", "8M");
  tool_ok ((const char *const[]) { "qemu-img", "convert", "-O", "qcow2", c->top, c->ref, NULL });
  img_create (c->vdb, "qcow2", "16M");
  img_write (c->vdb, "qcow2", 0x55, "0", "4M");
  disks[0].path = c->top;
  disks[1].path = c->vdb;
  c->vm = vm_start (c->rig, "vm", disks, NULL);
  return c;
}

static void
chain_free (Chain *c)
{
  rig_free (c->rig);
  g_free (c->base);
  g_free (c->mid);
  g_free (c->top);
  g_free (c->ref);
  g_free (c->vdb);
  g_free (c);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC (Chain, chain_free)

/* A write through vda's guest device, and the same write to the reference. */
static void
chain_write (Chain *c, int pattern, const char *offset, const char *len)
{
  vm_guest_write (c->vm, "vda", pattern, offset, len);
  img_write (c->ref, "qcow2", pattern, offset, len);
}

typedef struct {
  int pattern;
  const char *offset, *len;
} Write;

/* The status of the one block job @vm has ("running", "ready", ...). */
static char *
block_job_status (Vm *vm)
{
  g_autoptr(JsonNode) ret = vm_qmp (vm, "query-block-jobs", NULL);
  JsonArray *jobs = json_node_get_array (ret);

  g_assert_cmpuint (json_array_get_length (jobs), ==, 1);
  return g_strdup (json_object_get_string_member (json_array_get_object_element (jobs, 0),
                                                  "status"));
}

/* @writes through vda's guest device while blkmig's job copies (it still does after
 * the last one), then the same writes to the reference. */
static void
chain_write_during_job (Chain *c, const Write *writes, gsize n)
{
  g_autofree char *status = NULL;

  vm_wait_for_jobs (c->vm);
  for (gsize i = 0; i < n; i++)
    vm_guest_write (c->vm, "vda", writes[i].pattern, writes[i].offset, writes[i].len);
  status = block_job_status (c->vm);
  g_assert_cmpstr (status, ==, "running");
  for (gsize i = 0; i < n; i++)
    img_write (c->ref, "qcow2", writes[i].pattern, writes[i].offset, writes[i].len);
}

/* vda, through whatever chain it runs on now, reads like the reference: flushed
 * first, so the images on disk hold what QEMU holds. */
static void
chain_assert_data (Chain *c)
{
  g_autofree char *out = vm_hmp (c->vm, "qemu-io -d /machine/peripheral/vda/virtio-backend "
                                        "\"flush\"");
  g_autofree char *file = vm_disk_file (c->vm, "vda");

  g_assert_true (img_identical (file, c->ref));
}

/* The files of @disk's chain, the active layer first, from `blkmig list --json`. */
static GStrv
chain_files (Vm *vm, const char *disk)
{
  g_autofree char *out = NULL;
  g_autoptr(JsonParser) parser = json_parser_new ();
  g_autoptr(GStrvBuilder) files = g_strv_builder_new ();
  JsonArray *disks;

  g_assert_cmpint (blkmig_run (&out, NULL, "list", "--json", "--qmp", vm->qmp_path, NULL), ==, 0);
  g_assert_true (json_parser_load_from_data (parser, out, -1, NULL));
  disks = json_object_get_array_member (json_node_get_object (json_parser_get_root (parser)),
                                        "disks");
  for (guint i = 0; i < json_array_get_length (disks); i++)
    {
      JsonObject *d = json_array_get_object_element (disks, i);
      JsonArray *chain;

      if (!g_str_equal (json_object_get_string_member (d, "name"), disk))
        continue;
      chain = json_object_get_array_member (d, "chain");
      for (guint k = 0; k < json_array_get_length (chain); k++)
        g_strv_builder_add (files, json_object_get_string_member (
            json_array_get_object_element (chain, k), "file"));
      return g_strv_builder_end (files);
    }
  g_error ("blkmig list shows no disk %s", disk);
  return NULL;
}

/* @disk's chain is exactly the files given, the active layer first, and
 * query-block says the guest runs on the first. */
static void
assert_chain (Vm *vm, const char *disk, ...)
{
  g_auto(GStrv) files = chain_files (vm, disk);
  g_autofree char *root = vm_disk_file (vm, disk);
  g_autofree char *have = g_strjoinv (" -> ", files);
  g_autoptr(GStrvBuilder) builder = g_strv_builder_new ();
  g_auto(GStrv) want_files = NULL;
  g_autofree char *want = NULL;
  va_list ap;

  va_start (ap, disk);
  for (const char *f = va_arg (ap, const char *); f != NULL; f = va_arg (ap, const char *))
    g_strv_builder_add (builder, f);
  va_end (ap);
  want_files = g_strv_builder_end (builder);
  want = g_strjoinv (" -> ", want_files);
  g_assert_cmpstr (have, ==, want);
  g_assert_cmpstr (root, ==, want_files[0]);
}

static guint
count_block_jobs (Vm *vm)
{
  g_autoptr(JsonNode) ret = vm_qmp (vm, "query-block-jobs", NULL);

  return json_array_get_length (json_node_get_array (ret));
}

/* Entries in the rig's state directory: not only no journal, no temporary file either. */
static guint
count_state_entries (Rig *rig)
{
  g_autofree char *state = rig_path (rig, "state");
  g_autoptr(GDir) d = g_dir_open (state, 0, NULL);
  guint n = 0;

  while (d != NULL && g_dir_read_name (d) != NULL)
    n++;
  return n;
}

/* blkmig's private staging directories (UTIL_STAGING_PREFIX) left in the rig. */
static guint
count_staging (Rig *rig)
{
  g_autoptr(GDir) d = g_dir_open (rig->dir, 0, NULL);
  const char *name;
  guint n = 0;

  while (d != NULL && (name = g_dir_read_name (d)) != NULL)
    n += g_str_has_prefix (name, ".blkmig");
  return n;
}

/* Whether QEMU has a node named @node_name, or (@file) a node on that file. */
static gboolean
has_node (Vm *vm, const char *node_name, const char *file)
{
  g_autoptr(JsonNode) ret = vm_qmp (vm, "query-named-block-nodes", "{\"flat\":true}");
  JsonArray *nodes = json_node_get_array (ret);

  for (guint i = 0; i < json_array_get_length (nodes); i++)
    {
      JsonObject *node = json_array_get_object_element (nodes, i);

      if (g_strcmp0 (json_object_get_string_member (node, "node-name"), node_name) == 0
          || g_strcmp0 (json_object_get_string_member (node, "file"), file) == 0)
        {
          if (g_test_verbose ())
            g_printerr ("# node %s on %s\n", json_object_get_string_member (node, "node-name"),
                        json_object_get_string_member (node, "file"));
          return TRUE;
        }
    }
  return FALSE;
}

/* Nothing of blkmig's is left: no job, @blkmig_nodes nodes of its own (a snapshot's
 * overlays stay as the disks' active layers), no journal, no staging directory, and
 * the guest runs. */
static void
assert_clean (Chain *c, guint blkmig_nodes)
{
  g_autofree char *status = vm_status (c->vm);

  g_assert_cmpuint (count_block_jobs (c->vm), ==, 0);
  g_assert_cmpuint (vm_count_jobs (c->vm), ==, 0);
  g_assert_cmpuint (vm_count_blkmig_nodes (c->vm), ==, blkmig_nodes);
  g_assert_cmpuint (rig_count_journals (c->rig), ==, 0);
  g_assert_cmpuint (count_state_entries (c->rig), ==, 0);
  g_assert_cmpuint (count_staging (c->rig), ==, 0);
  g_assert_cmpstr (status, ==, "running");
}

/* A block job of someone else's on @node (a mirror into a null node, at 1 byte/s so
 * it keeps running): QEMU refuses other jobs and snapshots on that node meanwhile.
 * (Not a backup: its job sits on a filter above the node, which stays free.) */
static void
foreign_job_start (Vm *vm, const char *node, const char *size)
{
  g_autofree char *sink = g_strdup_printf ("{\"driver\":\"null-co\",\"node-name\":\"sink\","
                                           "\"size\":%s}", size);
  g_autofree char *mirror = g_strdup_printf ("{\"job-id\":\"foreign\",\"device\":\"%s\","
                                             "\"target\":\"sink\",\"sync\":\"full\","
                                             "\"speed\":1}", node);
  g_autoptr(JsonNode) r1 = vm_qmp (vm, "blockdev-add", sink);
  g_autoptr(JsonNode) r2 = vm_qmp (vm, "blockdev-mirror", mirror);
}

static void
foreign_job_stop (Vm *vm)
{
  g_autoptr(JsonNode) r1 = vm_qmp (vm, "block-job-cancel", "{\"device\":\"foreign\","
                                                           "\"force\":true}");
  g_autoptr(JsonNode) r2 = NULL;

  for (int i = 0; i < 300 && vm_count_jobs (vm) > 0; i++)
    blkmig_sleep (20, NULL);
  g_assert_cmpuint (vm_count_jobs (vm), ==, 0);
  r2 = vm_qmp (vm, "blockdev-del", "{\"node-name\":\"sink\"}");
}

/* The one line the command printed on stderr ends with "...\n" and is the only one. */
static void
assert_one_line (const char *err, const char *prefix)
{
  const char *end = strchr (err, '\n');

  g_assert_true (g_str_has_prefix (err, prefix));
  g_assert_nonnull (end);
  g_assert_cmpstr (end + 1, ==, "");
}

/* ---- 1. live merges while the guest writes ------------------------------- */

/* An internal merge (mid into base) and then an active one (top into base,
 * --delete-merged), each at a speed that keeps it running while the guest writes
 * through its own disk. */
static void
test_merge_internal_then_active (void)
{
  g_autoptr(Chain) c = chain_new ();
  g_autofree char *err = NULL;
  g_autofree char *err2 = NULL;
  g_autofree char *want = NULL;
  g_autofree char *backing = NULL;
  GSubprocess *proc;

  /* (a) --top mid: top now backs onto base */
  proc = blkmig_spawn ("merge", "--qmp", c->vm->qmp_path, "--disk", "vda", "--top", c->mid,
                       "--speed", MERGE_SPEED, NULL);
  chain_write_during_job (c, (const Write[]) {
    { 0x44, "2M", "1M" },                 /* over base's data */
    { 0x45, "9M", "2M" },                 /* over top's over mid's */
    { 0x46, "5M", "512k" },               /* over mid's, being merged */
  }, 3);
  g_assert_cmpint (blkmig_wait (proc, NULL, &err), ==, 0);
  g_object_unref (proc);
  want = g_strdup_printf ("blkmig: vda: merged %s into %s\n", c->mid, c->base);
  g_assert_true (g_str_has_suffix (err, want));
  assert_chain (c->vm, "vda", c->top, c->base, NULL);
  backing = img_backing (c->top);
  g_assert_cmpstr (backing, ==, c->base);
  g_assert_true (g_file_test (c->mid, G_FILE_TEST_EXISTS));  /* no --delete-merged */
  assert_clean (c, 0);
  chain_assert_data (c);

  /* (b) the active layer, top, into base: the guest then runs on base */
  g_clear_pointer (&want, g_free);
  proc = blkmig_spawn ("merge", "--qmp", c->vm->qmp_path, "--disk", "vda", "--delete-merged",
                       "--speed", MERGE_SPEED, NULL);
  chain_write_during_job (c, (const Write[]) {
    { 0x47, "10M", "1M" },                /* over top's, being merged */
    { 0x48, "23M", "2M" },                /* across the end of base's second range */
  }, 2);
  g_assert_cmpint (blkmig_wait (proc, NULL, &err2), ==, 0);
  g_object_unref (proc);
  want = g_strdup_printf ("blkmig: removed %s\nblkmig: vda: merged %s into %s; the guest now "
                          "runs on it\n", c->top, c->top, c->base);
  g_assert_true (g_str_has_suffix (err2, want));
  assert_chain (c->vm, "vda", c->base, NULL);
  g_assert_false (g_file_test (c->top, G_FILE_TEST_EXISTS));
  /* the -blockdev top node is released, and its file with it */
  g_assert_false (has_node (c->vm, "drive-vda", c->top));
  assert_clean (c, 0);
  chain_assert_data (c);
  chain_write (c, 0x49, "0", "1M");       /* the guest writes to base now */
  chain_assert_data (c);
}

/* A merge answers `blkmig ctl`: its status while it commits slowly (1 MiB/s), and
 * set-speed 0 lets it finish at once. */
static void
test_merge_ctl (void)
{
  g_autoptr(Chain) c = chain_new ();
  g_autoptr(GSubprocess) proc = blkmig_spawn ("merge", "--qmp", c->vm->qmp_path, "--disk",
                                              "vda", "--top", c->mid, "--speed", "1048576", NULL);
  g_autofree char *id = rig_wait_for_control (c->rig);
  g_autofree char *out = NULL;

  for (int i = 0; i < 300 && (out == NULL || strstr (out, "\"disks\":[]") != NULL); i++)
    {
      g_clear_pointer (&out, g_free);
      g_assert_cmpint (blkmig_run (&out, NULL, "ctl", id, "status", "--json", NULL), ==, 0);
      g_usleep (100 * 1000);
    }
  g_assert_nonnull (strstr (out, "\"command\":\"merge\",\"phase\":\"commit\""));
  g_assert_nonnull (strstr (out, "\"disk\":\"vda\""));
  g_assert_cmpint (blkmig_run (NULL, NULL, "ctl", id, "set-speed", "0", NULL), ==, 0);
  g_assert_cmpint (blkmig_wait (proc, NULL, NULL), ==, 0);
  assert_chain (c->vm, "vda", c->top, c->base, NULL);
  assert_clean (c, 0);
  chain_assert_data (c);
}

/* blkmig's own overlay (a named node) merged away: QEMU lets go of its file. */
static void
test_merge_snapshot_overlay_released (void)
{
  g_autoptr(Chain) c = chain_new ();
  g_autofree char *snap = rig_path (c->rig, "snap.qcow2");
  g_autofree char *err = NULL;
  g_autofree char *want = NULL;

  g_assert_cmpint (blkmig_run (NULL, NULL, "snapshot", "--qmp", c->vm->qmp_path, "--disk", "vda",
                               "--to", snap, NULL), ==, 0);
  assert_chain (c->vm, "vda", snap, c->top, c->mid, c->base, NULL);
  assert_clean (c, 1);
  chain_write (c, 0x66, "8M", "4M");
  chain_assert_data (c);
  g_assert_true (img_has_pattern (c->top, "qcow2", 0x33, "8M", "4M"));
  g_assert_cmpint (blkmig_run (NULL, &err, "merge", "--qmp", c->vm->qmp_path, "--disk", "vda",
                               NULL), ==, 0);
  want = g_strdup_printf ("blkmig: vda: merged %s into %s; the guest now runs on it\n", snap,
                          c->top);
  g_assert_true (g_str_has_suffix (err, want));
  assert_chain (c->vm, "vda", c->top, c->mid, c->base, NULL);
  assert_clean (c, 0);
  g_assert_true (g_file_test (snap, G_FILE_TEST_EXISTS));
  g_assert_false (img_locked (snap));
  chain_assert_data (c);
}

/* ---- 2. snapshots of two disks in one transaction ------------------------ */

static void
test_snapshot_two_disks (void)
{
  g_autoptr(Chain) c = chain_new ();
  g_autofree char *snap_a = rig_path (c->rig, "snap-a.qcow2");
  g_autofree char *snap_b = rig_path (c->rig, "snap-b.qcow2");
  g_autofree char *err = NULL;
  g_autofree char *want = NULL;
  g_autofree char *back_a = NULL;
  g_autofree char *back_b = NULL;

  g_assert_cmpint (blkmig_run (NULL, &err, "snapshot", "--qmp", c->vm->qmp_path,
                               "--disk", "vda", "--to", snap_a, "--disk", "vdb", "--to", snap_b,
                               NULL), ==, 0);
  want = g_strdup_printf ("blkmig: vda now writes to %s (backed by %s)\n"
                          "blkmig: vdb now writes to %s (backed by %s)\n",
                          snap_a, c->top, snap_b, c->vdb);
  g_assert_cmpstr (err, ==, want);
  assert_chain (c->vm, "vda", snap_a, c->top, c->mid, c->base, NULL);
  assert_chain (c->vm, "vdb", snap_b, c->vdb, NULL);
  back_a = img_backing (snap_a);
  back_b = img_backing (snap_b);
  g_assert_cmpstr (back_a, ==, c->top);
  g_assert_cmpstr (back_b, ==, c->vdb);
  assert_clean (c, 2);
  /* the guest's writes land in the overlays, the old images stay as they were */
  chain_write (c, 0x77, "0", "1M");
  vm_guest_write (c->vm, "vdb", 0x78, "0", "1M");
  chain_assert_data (c);
  g_assert_true (img_has_pattern (c->top, "qcow2", 0x33, "8M", "8M"));
  g_assert_true (img_has_pattern (c->vdb, "qcow2", 0x55, "0", "4M"));
  g_assert_true (img_has_pattern (snap_b, "qcow2", 0x78, "0", "1M"));
}

/* QEMU refuses the second disk's snapshot (a job runs on it) after blkmig made both
 * overlays: neither disk changes, both overlays go. */
static void
test_snapshot_refused_all_or_nothing (void)
{
  g_autoptr(Chain) c = chain_new ();
  g_autofree char *snap_a = rig_path (c->rig, "snap-a.qcow2");
  g_autofree char *snap_b = rig_path (c->rig, "snap-b.qcow2");
  g_autofree char *err = NULL;
  g_autoptr(GSubprocess) proc = NULL;

  g_setenv ("BLKMIG_TEST_PAUSE_AT", "transaction", TRUE);
  proc = blkmig_spawn ("snapshot", "--qmp", c->vm->qmp_path, "--disk", "vda", "--to", snap_a,
                       "--disk", "vdb", "--to", snap_b, NULL);
  g_unsetenv ("BLKMIG_TEST_PAUSE_AT");
  proc_wait_stopped (proc);
  g_assert_true (g_file_test (snap_a, G_FILE_TEST_EXISTS));
  g_assert_true (g_file_test (snap_b, G_FILE_TEST_EXISTS));
  g_assert_cmpuint (vm_count_blkmig_nodes (c->vm), ==, 2);
  foreign_job_start (c->vm, "drive-vdb", "16777216");
  g_subprocess_send_signal (proc, SIGCONT);
  g_assert_cmpint (blkmig_wait (proc, NULL, &err), ==, 5);
  assert_one_line (err, "blkmig snapshot: QEMU refused the snapshot (no disk changed): ");
  g_assert_nonnull (strstr (err, "vdb"));
  assert_chain (c->vm, "vda", c->top, c->mid, c->base, NULL);
  assert_chain (c->vm, "vdb", c->vdb, NULL);
  g_assert_false (g_file_test (snap_a, G_FILE_TEST_EXISTS));
  g_assert_false (g_file_test (snap_b, G_FILE_TEST_EXISTS));
  g_assert_cmpuint (vm_count_jobs (c->vm), ==, 1);  /* the foreign job is not blkmig's */
  foreign_job_stop (c->vm);
  assert_clean (c, 0);
  chain_assert_data (c);
}

/* ---- 3. killed after each journal step, then recover --all -------------- */

typedef struct {
  const char *command;       /* "snapshot", "merge" (active, --base base) or "merge-internal" */
  const char *step;          /* BLKMIG_TEST_KILL_AT; "copying": killed while the job copies */
  gboolean completes;        /* recover finishes it rather than rolling back */
} KillCase;

static const KillCase kill_cases[] = {
  { "snapshot", "snapshot", FALSE }, { "snapshot", "transaction", FALSE },
  { "merge", "commit", FALSE }, { "merge", "copying", FALSE }, { "merge", "superseded", TRUE },
  { "merge", "pivoted", TRUE }, { "merge", "committed", TRUE },
  { "merge-internal", "commit", FALSE }, { "merge-internal", "copying", FALSE },
  { "merge-internal", "committed", TRUE },
};

/* The command of @kc, killed at its step; returns its exit status. */
static int
run_killed (Chain *c, const KillCase *kc, const char *snap_a, const char *snap_b)
{
  gboolean copying = g_str_equal (kc->step, "copying");
  /* while copying, slowly: an 8 MiB layer takes 8 s, the kill comes long before */
  const char *speed = copying ? "1048576" : "0";
  g_autoptr(GSubprocess) proc = NULL;

  if (!copying)
    g_setenv ("BLKMIG_TEST_KILL_AT", kc->step, TRUE);
  if (g_str_equal (kc->command, "snapshot"))
    proc = blkmig_spawn ("snapshot", "-q", "--qmp", c->vm->qmp_path, "--disk", "vda",
                         "--to", snap_a, "--disk", "vdb", "--to", snap_b, NULL);
  else if (g_str_equal (kc->command, "merge-internal"))
    proc = blkmig_spawn ("merge", "-q", "--qmp", c->vm->qmp_path, "--disk", "vda",
                         "--top", c->mid, "--delete-merged", "--speed", speed, NULL);
  else
    proc = blkmig_spawn ("merge", "-q", "--qmp", c->vm->qmp_path, "--disk", "vda",
                         "--base", c->base, "--delete-merged", "--speed", speed, NULL);
  g_unsetenv ("BLKMIG_TEST_KILL_AT");
  if (copying)
    {
      chain_write_during_job (c, (const Write[]) { { 0x83, "9M", "1M" } }, 1);
      g_subprocess_send_signal (proc, SIGKILL);
    }
  return blkmig_wait (proc, NULL, NULL);
}

static void
test_kill_then_recover (gconstpointer data)
{
  const KillCase *kc = data;
  g_autoptr(Chain) c = chain_new ();
  g_autofree char *snap_a = rig_path (c->rig, "snap-a.qcow2");
  g_autofree char *snap_b = rig_path (c->rig, "snap-b.qcow2");
  g_autofree char *out = NULL;
  g_autofree char *again = NULL;
  g_autofree char *status = NULL;
  gboolean internal = g_str_equal (kc->command, "merge-internal");

  chain_write (c, 0x81, "6M", "4M");
  g_assert_cmpint (run_killed (c, kc, snap_a, snap_b), ==, 128 + SIGKILL);
  g_assert_cmpuint (rig_count_journals (c->rig), ==, 1);
  if (g_str_equal (kc->command, "snapshot"))
    {
      /* "snapshot": the staging directories are made; "transaction": the overlays
       * too (moved out of them), and opened as blkmig's nodes */
      gboolean made = g_str_equal (kc->step, "transaction");

      g_assert_cmpuint (count_staging (c->rig), ==, 2);
      g_assert_true (g_file_test (snap_a, G_FILE_TEST_EXISTS) == made);
      g_assert_true (g_file_test (snap_b, G_FILE_TEST_EXISTS) == made);
      g_assert_cmpuint (vm_count_blkmig_nodes (c->vm), ==, made ? 2 : 0);
    }
  status = vm_status (c->vm);
  /* the active merge pauses the guest for the pivot: killed then, it stays paused */
  g_assert_cmpstr (status, ==, g_str_equal (kc->command, "merge")
                               && (g_str_equal (kc->step, "superseded")
                                   || g_str_equal (kc->step, "pivoted")) ? "paused" : "running");

  if (g_str_equal (kc->step, "copying"))
    g_assert_cmpuint (vm_count_jobs (c->vm), ==, 1);
  g_assert_cmpint (blkmig_run (&out, NULL, "recover", "--all", NULL), ==, 0);
  g_assert_nonnull (strstr (out, kc->completes ? "had completed" : "rolled back"));
  assert_clean (c, 0);
  g_assert_cmpint (blkmig_run (&again, NULL, "recover", "--all", NULL), ==, 0);
  g_assert_cmpstr (again, ==, "recover: nothing to recover\n");

  g_assert_false (g_file_test (snap_a, G_FILE_TEST_EXISTS));
  g_assert_false (g_file_test (snap_b, G_FILE_TEST_EXISTS));
  if (!kc->completes)
    {
      assert_chain (c->vm, "vda", c->top, c->mid, c->base, NULL);
      assert_chain (c->vm, "vdb", c->vdb, NULL);
      g_assert_true (g_file_test (c->top, G_FILE_TEST_EXISTS));
      g_assert_true (g_file_test (c->mid, G_FILE_TEST_EXISTS));
      chain_assert_data (c);
      chain_write (c, 0x82, "14M", "4M");
      chain_assert_data (c);
    }
  else if (internal)
    {
      /* --delete-merged: recover removed what the killed merge had not */
      assert_chain (c->vm, "vda", c->top, c->base, NULL);
      g_assert_false (g_file_test (c->mid, G_FILE_TEST_EXISTS));
      chain_assert_data (c);
      chain_write (c, 0x82, "14M", "4M");
      chain_assert_data (c);
    }
  else
    {
      assert_chain (c->vm, "vda", c->base, NULL);
      g_assert_false (g_file_test (c->top, G_FILE_TEST_EXISTS));
      g_assert_false (g_file_test (c->mid, G_FILE_TEST_EXISTS));
      g_assert_false (has_node (c->vm, "drive-vda", c->top));
      chain_assert_data (c);
      chain_write (c, 0x82, "14M", "4M");
      chain_assert_data (c);
    }
}

/* ---- 4. refused command lines and disks: one line, nothing changed ------- */

/* Runs blkmig with the arguments after @want, expecting exit @code and exactly the
 * line @want on stderr. */
#define assert_refused(code, want, ...)                                                  \
  G_STMT_START {                                                                         \
    g_autofree char *err_ = NULL;                                                        \
    g_assert_cmpint (blkmig_run (NULL, &err_, __VA_ARGS__, NULL), ==, (code));           \
    g_assert_cmpstr (err_, ==, (want));                                                  \
  } G_STMT_END

/* Nothing changed: the chains as they were, the data as it was, no journal. */
static void
assert_unchanged (Chain *c, guint foreign_jobs)
{
  assert_chain (c->vm, "vda", c->top, c->mid, c->base, NULL);
  assert_chain (c->vm, "vdb", c->vdb, NULL);
  g_assert_cmpuint (vm_count_jobs (c->vm), ==, foreign_jobs);
  g_assert_cmpuint (vm_count_blkmig_nodes (c->vm), ==, 0);
  g_assert_cmpuint (rig_count_journals (c->rig), ==, 0);
  g_assert_cmpuint (count_state_entries (c->rig), ==, 0);
  g_assert_cmpuint (count_staging (c->rig), ==, 0);
}

static void
test_refused (void)
{
  g_autoptr(Chain) c = chain_new ();
  g_autofree char *snap = rig_path (c->rig, "snap.qcow2");
  g_autofree char *snap_b = rig_path (c->rig, "snap-b.qcow2");
  g_autofree char *taken = rig_path (c->rig, "taken.qcow2");
  g_autofree char *taken_text = NULL;
  g_autofree char *want = NULL;
  const char *qmp = c->vm->qmp_path;

  g_assert_true (g_file_set_contents (taken, "not an image\n", -1, NULL));

  want = g_strdup_printf ("blkmig merge: --top nosuch is not in vda's chain (%s -> %s -> %s)\n",
                          c->top, c->mid, c->base);
  assert_refused (4, want, "merge", "--qmp", qmp, "--disk", "vda", "--top", "nosuch");
  g_free (want);
  want = g_strdup_printf ("blkmig merge: --base %s is not below --top in vda's chain\n", c->top);
  assert_refused (4, want, "merge", "--qmp", qmp, "--disk", "vda", "--top", c->mid, "--base",
                  c->top);
  g_free (want);
  want = g_strdup_printf ("blkmig merge: --top %s is the bottom of vda's chain: it has no "
                          "backing file to merge into\n", c->base);
  assert_refused (4, want, "merge", "--qmp", qmp, "--disk", "vda", "--top", c->base);
  assert_refused (4, "blkmig merge: vdb has no backing file: there is nothing to merge\n",
                  "merge", "--qmp", qmp, "--disk", "vdb");
  assert_unchanged (c, 0);

  assert_refused (2, "blkmig snapshot: --format raw cannot have a backing file: an overlay "
                  "must be qcow2\n", "snapshot", "--qmp", qmp, "--disk", "vda", "--to", snap,
                  "--format", "raw");
  g_free (want);
  want = g_strdup_printf ("blkmig snapshot: vda: %s already exists; snapshot creates its "
                          "overlay\n", taken);
  assert_refused (4, want, "snapshot", "--qmp", qmp, "--disk", "vda", "--to", taken);
  g_assert_true (g_file_get_contents (taken, &taken_text, NULL, NULL));
  g_assert_cmpstr (taken_text, ==, "not an image\n");
  assert_refused (2, "blkmig snapshot: give one --to per --disk (2 --disk, 1 --to)\n",
                  "snapshot", "--qmp", qmp, "--disk", "vda", "--disk", "vdb", "--to", snap);
  g_assert_false (g_file_test (snap, G_FILE_TEST_EXISTS));
  assert_unchanged (c, 0);

  /* a job of someone else's on vda: QEMU refuses; blkmig leaves that job alone */
  foreign_job_start (c->vm, "drive-vda", "33554432");
  {
    g_autofree char *err = NULL;

    g_assert_cmpint (blkmig_run (NULL, &err, "merge", "--qmp", qmp, "--disk", "vda", NULL), ==, 5);
    assert_one_line (err, "blkmig merge: vda: QEMU refused the merge (nothing changed): ");
    g_clear_pointer (&err, g_free);
    g_assert_cmpint (blkmig_run (NULL, &err, "merge", "--qmp", qmp, "--disk", "vda", "--top",
                                 c->mid, NULL), ==, 5);
    assert_one_line (err, "blkmig merge: vda: QEMU refused the merge (nothing changed): ");
    g_clear_pointer (&err, g_free);
    g_assert_cmpint (blkmig_run (NULL, &err, "snapshot", "--qmp", qmp, "--disk", "vdb", "--to",
                                 snap_b, "--disk", "vda", "--to", snap, NULL), ==, 5);
    assert_one_line (err, "blkmig snapshot: QEMU refused the snapshot (no disk changed): ");
    g_assert_nonnull (strstr (err, "drive-vda"));
  }
  g_assert_false (g_file_test (snap, G_FILE_TEST_EXISTS));
  g_assert_false (g_file_test (snap_b, G_FILE_TEST_EXISTS));
  assert_unchanged (c, 1);
  foreign_job_stop (c->vm);
  assert_clean (c, 0);
  chain_assert_data (c);
}

/* -drive with a relative file name: QEMU reports the leaf as "top.qcow2", which a
 * crash journal and an overlay's header cannot name reliably; both refuse. */
static void
test_refused_relative (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *base = rig_path (rig, "base.qcow2");
  g_autofree char *top = rig_path (rig, "top.qcow2");
  g_autofree char *snap = rig_path (rig, "snap.qcow2");
  VmDisk disks[] = { { "vda", top, "qcow2" }, { NULL } };
  Vm *vm;

  img_create (base, "qcow2", "16M");
  overlay_create (top, base);
  vm = vm_start (rig, "vm", disks, "drive,relative");
  assert_refused (4, "blkmig merge: vda: layer 'top.qcow2' has no plain absolute file name, "
                  "which the merge's journal needs to find it after a crash\n",
                  "merge", "--qmp", vm->qmp_path, "--disk", "vda");
  assert_refused (4, "blkmig snapshot: vda: its image 'top.qcow2' is not a plain absolute file "
                  "name, which an overlay needs to name its backing file\n",
                  "snapshot", "--qmp", vm->qmp_path, "--disk", "vda", "--to", snap);
  g_assert_false (g_file_test (snap, G_FILE_TEST_EXISTS));
  g_assert_cmpuint (vm_count_jobs (vm), ==, 0);
  g_assert_cmpuint (vm_count_blkmig_nodes (vm), ==, 0);
  g_assert_cmpuint (rig_count_journals (rig), ==, 0);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/merge/internal-then-active", test_merge_internal_then_active);
  g_test_add_func ("/merge/ctl", test_merge_ctl);
  g_test_add_func ("/merge/snapshot-overlay-released", test_merge_snapshot_overlay_released);
  g_test_add_func ("/snapshot/two-disks", test_snapshot_two_disks);
  g_test_add_func ("/snapshot/refused-all-or-nothing", test_snapshot_refused_all_or_nothing);
  for (gsize i = 0; i < G_N_ELEMENTS (kill_cases); i++)
    {
      g_autofree char *path = g_strdup_printf ("/recover/%s/killed-at-%s", kill_cases[i].command,
                                               kill_cases[i].step);
      g_test_add_data_func (path, &kill_cases[i], test_kill_then_recover);
    }
  g_test_add_func ("/refused", test_refused);
  g_test_add_func ("/refused/relative-names", test_refused_relative);
  return g_test_run ();
}
