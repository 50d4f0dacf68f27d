/* Unit tests of the scripted fake QEMU itself: schema checks, order, any-order sections, events. */
#include "tests/unit/fake-qemu.h"

#include <signal.h>

#include "qmp/qmp-wait.h"

/* Validates @command with @args_json (NULL: none); returns the error text or NULL. */
static char *
validate (const char *command, const char *args_json)
{
  g_autoptr(JsonNode) args = args_json != NULL ? json_from_string (args_json, NULL) : NULL;
  g_autoptr(GError) error = NULL;

  g_assert_true (args_json == NULL || args != NULL);
  if (fake_qemu_validate (command, args, &error))
    return NULL;
  return g_strdup (error->message);
}

#define ASSERT_VALID(cmd, args) g_assert_null (validate (cmd, args))
#define ASSERT_INVALID(cmd, args, msg)                        \
  G_STMT_START {                                              \
    g_autofree char *m_ = validate (cmd, args);               \
    g_assert_cmpstr (m_, ==, msg);                            \
  } G_STMT_END

static void
test_schema (void)
{
  ASSERT_VALID ("query-block", NULL);
  ASSERT_VALID ("query-status", "{}");
  ASSERT_VALID ("blockdev-add", "{\"driver\":\"qcow2\",\"node-name\":\"n1\","
                "\"file\":{\"driver\":\"file\",\"filename\":\"/tmp/x\"}}");
  ASSERT_VALID ("blockdev-add", "{\"driver\":\"qcow2\",\"node-name\":\"n1\",\"file\":\"other\"}");
  ASSERT_VALID ("block-job-cancel", "{\"device\":\"j\",\"force\":false}");
  ASSERT_INVALID ("blockdev-frobnicate", NULL,
                  "blockdev-frobnicate: not a command of the saved schema");
  ASSERT_INVALID ("SHUTDOWN", NULL, "SHUTDOWN: not a command of the saved schema");
  /* what version-dependent scripts ask (QEMU 7.2's schema in this test) */
  g_assert_true (fake_qemu_schema_has ("nbd-server-start", NULL));
  g_assert_true (fake_qemu_schema_has ("nbd-server-start", "max-connections"));
  g_assert_false (fake_qemu_schema_has ("nbd-server-start", "handshake-max-seconds"));
  g_assert_false (fake_qemu_schema_has ("block-job-change", NULL));
  g_assert_false (fake_qemu_schema_has ("SHUTDOWN", NULL));
  ASSERT_INVALID ("block-job-cancel", NULL,
                  "block-job-cancel: arguments: device: required, missing");
  ASSERT_INVALID ("block-job-cancel", "{\"device\":\"j\",\"forc\":true}",
                  "block-job-cancel: arguments: forc: unknown argument");
  ASSERT_INVALID ("block-job-cancel", "{\"device\":1}",
                  "block-job-cancel: arguments: device: expected string");
  ASSERT_INVALID ("block-job-set-speed", "{\"device\":\"j\",\"speed\":\"fast\"}",
                  "block-job-set-speed: arguments: speed: expected int");
  ASSERT_INVALID ("blockdev-add", "{\"driver\":\"qcow2\",\"node-name\":\"n1\","
                  "\"file\":{\"driver\":\"file\",\"filename\":7}}",
                  "blockdev-add: arguments: file: matches no branch of its alternate");
  ASSERT_INVALID ("blockdev-add", "{\"driver\":\"qcow3\",\"node-name\":\"n1\"}",
                  "blockdev-add: arguments: driver: not a value of its enum");
  ASSERT_INVALID ("blockdev-add", "{\"driver\":\"nbd\",\"node-name\":\"n1\"}",
                  "blockdev-add: arguments: server: required, missing");
  ASSERT_INVALID ("blockdev-add", "{\"driver\":\"raw\",\"filename\":\"/x\",\"file\":\"f\"}",
                  "blockdev-add: arguments: filename: unknown argument");
  ASSERT_INVALID ("migrate-set-capabilities", "{\"capabilities\":[{\"capability\":\"events\"}]}",
                  "migrate-set-capabilities: arguments: capabilities[0].state: required, missing");
}

