/* The typed QMP layer: what each command puts on the wire, how replies are read, the schema. */
#include <string.h>

#include "qmp/qmp-commands.h"
#include "tests/unit/fake-qemu.h"

/* Every command is checked against the QEMU 7.2 schema by the fake, and its
 * arguments against what the test expects (as JSON values). */
typedef struct {
  FakeQemu *fake;
  QmpClient *qmp;
} Fixture;

static void
fixture_connect (Fixture *fx)
{
  fx->qmp = fake_qemu_connect (fx->fake, "fake");
}

static void
fixture_setup (Fixture *fx, gconstpointer data)
{
  fx->fake = fake_qemu_new ();
}

static void
fixture_teardown (Fixture *fx, gconstpointer data)
{
  if (fx->qmp != NULL)
    qmp_client_close (fx->qmp);
  g_clear_object (&fx->qmp);
  fake_qemu_verify (fx->fake);
  g_clear_pointer (&fx->fake, fake_qemu_free);
}

/* The next command must be @command with exactly @arguments. */
static void
expect (Fixture *fx, const char *command, const char *arguments)
{
  fake_qemu_expect (fx->fake, command, arguments, "{}");
}

/* The members, their order and types are those the hand-built objects had. */
static void
test_wire_block (Fixture *fx, gconstpointer data)
{
  const QmpBlockdevMirror mirror = {
    .job_id = "blkmig-12345678-0", .device = "vda", .target = "blkmig12345678n0",
    .sync = "full", .buf_size = 64 * 1024 * 1024, .copy_mode = "write-blocking",
  };
  const QmpBlockdevNbd nbd = {
    .node_name = "blkmig12345678n0",
    .server = { .type = QMP_ADDRESS_INET, .host = "127.0.0.1", .port = 10809 },
    .export_name = "blkmig-12345678-0", .discard = "unmap", .reconnect_delay = 5,
  };
  const QmpBlockdevImage image = {
    .node_name = "n", .format = "qcow2", .filename = "/t.qcow2", .set_cache = TRUE,
    .cache_direct = TRUE,
  };
  const QmpBlockdevImage reopen = {
    .node_name = "m", .format = "raw", .filename = "/m.raw", .discard = "unmap",
    .detect_zeroes = "off",
  };
  g_autoptr(GError) error = NULL;

  fixture_connect (fx);
  expect (fx, "blockdev-mirror",
          "{\"job-id\":\"blkmig-12345678-0\",\"device\":\"vda\",\"target\":"
          "\"blkmig12345678n0\",\"sync\":\"full\",\"buf-size\":67108864,"
          "\"copy-mode\":\"write-blocking\",\"auto-dismiss\":false}");
  g_assert_true (qmp_blockdev_mirror (fx->qmp, &mirror, NULL, &error));
  expect (fx, "blockdev-add",
          "{\"driver\":\"nbd\",\"node-name\":\"blkmig12345678n0\",\"server\":{\"type\":"
          "\"inet\",\"host\":\"127.0.0.1\",\"port\":\"10809\"},\"export\":"
          "\"blkmig-12345678-0\",\"discard\":\"unmap\",\"reconnect-delay\":5}");
  g_assert_true (qmp_blockdev_add_nbd (fx->qmp, &nbd, NULL, &error));
  expect (fx, "blockdev-add",
          "{\"driver\":\"qcow2\",\"node-name\":\"n\",\"cache\":{\"direct\":true,"
          "\"no-flush\":false},\"file\":{\"driver\":\"file\",\"filename\":\"/t.qcow2\","
          "\"cache\":{\"direct\":true,\"no-flush\":false}}}");
  g_assert_true (qmp_blockdev_add_image (fx->qmp, &image, NULL, &error));
  expect (fx, "blockdev-reopen",
          "{\"options\":[{\"driver\":\"raw\",\"node-name\":\"m\",\"discard\":\"unmap\","
          "\"detect-zeroes\":\"off\",\"file\":{\"driver\":\"file\",\"filename\":\"/m.raw\","
          "\"discard\":\"unmap\"}}]}");
  g_assert_true (qmp_blockdev_reopen_image (fx->qmp, &reopen, NULL, &error));
  expect (fx, "job-complete", "{\"id\":\"j\"}");
  g_assert_true (qmp_job_complete (fx->qmp, "j", NULL, &error));
  expect (fx, "block-job-cancel", "{\"device\":\"j\",\"force\":true}");
  g_assert_true (qmp_block_job_cancel (fx->qmp, "j", TRUE, NULL, &error));
  expect (fx, "yank", "{\"instances\":[{\"type\":\"block-node\",\"node-name\":\"n\"}]}");
  g_assert_true (qmp_yank_block_node (fx->qmp, "n", NULL, &error));
  g_assert_no_error (error);
}

