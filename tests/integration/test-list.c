/* Integration tests of `blkmig list`: disks, backing chains and block jobs, as text and JSON. */
#include <sys/wait.h>

#include "src/util.h"
#include "tests/integration/harness.h"

/* The disk table's row layout while every cell fits its column's minimum width. */
#define ROW_FORMAT "%-6s  %-12s  %-6s  %10s  %10s  %-8s  %s\n"

typedef struct {
  Rig *rig;
  Vm *vm;
  char *base;           /* the bottom of vda's chain */
  char *mid;            /* vda's backing file, over base */
  char *top;            /* vda: qcow2 over mid */
  char *raw;            /* vdb */
} Fixture;

static void
run_ok (const char *const *argv)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *err = NULL;
  int status = 0;

  g_spawn_sync (NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL,
                NULL, NULL, NULL, &err, &status, &error);
  g_assert_no_error (error);
  if (!WIFEXITED (status) || WEXITSTATUS (status) != 0)
    g_error ("%s failed: %s", argv[0], err);
}

static void
fixture_set_up (Fixture *f, gconstpointer data)
{
  VmDisk disks[] = { { "vda", NULL, "qcow2" }, { "vdb", NULL, "raw" }, { NULL } };

  f->rig = rig_new ();
  f->base = rig_path (f->rig, "base.qcow2");
  f->mid = rig_path (f->rig, "mid.qcow2");
  f->top = rig_path (f->rig, "top.qcow2");
  f->raw = rig_path (f->rig, "vdb.raw");
  img_create (f->base, "qcow2", "64M");
  img_write (f->base, "qcow2", 0xab, "0", "1M");
  run_ok ((const char *const[]) { "qemu-img", "create", "-q", "-f", "qcow2", "-b", f->base,
                                  "-F", "qcow2", f->mid, NULL });
  run_ok ((const char *const[]) { "qemu-img", "create", "-q", "-f", "qcow2", "-b", f->mid,
                                  "-F", "qcow2", f->top, NULL });
  img_create (f->raw, "raw", "16M");
  img_write (f->raw, "raw", 0xcd, "0", "8M");
  disks[0].path = f->top;
  disks[1].path = f->raw;
  f->vm = vm_start (f->rig, "vm", disks, NULL);
}

static void
fixture_tear_down (Fixture *f, gconstpointer data)
{
  g_free (f->base);
  g_free (f->mid);
  g_free (f->top);
  g_free (f->raw);
  rig_free (f->rig);
}

/* The allocation QEMU reports for the disk whose device is @id. */
static gint64
actual_size (Vm *vm, const char *id)
{
  g_autoptr(JsonNode) ret = vm_qmp (vm, "query-block", NULL);
  JsonArray *list = json_node_get_array (ret);
  g_autofree char *suffix = g_strdup_printf ("/%s/virtio-backend", id);

  for (guint i = 0; i < json_array_get_length (list); i++)
    {
      JsonObject *entry = json_array_get_object_element (list, i);
      JsonObject *inserted = json_object_get_object_member (entry, "inserted");
      if (g_str_has_suffix (json_object_get_string_member (entry, "qdev"), suffix))
        return json_object_get_int_member (json_object_get_object_member (inserted, "image"),
                                           "actual-size");
    }
  g_assert_not_reached ();
  return -1;
}

/* The name QEMU gave the format node that opened @file (asked here, not through blkmig). */
static char *
node_of (Vm *vm, const char *file)
{
  g_autoptr(JsonNode) ret = vm_qmp (vm, "query-named-block-nodes", "{\"flat\":true}");
  JsonArray *list = json_node_get_array (ret);

  for (guint i = 0; i < json_array_get_length (list); i++)
    {
      JsonObject *node = json_array_get_object_element (list, i);
      if (g_str_equal (json_object_get_string_member (node, "file"), file)
          && g_str_equal (json_object_get_string_member (node, "drv"), "qcow2"))
        return g_strdup (json_object_get_string_member (node, "node-name"));
    }
  g_error ("QEMU has no qcow2 node for %s", file);
  return NULL;
}

static char *
disk_row (Vm *vm, const char *id, const char *format, const char *size, const char *file)
{
  g_autofree char *node = g_strdup_printf ("drive-%s", id);
  g_autofree char *allocated = util_human_size (actual_size (vm, id));

  return g_strdup_printf (ROW_FORMAT, id, node, format, size, allocated, id, file);
}

