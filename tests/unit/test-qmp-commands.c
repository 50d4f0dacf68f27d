/* The typed QMP layer: what each command puts on the wire, how replies are read, the schema. */
#include "qmp/qmp-commands.h"
#include "tests/security/fake-qmp.h"

typedef struct {
  FakeQmp *fake;
  QmpClient *qmp;
} Fixture;

static void
fixture_connect (Fixture *fx)
{
  g_autoptr(GError) error = NULL;

  fx->qmp = qmp_client_connect_sync (fake_qmp_path (fx->fake), "fake", NULL, &error);
  g_assert_no_error (error);
}

static void
fixture_setup (Fixture *fx, gconstpointer data)
{
  fx->fake = fake_qmp_new ();
}

static void
fixture_teardown (Fixture *fx, gconstpointer data)
{
  if (fx->qmp != NULL)
    qmp_client_close (fx->qmp);
  g_clear_object (&fx->qmp);
  g_clear_pointer (&fx->fake, fake_qmp_free);
}

static void
assert_sent (Fixture *fx, const char *command, const char *arguments)
{
  g_autofree char *sent = fake_qmp_last_arguments (fx->fake, command);

  g_assert_cmpstr (sent, ==, arguments);
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
  g_autoptr(GError) error = NULL;

  fixture_connect (fx);
  g_assert_true (qmp_blockdev_mirror (fx->qmp, &mirror, NULL, &error));
  assert_sent (fx, "blockdev-mirror",
               "{\"job-id\":\"blkmig-12345678-0\",\"device\":\"vda\",\"target\":"
               "\"blkmig12345678n0\",\"sync\":\"full\",\"buf-size\":67108864,"
               "\"copy-mode\":\"write-blocking\",\"auto-dismiss\":false}");
  g_assert_true (qmp_blockdev_add_nbd (fx->qmp, &nbd, NULL, &error));
  assert_sent (fx, "blockdev-add",
               "{\"driver\":\"nbd\",\"node-name\":\"blkmig12345678n0\",\"server\":{\"type\":"
               "\"inet\",\"host\":\"127.0.0.1\",\"port\":\"10809\"},\"export\":"
               "\"blkmig-12345678-0\",\"discard\":\"unmap\",\"reconnect-delay\":5}");
  g_assert_true (qmp_blockdev_add_image (fx->qmp, &image, NULL, &error));
  assert_sent (fx, "blockdev-add",
               "{\"driver\":\"qcow2\",\"node-name\":\"n\",\"cache\":{\"direct\":true,"
               "\"no-flush\":false},\"file\":{\"driver\":\"file\",\"filename\":\"/t.qcow2\","
               "\"cache\":{\"direct\":true,\"no-flush\":false}}}");
  g_assert_true (qmp_block_job_cancel (fx->qmp, "j", TRUE, NULL, &error));
  assert_sent (fx, "block-job-cancel", "{\"device\":\"j\",\"force\":true}");
  g_assert_true (qmp_yank_block_node (fx->qmp, "n", NULL, &error));
  g_assert_cmpuint (fake_qmp_count (fx->fake, "yank"), ==, 0);  /* not in query-commands */
  g_assert_no_error (error);
}

static void
test_wire_nbd_migration (Fixture *fx, gconstpointer data)
{
  const QmpSocketAddress fd = { .type = QMP_ADDRESS_FD, .fd_name = "blkmig-nbd-listen" };
  const QmpMigrateParameters unset = { .tls_creds = QMP_NULL, .tls_hostname = QMP_NULL };
  const char *const caps[] = { "events", "late-block-activate", NULL };
  const char *const dns[] = { "CN=a", NULL };
  g_autoptr(GError) error = NULL;

  fixture_connect (fx);
  g_assert_true (qmp_nbd_server_start (fx->qmp, &fd, "t0", NULL, NULL, &error));
  assert_sent (fx, "nbd-server-start",
               "{\"addr\":{\"type\":\"fd\",\"data\":{\"str\":\"blkmig-nbd-listen\"}},"
               "\"tls-creds\":\"t0\"}");
  g_assert_true (qmp_migrate_set_parameters (fx->qmp, &unset, NULL, &error));
  assert_sent (fx, "migrate-set-parameters", "{\"tls-creds\":null,\"tls-hostname\":null}");
  g_assert_true (qmp_migrate_set_capabilities (fx->qmp, caps, NULL, &error));
  assert_sent (fx, "migrate-set-capabilities",
               "{\"capabilities\":[{\"capability\":\"events\",\"state\":true},"
               "{\"capability\":\"late-block-activate\",\"state\":true}]}");
  g_assert_true (qmp_object_add_authz_list (fx->qmp, "z0", dns, NULL, &error));
  assert_sent (fx, "object-add",
               "{\"qom-type\":\"authz-list\",\"id\":\"z0\",\"policy\":\"deny\",\"rules\":"
               "[{\"match\":\"CN=a\",\"policy\":\"allow\",\"format\":\"exact\"}]}");
  g_assert_true (qmp_migrate_cancel (fx->qmp, NULL, &error));
  assert_sent (fx, "migrate_cancel", "{}");
  g_assert_no_error (error);
}