static void
test_wire_nbd_migration (Fixture *fx, gconstpointer data)
{
  const QmpNbdServer server = {
    .addr = { .type = QMP_ADDRESS_FD, .fd_name = "blkmig-nbd-listen" },
    .tls_creds = "t0",
    .max_connections = 7,
    .handshake_max_seconds = 9,
  };
  gboolean handshake = fake_qemu_schema_has ("nbd-server-start", "handshake-max-seconds");
  const QmpMigrateParameters unset = { .tls_creds = QMP_NULL, .tls_hostname = QMP_NULL };
  const char *const caps[] = { "events", "late-block-activate", NULL };
  const char *const dns[] = { "CN=a", NULL };
  g_autoptr(GError) error = NULL;

  fixture_connect (fx);
  /* handshake-max-seconds only where the schema has it (QEMU 10.0) */
  expect (fx, "nbd-server-start",
          handshake ? "{\"addr\":{\"type\":\"fd\",\"data\":{\"str\":\"blkmig-nbd-listen\"}},"
                   "\"tls-creds\":\"t0\",\"max-connections\":7,\"handshake-max-seconds\":9}"
                 : "{\"addr\":{\"type\":\"fd\",\"data\":{\"str\":\"blkmig-nbd-listen\"}},"
                   "\"tls-creds\":\"t0\",\"max-connections\":7}");
  g_assert_true (qmp_nbd_server_start (fx->qmp, &server, NULL, &error));
  expect (fx, "migrate-set-parameters", "{\"tls-creds\":null,\"tls-hostname\":null}");
  g_assert_true (qmp_migrate_set_parameters (fx->qmp, &unset, NULL, &error));
  expect (fx, "migrate-set-capabilities",
          "{\"capabilities\":[{\"capability\":\"events\",\"state\":true},"
          "{\"capability\":\"late-block-activate\",\"state\":true}]}");
  g_assert_true (qmp_migrate_set_capabilities (fx->qmp, caps, NULL, &error));
  expect (fx, "object-add",
          "{\"qom-type\":\"authz-list\",\"id\":\"z0\",\"policy\":\"deny\",\"rules\":"
          "[{\"match\":\"CN=a\",\"policy\":\"allow\",\"format\":\"exact\"}]}");
  g_assert_true (qmp_object_add_authz_list (fx->qmp, "z0", dns, NULL, &error));
  expect (fx, "migrate_cancel", NULL);
  g_assert_true (qmp_migrate_cancel (fx->qmp, NULL, &error));
  g_assert_no_error (error);
}

static void
test_reply_migrate (Fixture *fx, gconstpointer data)
{
  g_autoptr(QmpMigrateInfo) good = NULL;
  g_autoptr(QmpMigrateInfo) bad = NULL;

  fake_qemu_expect_raw (fx->fake, "query-migrate", NULL,
                   "\"return\": {\"status\": \"failed\", \"error-desc\": \"x\", \"downtime\": 7,"
                   " \"ram\": {\"transferred\": 10, \"remaining\": 3}}");
  fixture_connect (fx);
  good = qmp_query_migrate (fx->qmp, NULL, NULL);
  g_assert_cmpstr (good->status, ==, "failed");
  g_assert_cmpstr (good->error_desc, ==, "x");
  g_assert_cmpint (good->transferred, ==, 10);
  g_assert_cmpint (good->remaining, ==, 3);
  g_assert_cmpint (good->downtime, ==, 7);
  /* mistyped members are absent */
  fake_qemu_expect_raw (fx->fake, "query-migrate", NULL,
                   "\"return\": {\"status\": 1, \"error-desc\": [], \"ram\": {\"transferred\": \"9\"}}");
  bad = qmp_query_migrate (fx->qmp, NULL, NULL);
  g_assert_null (bad->status);
  g_assert_null (bad->error_desc);
  g_assert_cmpint (bad->transferred, ==, -1);
  g_assert_cmpint (bad->downtime, ==, -1);
}

/* The machine type: QOM's "-machine" suffix dropped; a mistyped answer is an error. */
static void
test_reply_machine (Fixture *fx, gconstpointer data)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *type = NULL;
  g_autofree char *plain = NULL;
  g_autofree char *bad = NULL;

  fake_qemu_expect_raw (fx->fake, "qom-get", "{\"path\":\"/machine\",\"property\":\"type\"}",
                        "\"return\": \"pc-i440fx-7.2-machine\"");
  fixture_connect (fx);
  type = qmp_query_machine_type (fx->qmp, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (type, ==, "pc-i440fx-7.2");
  fake_qemu_expect_raw (fx->fake, "qom-get", "*", "\"return\": \"microvm\"");
  plain = qmp_query_machine_type (fx->qmp, NULL, &error);
  g_assert_cmpstr (plain, ==, "microvm");
  fake_qemu_expect_raw (fx->fake, "qom-get", "*", "\"return\": {\"type\": 7}");
  bad = qmp_query_machine_type (fx->qmp, NULL, &error);
  g_assert_null (bad);
  g_assert_error (error, QMP_ERROR, QMP_ERROR_PROTOCOL);
}