static void
test_list_human (Fixture *f, gconstpointer data)
{
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;
  g_autofree char *vda = disk_row (f->vm, "vda", "qcow2", "64 MiB", f->top);
  g_autofree char *vdb = disk_row (f->vm, "vdb", "raw", "16 MiB", f->raw);
  g_autofree char *mid_node = node_of (f->vm, f->mid);
  g_autofree char *base_node = node_of (f->vm, f->base);
  g_autofree char *expected = NULL;

  /* the whole chain, three layers deep, each with its node name */
  expected = g_strdup_printf (ROW_FORMAT "%s  backing: %s [node %s] -> %s [node %s]\n%s\n"
                              "Block jobs: none\n",
                              "NAME", "NODE", "FORMAT", "SIZE", "ALLOCATED", "DEVICE", "FILE",
                              vda, f->mid, mid_node, f->base, base_node, vdb);
  g_assert_cmpint (blkmig_run (&out, &err, "list", "--qmp", f->vm->qmp_path, NULL), ==, 0);
  g_assert_cmpstr (err, ==, "");
  g_assert_cmpstr (out, ==, expected);
}

static JsonObject *
disk_at (JsonObject *doc, guint i)
{
  return json_array_get_object_element (json_object_get_array_member (doc, "disks"), i);
}

static void
assert_layer (JsonArray *chain, guint i, const char *file, const char *node, const char *format)
{
  JsonObject *layer = json_array_get_object_element (chain, i);

  g_assert_cmpstr (json_object_get_string_member (layer, "file"), ==, file);
  g_assert_cmpstr (json_object_get_string_member (layer, "node"), ==, node);
  g_assert_cmpstr (json_object_get_string_member (layer, "format"), ==, format);
}

/* vda: top over mid over base; vdb: no backing */
static void
assert_chain (Fixture *f, JsonObject *vda, JsonObject *vdb)
{
  g_autofree char *mid_node = node_of (f->vm, f->mid);
  g_autofree char *base_node = node_of (f->vm, f->base);
  JsonArray *chain = json_object_get_array_member (vda, "chain");

  g_assert_cmpuint (json_array_get_length (chain), ==, 3);
  assert_layer (chain, 0, f->top, "drive-vda", "qcow2");
  assert_layer (chain, 1, f->mid, mid_node, "qcow2");
  assert_layer (chain, 2, f->base, base_node, "qcow2");
  chain = json_object_get_array_member (vdb, "chain");
  g_assert_cmpuint (json_array_get_length (chain), ==, 1);
  assert_layer (chain, 0, f->raw, "drive-vdb", "raw");
}

static void
assert_disk (JsonObject *disk, const char *name, const char *format, gint64 size,
             const char *file, const char *backing)
{
  g_autofree char *node = g_strdup_printf ("drive-%s", name);
  JsonArray *chain = json_object_get_array_member (disk, "backing");

  g_assert_cmpstr (json_object_get_string_member (disk, "name"), ==, name);
  g_assert_cmpstr (json_object_get_string_member (disk, "node"), ==, node);
  g_assert_cmpstr (json_object_get_string_member (disk, "format"), ==, format);
  g_assert_cmpint (json_object_get_int_member (disk, "virtual-size"), ==, size);
  g_assert_cmpint (json_object_get_int_member (disk, "allocated"), >, 0);
  g_assert_cmpstr (json_object_get_string_member (disk, "device"), ==, name);
  g_assert_cmpstr (json_object_get_string_member (disk, "file"), ==, file);
  g_assert_cmpuint (json_array_get_length (chain), ==, backing != NULL ? 2 : 0);
  if (backing != NULL)
    g_assert_cmpstr (json_array_get_string_element (chain, 0), ==, backing);
}

/* Runs `blkmig list --json` and parses its one document. */
static JsonNode *
list_json (Vm *vm)
{
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;
  g_autoptr(GError) error = NULL;
  JsonNode *doc;

  g_assert_cmpint (blkmig_run (&out, &err, "list", "--qmp", vm->qmp_path, "--json", NULL),
                   ==, 0);
  g_assert_cmpstr (err, ==, "");
  g_assert_true (g_str_has_prefix (out, "{\n") && g_str_has_suffix (out, "}\n"));
  doc = json_from_string (out, &error);
  g_assert_no_error (error);
  g_assert_true (JSON_NODE_HOLDS_OBJECT (doc));
  return doc;
}