static void
test_reply_migrate (Fixture *fx, gconstpointer data)
{
  g_autoptr(QmpMigrateInfo) good = NULL;
  g_autoptr(QmpMigrateInfo) bad = NULL;

  fake_qmp_script (fx->fake, "query-migrate",
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
  fake_qmp_script (fx->fake, "query-migrate",
                   "\"return\": {\"status\": 1, \"error-desc\": [], \"ram\": {\"transferred\": \"9\"}}");
  bad = qmp_query_migrate (fx->qmp, NULL, NULL);
  g_assert_null (bad->status);
  g_assert_null (bad->error_desc);
  g_assert_cmpint (bad->transferred, ==, -1);
  g_assert_cmpint (bad->downtime, ==, -1);
}

static void
test_reply_block (Fixture *fx, gconstpointer data)
{
  g_autoptr(GPtrArray) blocks = NULL;
  g_autoptr(GPtrArray) jobs = NULL;
  QmpBlockInfo *info;
  QmpBlockJobInfo *job;

  fake_qmp_script (fx->fake, "query-block",
                   "\"return\": [{\"device\": \"\", \"qdev\": \"/machine/peripheral/vda/"
                   "virtio-backend\", \"inserted\": {\"node-name\": \"top\", \"file\": \"/a\","
                   " \"drv\": \"qcow2\", \"ro\": false, \"cache\": {\"direct\": true},"
                   " \"image\": {\"format\": \"qcow2\", \"virtual-size\": 1024,"
                   " \"backing-image\": {\"filename\": \"/b\"}}}}, 5]");
  fake_qmp_script (fx->fake, "query-block-jobs",
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

#define SCHEMA "\"return\": [" \
  "{\"name\": \"migrate\", \"meta-type\": \"command\", \"arg-type\": \"0\"}," \
  "{\"name\": \"0\", \"meta-type\": \"object\", \"members\": [{\"name\": \"uri\"}," \
  " {\"name\": \"channels\"}]}," \
  "{\"name\": \"blockdev-add\", \"meta-type\": \"command\", \"arg-type\": \"1\"}," \
  "{\"name\": \"1\", \"meta-type\": \"object\", \"members\": [{\"name\": \"driver\"}]," \
  " \"variants\": [{\"case\": \"nbd\", \"type\": \"2\"}]}," \
  "{\"name\": \"2\", \"meta-type\": \"object\", \"members\": [{\"name\": \"server\"}]}," \
  "{\"name\": 3, \"meta-type\": \"command\"}, 7]"

/* Read once per connection, on the first question; a command the peer lacks has no arguments. */
static void
test_schema (Fixture *fx, gconstpointer data)
{
  fake_qmp_script (fx->fake, "query-qmp-schema", SCHEMA);
  fake_qmp_script (fx->fake, "migrate", "\"return\": {}");
  fake_qmp_script (fx->fake, "blockdev-add", "\"return\": {}");
  fixture_connect (fx);
  g_assert_cmpuint (fake_qmp_count (fx->fake, "query-qmp-schema"), ==, 0);
  g_assert_true (qmp_client_has_argument (fx->qmp, "migrate", "channels"));
  g_assert_false (qmp_client_has_argument (fx->qmp, "migrate", "blk"));
  g_assert_true (qmp_client_has_argument (fx->qmp, "blockdev-add", "server"));
  g_assert_true (qmp_client_has_argument (fx->qmp, "blockdev-add", "driver"));
  g_assert_false (qmp_client_has_argument (fx->qmp, "yank", "instances"));
  g_assert_cmpuint (fake_qmp_count (fx->fake, "query-qmp-schema"), ==, 1);
}

static void
test_schema_missing (Fixture *fx, gconstpointer data)
{
  fake_qmp_script (fx->fake, "migrate", "\"return\": {}");
  fixture_connect (fx);
  g_assert_false (qmp_client_has_argument (fx->qmp, "migrate", "uri"));
  g_assert_cmpuint (fake_qmp_count (fx->fake, "query-qmp-schema"), ==, 0);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
#define ADD(path, func) g_test_add (path, Fixture, NULL, fixture_setup, func, fixture_teardown)
  ADD ("/qmp-commands/wire/block", test_wire_block);
  ADD ("/qmp-commands/wire/nbd-migration", test_wire_nbd_migration);
  ADD ("/qmp-commands/reply/migrate", test_reply_migrate);
  ADD ("/qmp-commands/reply/block", test_reply_block);
  ADD ("/qmp-commands/schema", test_schema);
  ADD ("/qmp-commands/schema/missing", test_schema_missing);
  return g_test_run ();
}