static void
test_reply_block (Fixture *fx, gconstpointer data)
{
  g_autoptr(GPtrArray) blocks = NULL;
  g_autoptr(GPtrArray) jobs = NULL;
  QmpBlockInfo *info;
  QmpBlockJobInfo *job;

  fake_qemu_expect_raw (fx->fake, "query-block", NULL,
                   "\"return\": [{\"device\": \"\", \"qdev\": \"/machine/peripheral/vda/"
                   "virtio-backend\", \"inserted\": {\"node-name\": \"top\", \"file\": \"/a\","
                   " \"drv\": \"qcow2\", \"ro\": false, \"cache\": {\"direct\": true},"
                   " \"image\": {\"format\": \"qcow2\", \"virtual-size\": 1024,"
                   " \"backing-image\": {\"filename\": \"/b\"}}}}, 5]");
  fake_qemu_expect_raw (fx->fake, "query-block-jobs", NULL,
                   "\"return\": [{\"device\": \"j\", \"type\": \"mirror\", \"offset\": 1,"
                   " \"len\": \"2\"}]");
  fixture_connect (fx);
  blocks = qmp_query_block (fx->qmp, NULL, NULL);
  g_assert_cmpuint (blocks->len, ==, 2);
  info = blocks->pdata[0];
  g_assert_true (info->inserted);
  g_assert_cmpstr (info->node_name, ==, "top");
  g_assert_true (info->cache_direct);
  g_assert_cmpint (info->image->virtual_size, ==, 1024);
  g_assert_cmpstr (info->image->backing[0], ==, "/b");
  g_assert_null (info->image->backing[1]);
  g_assert_false (((QmpBlockInfo *) blocks->pdata[1])->inserted);
  jobs = qmp_query_block_jobs (fx->qmp, NULL, NULL);
  job = jobs->pdata[0];
  g_assert_cmpstr (job->device, ==, "j");
  g_assert_cmpint (job->offset, ==, 1);
  g_assert_cmpint (job->len, ==, -1);
}

/* snapshot and merge: an overlay opened without backing, one transaction for
 * several disks, block-commit of the active layer (no top-node) and of an internal one. */
static void
test_wire_chain (Fixture *fx, gconstpointer data)
{
  const QmpBlockdevImage overlay = {
    .node_name = "blkmig12345678s0", .format = "qcow2", .filename = "/o.qcow2",
    .no_backing = TRUE,
  };
  const QmpBlockCommit active = {
    .job_id = "blkmig-12345678-merge", .device = "vda", .base_node = "mid",
  };
  const QmpBlockCommit internal = {
    .job_id = "j", .device = "vda", .top_node = "mid", .base_node = "#block12", .speed = 7,
  };
  const char *const nodes[] = { "vda", "vdb", NULL };
  const char *const overlays[] = { "o0", "o1", NULL };
  g_autoptr(GError) error = NULL;

  fixture_connect (fx);
  expect (fx, "blockdev-add",
          "{\"driver\":\"qcow2\",\"node-name\":\"blkmig12345678s0\",\"backing\":null,"
          "\"file\":{\"driver\":\"file\",\"filename\":\"/o.qcow2\"}}");
  g_assert_true (qmp_blockdev_add_image (fx->qmp, &overlay, NULL, &error));
  expect (fx, "transaction",
          "{\"actions\":[{\"type\":\"blockdev-snapshot\",\"data\":{\"node\":\"vda\","
          "\"overlay\":\"o0\"}},{\"type\":\"blockdev-snapshot\",\"data\":{\"node\":"
          "\"vdb\",\"overlay\":\"o1\"}}]}");
  g_assert_true (qmp_transaction_blockdev_snapshot (fx->qmp, nodes, overlays, NULL, &error));
  expect (fx, "block-commit",
          "{\"job-id\":\"blkmig-12345678-merge\",\"device\":\"vda\",\"base-node\":"
          "\"mid\",\"auto-dismiss\":false}");
  g_assert_true (qmp_block_commit (fx->qmp, &active, NULL, &error));
  expect (fx, "block-commit",
          "{\"job-id\":\"j\",\"device\":\"vda\",\"base-node\":\"#block12\","
          "\"top-node\":\"mid\",\"speed\":7,\"auto-dismiss\":false}");
  g_assert_true (qmp_block_commit (fx->qmp, &internal, NULL, &error));
  g_assert_no_error (error);
}

/* copy-base live: the copied chain opened read-only, attached under the disk by
 * reopening it with its own file child and settings, the header written after. */