static void
test_list_json (Fixture *f, gconstpointer data)
{
  g_autoptr(JsonNode) node = list_json (f->vm);
  JsonObject *doc = json_node_get_object (node);
  g_autoptr(GList) keys = json_object_get_members (doc);

  g_assert_cmpstr (g_list_nth_data (keys, 0), ==, "version");
  g_assert_cmpstr (g_list_nth_data (keys, 1), ==, "disks");
  g_assert_cmpstr (g_list_nth_data (keys, 2), ==, "jobs");
  g_assert_cmpint (json_object_get_int_member (doc, "version"), ==, 1);
  g_assert_cmpuint (json_array_get_length (json_object_get_array_member (doc, "disks")), ==, 2);
  assert_disk (disk_at (doc, 0), "vda", "qcow2", 64 << 20, f->top, f->mid);
  assert_disk (disk_at (doc, 1), "vdb", "raw", 16 << 20, f->raw, NULL);
  assert_chain (f, disk_at (doc, 0), disk_at (doc, 1));
  g_assert_cmpint (json_object_get_int_member (disk_at (doc, 0), "allocated"), ==,
                   actual_size (f->vm, "vda"));
  g_assert_cmpuint (json_array_get_length (json_object_get_array_member (doc, "jobs")), ==, 0);
}

/* A mirror of vdb into a new device-less node "target", held back at 1 byte/s. */
static void
start_slow_job (Fixture *f)
{
  g_autofree char *target = rig_path (f->rig, "target.qcow2");
  g_autofree char *add = NULL;
  g_autoptr(JsonNode) added = NULL;
  g_autoptr(JsonNode) started = NULL;

  img_create (target, "qcow2", "16M");
  /* data to copy, in small pieces: an empty vdb, or one 16 MiB buffer let through
   * before the rate limit applies, would make the job READY at once */
  vm_guest_write (f->vm, "vdb", 0x5a, "0", "16M");
  add = g_strdup_printf ("{\"driver\":\"qcow2\",\"node-name\":\"target\","
                         "\"file\":{\"driver\":\"file\",\"filename\":\"%s\"}}", target);
  added = vm_qmp (f->vm, "blockdev-add", add);
  started = vm_qmp (f->vm, "blockdev-mirror",
                    "{\"job-id\":\"slow\",\"device\":\"drive-vdb\",\"target\":\"target\","
                    "\"sync\":\"full\",\"speed\":1,\"buf-size\":65536}");
  vm_wait_for_jobs (f->vm);
}

static void
assert_job_human (Fixture *f)
{
  g_autofree char *out = NULL;
  g_autoptr(GRegex) job_lines = g_regex_new ("^\\n\\nBlock jobs:\\n"
      "  ID        TYPE      STATUS    PROGRESS                  SPEED\\n"
      "  slow      mirror    running   [0-9.]+ (bytes|[KMG]iB) / 16 MiB \\([0-9]+%\\) +"
      "1 bytes/s\\n$", 0, 0, NULL);
  const char *jobs;

  g_assert_cmpint (blkmig_run (&out, NULL, "list", "--qmp", f->vm->qmp_path, NULL), ==, 0);
  /* The target is a named format node without a device: a row of its own. */
  g_assert_nonnull (strstr (out, "\ntarget  target        qcow2       16 MiB  "));
  g_assert_nonnull ((jobs = strstr (out, "\n\nBlock jobs:")));
  if (!g_regex_match (job_lines, jobs, 0, NULL))
    g_error ("the block job lines do not match:%s", jobs);
  g_assert_null (strstr (out, "Block jobs: none"));
}

static void
assert_job_json (Fixture *f)
{
  g_autoptr(JsonNode) node = list_json (f->vm);
  JsonObject *doc = json_node_get_object (node);
  JsonArray *jobs = json_object_get_array_member (doc, "jobs");
  JsonObject *job;
  JsonObject *target = disk_at (doc, 2);

  g_assert_cmpuint (json_array_get_length (jobs), ==, 1);
  job = json_array_get_object_element (jobs, 0);
  g_assert_cmpstr (json_object_get_string_member (job, "id"), ==, "slow");
  g_assert_cmpstr (json_object_get_string_member (job, "type"), ==, "mirror");
  g_assert_cmpstr (json_object_get_string_member (job, "status"), ==, "running");
  g_assert_cmpint (json_object_get_int_member (job, "len"), ==, 16 << 20);
  g_assert_cmpint (json_object_get_int_member (job, "offset"), <=, 16 << 20);
  g_assert_cmpint (json_object_get_int_member (job, "speed"), ==, 1);
  g_assert_cmpstr (json_object_get_string_member (target, "name"), ==, "target");
  g_assert_cmpstr (json_object_get_string_member (target, "format"), ==, "qcow2");
  g_assert_true (json_node_is_null (json_object_get_member (target, "device")));
}