typedef struct {
  FakeQemu *fake;
  QmpClient *qmp;
} Fixture;

static void
setup (Fixture *fx, gconstpointer data)
{
  fx->fake = fake_qemu_new ();
}

static void
teardown (Fixture *fx, gconstpointer data)
{
  if (fx->qmp != NULL)
    qmp_client_close (fx->qmp);
  g_clear_object (&fx->qmp);
  g_clear_pointer (&fx->fake, fake_qemu_free);
}

/* Runs @command with @args_json; returns the result as JSON text or the error's. */
static char *
run (Fixture *fx, const char *command, const char *args_json)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonNode) ret = NULL;

  if (fx->qmp == NULL)
    fx->qmp = fake_qemu_connect (fx->fake, "fake");
  ret = qmp_client_execute_sync (fx->qmp, command,
                                 args_json != NULL ? json_from_string (args_json, NULL) : NULL,
                                 NULL, &error);
  return ret != NULL ? json_to_string (ret, FALSE) : g_strdup (error->message);
}

#define ASSERT_RUN(fx, cmd, args, want)           \
  G_STMT_START {                                  \
    g_autofree char *got_ = run (fx, cmd, args);  \
    g_assert_cmpstr (got_, ==, want);             \
  } G_STMT_END

static void
assert_failed (Fixture *fx, const char *message)
{
  g_autoptr(GError) error = NULL;

  g_assert_false (fake_qemu_check (fx->fake, &error));
  g_assert_cmpstr (error->message, ==, message);
}

static void
test_in_order (Fixture *fx, gconstpointer data)
{
  fake_qemu_expect (fx->fake, "query-status", NULL, "{\"status\":\"running\"}");
  fake_qemu_expect_error (fx->fake, "block-job-cancel", "{\"force\":false,\"device\":\"j\"}",
                          "DeviceNotFound", "Block job 'j' not found");
  fake_qemu_expect (fx->fake, "query-block", "*", "[]");
  ASSERT_RUN (fx, "query-status", NULL, "{\"status\":\"running\"}");
  ASSERT_RUN (fx, "block-job-cancel", "{\"device\":\"j\",\"force\":false}",
              "fake: block-job-cancel: Block job 'j' not found (DeviceNotFound)");
  ASSERT_RUN (fx, "query-block", NULL, "[]");
  fake_qemu_verify (fx->fake);
  g_assert_cmpuint (fake_qemu_count (fx->fake, "query-commands"), ==, 1);
  g_assert_true (qmp_client_has_command (fx->qmp, "blockdev-mirror"));
}

static void
test_out_of_order (Fixture *fx, gconstpointer data)
{
  fake_qemu_expect (fx->fake, "query-status", NULL, "{}");
  fake_qemu_expect (fx->fake, "query-block", NULL, "[]");
  ASSERT_RUN (fx, "query-block", NULL,
              "fake: query-block: fake-qemu: unexpected query-block, expected query-status");
  assert_failed (fx, "fake-qemu: unexpected query-block, expected query-status");
}

static void
test_wrong_arguments (Fixture *fx, gconstpointer data)
{
  fake_qemu_expect (fx->fake, "block-job-cancel", "{\"device\":\"a\"}", "{}");
  g_free (run (fx, "block-job-cancel", "{\"device\":\"b\"}"));
  assert_failed (fx, "fake-qemu: unexpected block-job-cancel {\"device\":\"b\"}, "
                     "expected block-job-cancel {\"device\":\"a\"}");
}

static void
test_unknown_to_schema (Fixture *fx, gconstpointer data)
{
  /* Even a scripted command fails when QEMU 7.2 would not know it. */
  fake_qemu_expect (fx->fake, "job-frobnicate", NULL, "{}");
  g_free (run (fx, "job-frobnicate", NULL));
  assert_failed (fx, "fake-qemu: job-frobnicate: not a command of the saved schema");
  g_free (run (fx, "block-job-cancel", "{\"id\":\"x\"}"));
  assert_failed (fx, "fake-qemu: job-frobnicate: not a command of the saved schema");
}