static void
test_wire_compose (Fixture *fx, gconstpointer data)
{
  const QmpBlockdevImage chain = {
    .node_name = "blkmig12345678k0", .format = "qcow2", .filename = "/b/snap.qcow2",
    .read_only = TRUE,
  };
  const QmpBlockdevImage reopen = {
    .node_name = "drive-vda", .format = "qcow2", .file_node = "#block123",
    .backing_node = "blkmig12345678k0", .detect_zeroes = "unmap",
  };
  g_autoptr(GError) error = NULL;

  fixture_connect (fx);
  expect (fx, "blockdev-add",
          "{\"driver\":\"qcow2\",\"node-name\":\"blkmig12345678k0\",\"read-only\":true,"
          "\"file\":{\"driver\":\"file\",\"filename\":\"/b/snap.qcow2\"}}");
  g_assert_true (qmp_blockdev_add_image (fx->qmp, &chain, NULL, &error));
  expect (fx, "blockdev-reopen",
          "{\"options\":[{\"driver\":\"qcow2\",\"node-name\":\"drive-vda\","
          "\"detect-zeroes\":\"unmap\",\"backing\":\"blkmig12345678k0\",\"file\":\"#block123\"}]}");
  g_assert_true (qmp_blockdev_reopen_image (fx->qmp, &reopen, NULL, &error));
  expect (fx, "change-backing-file",
          "{\"device\":\"drive-vda\",\"image-node-name\":\"drive-vda\",\"backing-file\":"
          "\"/b/snap.qcow2\"}");
  g_assert_true (qmp_change_backing_file (fx->qmp, "drive-vda", "drive-vda", "/b/snap.qcow2",
                                          NULL, &error));
  g_assert_no_error (error);
}

/* A node's child from the block graph; a mistyped graph has none. */
static void
test_reply_graph (Fixture *fx, gconstpointer data)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *file = NULL;
  g_autofree char *none = NULL;

  fake_qemu_expect_raw (fx->fake, "x-debug-query-block-graph", NULL,
                        "\"return\": {\"nodes\": [{\"id\": 1, \"name\": \"drive-vda\"}, "
                        "{\"id\": 2, \"name\": \"#block9\"}, {\"id\": \"3\", \"name\": 4}], "
                        "\"edges\": [{\"parent\": 1, \"child\": 2, \"name\": \"file\"}, "
                        "{\"parent\": 1, \"child\": 3, \"name\": \"backing\"}]}");
  fake_qemu_expect_raw (fx->fake, "x-debug-query-block-graph", NULL,
                        "\"return\": {\"nodes\": 7}");
  fixture_connect (fx);
  file = qmp_query_block_child (fx->qmp, "drive-vda", "file", NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (file, ==, "#block9");
  none = qmp_query_block_child (fx->qmp, "drive-vda", "file", NULL, &error);
  g_assert_null (none);
  g_assert_error (error, QMP_ERROR, QMP_ERROR_PROTOCOL);
}

/* The backing chain, layer by layer; a mistyped layer is absent, not a crash. */
static void
test_reply_chain (Fixture *fx, gconstpointer data)
{
  g_autoptr(GPtrArray) blocks = NULL;
  QmpImageInfo *image;

  fake_qemu_expect_raw (fx->fake, "query-block", NULL,
                   "\"return\": [{\"inserted\": {\"node-name\": \"top\", \"image\": "
                   "{\"filename\": \"/t\", \"format\": \"qcow2\", \"backing-image\": "
                   "{\"filename\": \"/m\", \"format\": \"qcow2\", \"virtual-size\": 9, "
                   "\"backing-image\": {\"filename\": 3, \"format\": \"raw\", "
                   "\"backing-image\": [1]}}}}}]");
  fixture_connect (fx);
  blocks = qmp_query_block (fx->qmp, NULL, NULL);
  image = ((QmpBlockInfo *) blocks->pdata[0])->image;
  g_assert_cmpstr (image->filename, ==, "/t");
  g_assert_cmpstr (image->backing_image->filename, ==, "/m");
  g_assert_cmpint (image->backing_image->virtual_size, ==, 9);
  g_assert_null (image->backing_image->backing_image->filename);
  g_assert_cmpstr (image->backing_image->backing_image->format, ==, "raw");
  g_assert_null (image->backing_image->backing_image->backing_image);
  g_assert_cmpstr (image->backing[0], ==, "/m");
  g_assert_cmpstr (image->backing[1], ==, "");
}

/* Read once per connection, on the first question, from the peer's own schema
 * (the fake's is QEMU 7.2's, or 10.0's in the -schema-10.0 runs). */
static void
test_schema (Fixture *fx, gconstpointer data)
{
  /* the -schema-10.0 run has both; 7.2 neither */
  gboolean qemu10 = fake_qemu_schema_has ("block-job-change", NULL);

  g_assert_true (fake_qemu_schema_has ("migrate", "channels") == qemu10);
  fixture_connect (fx);
  g_assert_cmpuint (fake_qemu_count (fx->fake, "query-qmp-schema"), ==, 0);
  g_assert_true (qmp_client_has_argument (fx->qmp, "migrate", "uri"));
  g_assert_true (qmp_client_has_argument (fx->qmp, "migrate", "channels") == qemu10);  /* 8.1 */
  g_assert_true (qmp_can_change_copy_mode (fx->qmp) == qemu10);                      /* 8.2 */
  g_assert_true (qmp_client_has_argument (fx->qmp, "blockdev-add", "reconnect-delay"));
  g_assert_true (qmp_client_has_argument (fx->qmp, "blockdev-add", "driver"));
  g_assert_true (qmp_client_has_argument (fx->qmp, "yank", "instances"));
  g_assert_false (qmp_client_has_argument (fx->qmp, "no-such-command", "x"));
  g_assert_cmpuint (fake_qemu_count (fx->fake, "query-qmp-schema"), ==, 1);
}