static void
test_list_job (Fixture *f, gconstpointer data)
{
  g_autoptr(JsonNode) cancelled = NULL;

  start_slow_job (f);
  assert_job_human (f);
  assert_job_json (f);
  cancelled = vm_qmp (f->vm, "block-job-cancel", "{\"device\":\"slow\",\"force\":true}");
  for (int i = 0; i < 600 && vm_count_jobs (f->vm) > 0; i++)
    g_usleep (50000);
  g_assert_cmpuint (vm_count_jobs (f->vm), ==, 0);
}

/* A backing file whose name carries a terminal escape (anyone who can write the
 * image directory chooses such names): list, merge's refusal and its progress never
 * print it raw. */
static void
test_hostile_backing_name (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *base = rig_path (rig, "evil\033[2J.qcow2");
  g_autofree char *top = rig_path (rig, "top.qcow2");
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;
  VmDisk disks[] = { { "vda", top, "qcow2" }, { NULL } };
  Vm *vm;

  img_create (base, "qcow2", "16M");
  run_ok ((const char *const[]) { "qemu-img", "create", "-q", "-f", "qcow2", "-b", base,
                                  "-F", "qcow2", top, NULL });
  vm = vm_start (rig, "vm", disks, NULL);
  g_assert_cmpint (blkmig_run (&out, &err, "list", "--qmp", vm->qmp_path, NULL), ==, 0);
  g_assert_null (strchr (out, '\033'));
  g_assert_nonnull (strstr (out, "evil\\x1b[2J.qcow2"));
  g_clear_pointer (&out, g_free);
  g_clear_pointer (&err, g_free);
  g_assert_cmpint (blkmig_run (&out, &err, "merge", "--qmp", vm->qmp_path, "--disk", "vda",
                               "--top", "no\033]0;x\007", NULL), ==, 4);
  g_assert_null (strchr (err, '\033'));
  g_assert_nonnull (strstr (err, "--top no\\x1b]0;x\\x07 is not in vda's chain ("));
  g_assert_nonnull (strstr (err, "evil\\x1b[2J.qcow2)"));
  g_assert_cmpuint (vm_count_jobs (vm), ==, 0);
}

static void
test_list_usage (void)
{
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;
  g_autofree char *extra_err = NULL;
  g_autofree char *conn_out = NULL;
  g_autofree char *conn_err = NULL;

  g_assert_cmpint (blkmig_run (&out, &err, "list", NULL), ==, 2);
  g_assert_cmpstr (err, ==, "blkmig list: --qmp is required\n");
  g_assert_cmpstr (out, ==, "");
  g_assert_cmpint (blkmig_run (NULL, &extra_err, "list", "--qmp", "/nonexistent.qmp", "vda",
                               NULL), ==, 2);
  g_assert_cmpstr (extra_err, ==, "blkmig list: unexpected argument 'vda'\n");
  g_assert_cmpint (blkmig_run (&conn_out, &conn_err, "list", "--qmp", "/nonexistent.qmp",
                               "--json", NULL), ==, 5);
  g_assert_cmpstr (conn_out, ==, "");
  g_assert_true (g_str_has_prefix (conn_err, "blkmig list: "));
  g_assert_nonnull (strstr (conn_err, "cannot connect to QMP"));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add ("/list/human", Fixture, NULL, fixture_set_up, test_list_human, fixture_tear_down);
  g_test_add ("/list/json", Fixture, NULL, fixture_set_up, test_list_json, fixture_tear_down);
  g_test_add ("/list/job", Fixture, NULL, fixture_set_up, test_list_job, fixture_tear_down);
  g_test_add_func ("/list/usage", test_list_usage);
  g_test_add_func ("/list/hostile-backing-name", test_hostile_backing_name);
  return g_test_run ();
}