static void
test_never_received (Fixture *fx, gconstpointer data)
{
  fake_qemu_expect (fx->fake, "query-status", NULL, "{}");
  fake_qemu_expect (fx->fake, "cont", NULL, "{}");
  ASSERT_RUN (fx, "query-status", NULL, "{}");
  assert_failed (fx, "fake-qemu: expected cont, never received (1 scripted left)");
  ASSERT_RUN (fx, "cont", NULL, "{}");
  fake_qemu_verify (fx->fake);
}

static void
test_any_order (Fixture *fx, gconstpointer data)
{
  fake_qemu_expect (fx->fake, "stop", NULL, "{}");
  fake_qemu_any_order_begin (fx->fake);
  fake_qemu_expect (fx->fake, "blockdev-del", "{\"node-name\":\"a\"}", "{}");
  fake_qemu_expect (fx->fake, "blockdev-del", "{\"node-name\":\"b\"}", "{}");
  fake_qemu_any_order_end (fx->fake);
  fake_qemu_expect (fx->fake, "cont", NULL, "{}");
  ASSERT_RUN (fx, "stop", NULL, "{}");
  ASSERT_RUN (fx, "blockdev-del", "{\"node-name\":\"b\"}", "{}");
  ASSERT_RUN (fx, "blockdev-del", "{\"node-name\":\"a\"}", "{}");
  ASSERT_RUN (fx, "cont", NULL, "{}");
  fake_qemu_verify (fx->fake);
}

static void
test_events_and_close (Fixture *fx, gconstpointer data)
{
  static const char *const ends[] = { "concluded", NULL };
  g_autoptr(QmpEventWait) wait = NULL;
  g_autoptr(JsonObject) event = NULL;
  g_autoptr(GError) error = NULL;

  fake_qemu_expect (fx->fake, "query-status", NULL, "{}");
  fake_qemu_event (fx->fake, "JOB_STATUS_CHANGE", "{\"id\":\"j\",\"status\":\"concluded\"}");
  fake_qemu_expect_close (fx->fake, "cont", NULL);
  fx->qmp = fake_qemu_connect (fx->fake, "fake");
  wait = qmp_event_wait_new (fx->qmp, "JOB_STATUS_CHANGE", "status", ends);
  ASSERT_RUN (fx, "query-status", NULL, "{}");
  event = qmp_event_wait_sync (wait, 5000, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (json_object_get_string_member (event, "id"), ==, "j");
  ASSERT_RUN (fx, "cont", NULL, "fake: cont: QMP connection closed by QEMU");
  fake_qemu_verify (fx->fake);
}

static void
test_raw_and_always (Fixture *fx, gconstpointer data)
{
  fake_qemu_expect_raw (fx->fake, "query-status", NULL, "\"return\": {\"a\": [[[1]]]}");
  fake_qemu_answer_always (fx->fake, "query-block", "\"return\": [1]");
  ASSERT_RUN (fx, "query-block", NULL, "[1]");
  ASSERT_RUN (fx, "query-status", NULL, "{\"a\":[[[1]]]}");
  ASSERT_RUN (fx, "query-block", NULL, "[1]");
  g_assert_cmpuint (fake_qemu_count (fx->fake, "query-block"), ==, 2);
  fake_qemu_verify (fx->fake);
}

int
main (int argc, char **argv)
{
  signal (SIGPIPE, SIG_IGN);
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/fake-qemu/schema", test_schema);
#define ADD(path, func) g_test_add ("/fake-qemu/" path, Fixture, NULL, setup, func, teardown)
  ADD ("in-order", test_in_order);
  ADD ("out-of-order", test_out_of_order);
  ADD ("wrong-arguments", test_wrong_arguments);
  ADD ("unknown-to-schema", test_unknown_to_schema);
  ADD ("never-received", test_never_received);
  ADD ("any-order", test_any_order);
  ADD ("events-and-close", test_events_and_close);
  ADD ("raw-and-always", test_raw_and_always);
  return g_test_run ();
}