/* Versions from QMP's greeting and from the peer's cookie (checked digits, but
 * any number of them). */
static void
test_version_at_least (void)
{
  g_assert_true (qmp_version_at_least ("7.2.22", 7, 2));
  g_assert_false (qmp_version_at_least ("7.2.22", 8, 2));
  g_assert_true (qmp_version_at_least ("8.2.0", 8, 2));
  g_assert_true (qmp_version_at_least ("10.0.2", 8, 2));
  g_assert_false (qmp_version_at_least ("99999999999999999999.1.1", 8, 2));
  g_assert_false (qmp_version_at_least ("8", 8, 2));
  g_assert_false (qmp_version_at_least ("x.y.z", 0, 0));
  g_assert_false (qmp_version_at_least (NULL, 0, 0));
}

/* A peer whose schema cannot be read: no command has arguments. */
static void
test_schema_missing (Fixture *fx, gconstpointer data)
{
  fake_qemu_expect_error (fx->fake, "query-qmp-schema", NULL, "CommandNotFound",
                          "The command query-qmp-schema has not been found");
  fixture_connect (fx);
  g_assert_false (qmp_client_has_argument (fx->qmp, "migrate", "uri"));
  g_assert_false (qmp_client_has_argument (fx->qmp, "migrate", "uri"));
  g_assert_cmpuint (fake_qemu_count (fx->fake, "query-qmp-schema"), ==, 1);
}

/* replicate's bitmaps: one transaction adds a bitmap on every node (granularity
 * only when given; no node is an empty transaction, which QEMU takes as a
 * barrier), and one is removed by node and name. */
static void
test_wire_bitmap (Fixture *fx, gconstpointer data)
{
  const char *const nodes[] = { "vda", "blkmig12345678f1", NULL };
  const char *const none[] = { NULL };
  g_autoptr(GError) error = NULL;

  fixture_connect (fx);
  expect (fx, "transaction",
          "{\"actions\":[{\"type\":\"block-dirty-bitmap-add\",\"data\":{\"node\":\"vda\","
          "\"name\":\"blkmig-12345678-r3\",\"granularity\":65536}},"
          "{\"type\":\"block-dirty-bitmap-add\",\"data\":{\"node\":\"blkmig12345678f1\","
          "\"name\":\"blkmig-12345678-r3\",\"granularity\":65536}}]}");
  g_assert_true (qmp_transaction_bitmap_add (fx->qmp, nodes, "blkmig-12345678-r3", 65536,
                                             NULL, &error));
  g_assert_no_error (error);
  expect (fx, "transaction",
          "{\"actions\":[{\"type\":\"block-dirty-bitmap-add\",\"data\":{\"node\":\"vda\","
          "\"name\":\"b\"}},{\"type\":\"block-dirty-bitmap-add\",\"data\":{\"node\":"
          "\"blkmig12345678f1\",\"name\":\"b\"}}]}");
  g_assert_true (qmp_transaction_bitmap_add (fx->qmp, nodes, "b", 0, NULL, &error));
  g_assert_no_error (error);
  expect (fx, "transaction", "{\"actions\":[]}");
  g_assert_true (qmp_transaction_bitmap_add (fx->qmp, none, "b", 65536, NULL, &error));
  g_assert_no_error (error);
  expect (fx, "transaction", "{\"actions\":[]}");
  g_assert_true (qmp_transaction_bitmap_add (fx->qmp, NULL, "b", 0, NULL, &error));
  g_assert_no_error (error);
  expect (fx, "block-dirty-bitmap-remove", "{\"node\":\"vda\",\"name\":\"blkmig-12345678-r2\"}");
  g_assert_true (qmp_block_dirty_bitmap_remove (fx->qmp, "vda", "blkmig-12345678-r2", NULL,
                                                &error));
  g_assert_no_error (error);
  /* QEMU's refusal is the caller's error */
  fake_qemu_expect_error (fx->fake, "block-dirty-bitmap-remove",
                          "{\"node\":\"vda\",\"name\":\"gone\"}", "GenericError",
                          "Dirty bitmap 'gone' not found");
  g_assert_false (qmp_block_dirty_bitmap_remove (fx->qmp, "vda", "gone", NULL, &error));
  g_assert_error (error, QMP_ERROR, QMP_ERROR_GENERIC);
  g_assert_nonnull (strstr (error->message, "Dirty bitmap 'gone' not found"));
}

/* resync: per device, the next bitmap (when there is one) then a backup of what
 * the current bitmap marks, bitmap left alone, job kept until dismissed. */
static void
test_wire_backup_bitmap (Fixture *fx, gconstpointer data)
{
  const char *const devices[] = { "vda", "vdb", NULL };
  const char *const targets[] = { "blkmig12345678n0", "blkmig12345678n1", NULL };
  const char *const jobs[] = { "blkmig-12345678-0.r", "blkmig-12345678-1.r", NULL };
  const char *const one[] = { "vda", NULL };
  g_autoptr(GError) error = NULL;

  fixture_connect (fx);
  expect (fx, "transaction",
          "{\"actions\":["
          "{\"type\":\"block-dirty-bitmap-add\",\"data\":{\"node\":\"vda\","
          "\"name\":\"blkmig-12345678-r4.1\"}},"
          "{\"type\":\"blockdev-backup\",\"data\":{\"job-id\":\"blkmig-12345678-0.r\","
          "\"device\":\"vda\",\"target\":\"blkmig12345678n0\",\"sync\":\"bitmap\","
          "\"bitmap\":\"blkmig-12345678-r4\",\"bitmap-mode\":\"never\",\"auto-dismiss\":false}},"
          "{\"type\":\"block-dirty-bitmap-add\",\"data\":{\"node\":\"vdb\","
          "\"name\":\"blkmig-12345678-r4.1\"}},"
          "{\"type\":\"blockdev-backup\",\"data\":{\"job-id\":\"blkmig-12345678-1.r\","
          "\"device\":\"vdb\",\"target\":\"blkmig12345678n1\",\"sync\":\"bitmap\","
          "\"bitmap\":\"blkmig-12345678-r4\",\"bitmap-mode\":\"never\",\"auto-dismiss\":false}}"
          "]}");
  g_assert_true (qmp_transaction_backup_bitmap (fx->qmp, devices, targets, jobs,
                                                "blkmig-12345678-r4", "blkmig-12345678-r4.1",
                                                NULL, &error));
  g_assert_no_error (error);
  /* no next bitmap: the backups alone */
  expect (fx, "transaction",
          "{\"actions\":[{\"type\":\"blockdev-backup\",\"data\":{\"job-id\":"
          "\"blkmig-12345678-0.r\",\"device\":\"vda\",\"target\":\"blkmig12345678n0\","
          "\"sync\":\"bitmap\",\"bitmap\":\"blkmig-12345678-r4\",\"bitmap-mode\":\"never\","
          "\"auto-dismiss\":false}}]}");
  g_assert_true (qmp_transaction_backup_bitmap (fx->qmp, one, targets, jobs,
                                                "blkmig-12345678-r4", NULL, NULL, &error));
  g_assert_no_error (error);
}

/* qemu-io NODE flush through HMP: an empty answer is success, any text is
 * QEMU's complaint (escaped in the message); a name HMP would split or quote
 * differently is refused before anything is sent. */
static void
test_wire_flush (Fixture *fx, gconstpointer data)
{
  static const char *const hostile[] = { "a b", "a\"b", "a'b", "vda;quit", "a\nb", "a\\b",
                                         "vda flush\n", "", "-x", "1a", ".a" };
  g_autoptr(GError) error = NULL;
  gboolean ok;

  fixture_connect (fx);
  fake_qemu_expect (fx->fake, "human-monitor-command",
                    "{\"command-line\":\"qemu-io blkmig12345678e0.3 flush\"}", "\"\"");
  g_assert_true (qmp_flush_node (fx->qmp, "blkmig12345678e0.3", NULL, &error));
  g_assert_no_error (error);
  fake_qemu_expect (fx->fake, "human-monitor-command",
                    "{\"command-line\":\"qemu-io drive_vda-1 flush\"}",
                    "\"flush failed: Input/output error\\r\\n\\u001b[31m\"");
  g_assert_false (qmp_flush_node (fx->qmp, "drive_vda-1", NULL, &error));
  g_assert_error (error, QMP_ERROR, QMP_ERROR_GENERIC);
  g_assert_cmpstr (error->message, ==,
                   "qemu-io flush: flush failed: Input/output error\\r\\n\\x1b[31m");
  g_clear_error (&error);
  /* QEMU's own error (no such node) */
  fake_qemu_expect_error (fx->fake, "human-monitor-command", "*", "GenericError",
                          "Cannot find device='nope' nor node_name='nope'");
  g_assert_false (qmp_flush_node (fx->qmp, "nope", NULL, &error));
  g_assert_error (error, QMP_ERROR, QMP_ERROR_GENERIC);
  g_clear_error (&error);
  /* a mistyped answer: no crash, and an error exactly when it says it failed */
  fake_qemu_expect_raw (fx->fake, "human-monitor-command", "*", "\"return\": {\"x\": 5}");
  ok = qmp_flush_node (fx->qmp, "vda", NULL, &error);
  g_assert_true (ok == (error == NULL));
  g_clear_error (&error);
  for (guint i = 0; i < G_N_ELEMENTS (hostile); i++)
    {
      g_assert_false (qmp_flush_node (fx->qmp, hostile[i], NULL, &error));
      g_assert_error (error, QMP_ERROR, QMP_ERROR_GENERIC);
      g_clear_error (&error);
    }
  g_assert_cmpuint (fake_qemu_count (fx->fake, "human-monitor-command"), ==, 4);
}

static void
store_result_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  GAsyncResult **slot = user_data;

  *slot = g_object_ref (result);
}

static void
wait_result (GAsyncResult **slot)
{
  while (*slot == NULL)
    g_main_context_iteration (NULL, TRUE);
}

/* replicate's pause: stop, the dirty query and the bitmap transaction sent at
 * once, answered in order, each finished on its own. */
static void
test_async_pause (Fixture *fx, gconstpointer data)
{
  const char *const nodes[] = { "vda", NULL };
  g_autoptr(GAsyncResult) stopped = NULL;
  g_autoptr(GAsyncResult) queried = NULL;
  g_autoptr(GAsyncResult) added = NULL;
  g_autoptr(GAsyncResult) failed = NULL;
  g_autoptr(GPtrArray) nodes_info = NULL;
  g_autoptr(GError) error = NULL;
  QmpBlockNodeInfo *info;

  fixture_connect (fx);
  expect (fx, "stop", NULL);
  fake_qemu_expect_raw (fx->fake, "query-named-block-nodes", "{\"flat\":true}",
                        "\"return\": [{\"node-name\": \"vda\", \"drv\": \"qcow2\", "
                        "\"dirty-bitmaps\": [{\"count\": 65536, \"granularity\": 65536, "
                        "\"recording\": true, \"busy\": true, \"persistent\": false}]}]");
  expect (fx, "transaction",
          "{\"actions\":[{\"type\":\"block-dirty-bitmap-add\",\"data\":{\"node\":\"vda\","
          "\"name\":\"blkmig-12345678-r5\"}}]}");
  qmp_stop_async (fx->qmp, NULL, store_result_cb, &stopped);
  qmp_query_named_block_nodes_async (fx->qmp, NULL, store_result_cb, &queried);
  qmp_transaction_bitmap_add_async (fx->qmp, nodes, "blkmig-12345678-r5", 0, NULL,
                                    store_result_cb, &added);
  wait_result (&stopped);
  wait_result (&queried);
  wait_result (&added);
  g_assert_true (qmp_stop_finish (fx->qmp, stopped, &error));
  g_assert_no_error (error);
  nodes_info = qmp_query_named_block_nodes_finish (fx->qmp, queried, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (nodes_info->len, ==, 1);
  info = nodes_info->pdata[0];
  g_assert_cmpstr (info->node_name, ==, "vda");
  g_assert_cmpint (info->job_dirty, ==, 65536);
  g_assert_null (info->bitmaps);
  g_assert_true (qmp_transaction_bitmap_add_finish (fx->qmp, added, &error));
  g_assert_no_error (error);

  /* failures come back through _finish */
  fake_qemu_expect_error (fx->fake, "transaction", "*", "GenericError",
                          "Bitmap already exists: blkmig-12345678-r5");
  qmp_transaction_bitmap_add_async (fx->qmp, nodes, "blkmig-12345678-r5", 0, NULL,
                                    store_result_cb, &failed);
  wait_result (&failed);
  g_assert_false (qmp_transaction_bitmap_add_finish (fx->qmp, failed, &error));
  g_assert_error (error, QMP_ERROR, QMP_ERROR_GENERIC);
  g_clear_error (&error);
  g_clear_object (&failed);
  fake_qemu_expect_error (fx->fake, "stop", NULL, "GenericError", "no");
  qmp_stop_async (fx->qmp, NULL, store_result_cb, &failed);
  wait_result (&failed);
  g_assert_false (qmp_stop_finish (fx->qmp, failed, &error));
  g_assert_error (error, QMP_ERROR, QMP_ERROR_GENERIC);
  g_clear_error (&error);
  g_clear_object (&failed);
  fake_qemu_expect_error (fx->fake, "query-named-block-nodes", "*", "GenericError", "no");
  qmp_query_named_block_nodes_async (fx->qmp, NULL, store_result_cb, &failed);
  wait_result (&failed);
  g_assert_null (qmp_query_named_block_nodes_finish (fx->qmp, failed, &error));
  g_assert_error (error, QMP_ERROR, QMP_ERROR_GENERIC);
}

/* Dirty bitmaps of query-named-block-nodes: the unnamed ones (a mirror's) are
 * summed, the named ones listed; anything mistyped counts for nothing. */
static void
test_reply_dirty (Fixture *fx, gconstpointer data)
{
  g_autoptr(GPtrArray) nodes = NULL;
  g_autoptr(GPtrArray) bad = NULL;
  g_autoptr(GAsyncResult) result = NULL;
  QmpBlockNodeInfo *info;

  fake_qemu_expect_raw (fx->fake, "query-named-block-nodes", "{\"flat\":true}",
                        "\"return\": ["
                        "{\"node-name\": \"vda\", \"drv\": \"qcow2\", \"file\": \"/a\", "
                        "\"ro\": false, \"dirty-bitmaps\": ["
                        "{\"count\": 4096, \"granularity\": 65536},"
                        "{\"name\": \"blkmig-12345678-r2\", \"count\": 100},"
                        "{\"count\": 512},"
                        "{\"name\": \"blkmig-12345678-r3\", \"count\": 0}]},"
                        "{\"node-name\": \"blkmig12345678f0\", \"drv\": \"mirror_top\"},"
                        "{\"node-name\": \"x\", \"dirty-bitmaps\": \"x\"},"
                        "{\"node-name\": \"y\", \"dirty-bitmaps\": [{\"count\": \"7\"}]},"
                        "{\"node-name\": \"z\", \"dirty-bitmaps\": [{\"name\": 5}, "
                        "{\"name\": 5, \"count\": 7}]},"
                        "{\"node-name\": \"w\", \"dirty-bitmaps\": [7, null, [], "
                        "{\"count\": -9}, {\"count\": 1.5}]},"
                        "{\"node-name\": \"v\", \"dirty-bitmaps\": {\"count\": 3}},"
                        "\"not a node\"]");
  fixture_connect (fx);
  nodes = qmp_query_named_block_nodes (fx->qmp, NULL, NULL);
  g_assert_nonnull (nodes);
  g_assert_cmpuint (nodes->len, ==, 8);
  info = nodes->pdata[0];
  g_assert_cmpstr (info->node_name, ==, "vda");
  g_assert_cmpstr (info->file, ==, "/a");
  g_assert_cmpint (info->job_dirty, ==, 4608);
  g_assert_nonnull (info->bitmaps);
  g_assert_cmpstr (info->bitmaps[0], ==, "blkmig-12345678-r2");
  g_assert_cmpstr (info->bitmaps[1], ==, "blkmig-12345678-r3");
  g_assert_null (info->bitmaps[2]);
  info = nodes->pdata[1];
  g_assert_cmpstr (info->drv, ==, "mirror_top");
  g_assert_cmpint (info->job_dirty, ==, 0);
  g_assert_null (info->bitmaps);
  for (guint i = 2; i < nodes->len; i++)
    {
      info = nodes->pdata[i];
      g_assert_cmpint (info->job_dirty, ==, 0);
      g_assert_null (info->bitmaps);
    }
  g_assert_null (((QmpBlockNodeInfo *) nodes->pdata[7])->node_name);

  /* the async form reads the same way; a reply that is no list has no nodes */
  fake_qemu_expect_raw (fx->fake, "query-named-block-nodes", "{\"flat\":true}",
                        "\"return\": {\"node-name\": \"vda\"}");
  qmp_query_named_block_nodes_async (fx->qmp, NULL, store_result_cb, &result);
  wait_result (&result);
  bad = qmp_query_named_block_nodes_finish (fx->qmp, result, NULL);
  g_assert_nonnull (bad);
  g_assert_cmpuint (bad->len, ==, 0);
}

/* replicate names each mirror's filter node (10.0 keeps the mirror's bitmap there). */
static void
test_wire_mirror_filter (Fixture *fx, gconstpointer data)
{
  const QmpBlockdevMirror mirror = {
    .job_id = "blkmig-12345678-0", .device = "vda", .target = "blkmig12345678n0",
    .sync = "full", .filter_node = "blkmig12345678f0",
  };
  g_autoptr(GError) error = NULL;

  fixture_connect (fx);
  expect (fx, "blockdev-mirror",
          "{\"job-id\":\"blkmig-12345678-0\",\"device\":\"vda\",\"target\":"
          "\"blkmig12345678n0\",\"sync\":\"full\",\"filter-node-name\":\"blkmig12345678f0\","
          "\"auto-dismiss\":false}");
  g_assert_true (qmp_blockdev_mirror (fx->qmp, &mirror, NULL, &error));
  g_assert_no_error (error);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
#define ADD(path, func) g_test_add (path, Fixture, NULL, fixture_setup, func, fixture_teardown)
  ADD ("/qmp-commands/reply/machine", test_reply_machine);
  ADD ("/qmp-commands/wire/block", test_wire_block);
  ADD ("/qmp-commands/wire/nbd-migration", test_wire_nbd_migration);
  ADD ("/qmp-commands/wire/chain", test_wire_chain);
  ADD ("/qmp-commands/wire/compose", test_wire_compose);
  ADD ("/qmp-commands/reply/graph", test_reply_graph);
  ADD ("/qmp-commands/reply/chain", test_reply_chain);
  ADD ("/qmp-commands/reply/migrate", test_reply_migrate);
  ADD ("/qmp-commands/reply/block", test_reply_block);
  ADD ("/qmp-commands/wire/bitmap", test_wire_bitmap);
  ADD ("/qmp-commands/wire/backup-bitmap", test_wire_backup_bitmap);
  ADD ("/qmp-commands/wire/flush", test_wire_flush);
  ADD ("/qmp-commands/wire/mirror-filter", test_wire_mirror_filter);
  ADD ("/qmp-commands/async/pause", test_async_pause);
  ADD ("/qmp-commands/reply/dirty", test_reply_dirty);
  ADD ("/qmp-commands/schema", test_schema);
  ADD ("/qmp-commands/schema/missing", test_schema_missing);
  g_test_add_func ("/qmp-commands/version-at-least", test_version_at_least);
  return g_test_run ();
}
