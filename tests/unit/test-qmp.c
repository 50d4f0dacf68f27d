/* Unit tests for the QMP client (qmp/qmp-client.c) against the fake QEMU, driven step by step on a socketpair. */
#include "qmp/qmp-client.h"
#include "tests/unit/fake-qemu.h"

#include <errno.h>
#include <fcntl.h>
#include <glib-unix.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define LABEL "src"
#define WAIT_LIMIT_US (5 * G_USEC_PER_SEC)

/* Waits (iterating the default main context) until @cond holds; fails after 5 s. */
#define WAIT_UNTIL(cond)                                                \
  G_STMT_START {                                                        \
    gint64 deadline_ = g_get_monotonic_time () + WAIT_LIMIT_US;         \
    while (!(cond))                                                     \
      wait_step (deadline_);                                            \
  } G_STMT_END

typedef struct {
  QmpClient *client;
  int client_fd;            /* the client's end until qmp_client_adopt_fd_async takes it */
  FakeQemu *fake;           /* serves the other end, in interactive mode */
  guint tick;               /* wakes blocking iterations so WAIT_UNTIL can give up */
  GPtrArray *log;           /* "event:NAME" / "reply:COMMAND", in delivery order */
  GPtrArray *event_data;    /* compact JSON of each event's data */
  guint closed_count;
  GError *closed_error;
} Fixture;

typedef struct {
  Fixture *fx;
  char *command;
  GAsyncResult *result;
} Call;

/* ---- main loop helpers ---------------------------------------------------- */

static void
wait_step (gint64 deadline)
{
  if (g_get_monotonic_time () >= deadline)
    g_error ("timed out waiting for the QMP client");
  g_main_context_iteration (NULL, TRUE);
}

static void
flush (void)
{
  while (g_main_context_iteration (NULL, FALSE))
    ;
}

static gboolean
tick_cb (gpointer user_data)
{
  return G_SOURCE_CONTINUE;
}

static void
store_result_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  GAsyncResult **slot = user_data;

  g_assert_null (*slot);
  *slot = g_object_ref (result);
}

static char *
node_to_string (JsonNode *node)
{
  return json_to_string (node, FALSE);
}

/* ---- the fake peer: tests/unit/fake-qemu.c ---------------------------------- */

static void
peer_write (Fixture *fx, const char *text)
{
  fake_qemu_send_raw (fx->fake, text);
}

/* Ends the peer's side of the conversation (QEMU went away). */
static void
peer_close (Fixture *fx)
{
  fake_qemu_close (fx->fake);
}

/* Takes the client's next command (checked against QEMU 7.2's schema by the
 * fake), checks its name (unless NULL) and arguments (@args as JSON text, NULL:
 * none), returns its id. */
static char *
peer_expect (Fixture *fx, const char *command, const char *args)
{
  char *id = fake_qemu_take (fx->fake, command, args);

  g_assert_true (g_str_has_prefix (id, "blkmig-"));
  return id;
}

static void
peer_reply (Fixture *fx, const char *id, const char *return_json)
{
  fake_qemu_reply (fx->fake, id, return_json);
}

/* ---- client side helpers -------------------------------------------------- */

static void
on_event (QmpClient *client, const char *name, JsonObject *data, Fixture *fx)
{
  g_autoptr(JsonNode) node = json_node_init_object (json_node_alloc (), data);

  g_assert_nonnull (data);
  g_ptr_array_add (fx->log, g_strconcat ("event:", name, NULL));
  g_ptr_array_add (fx->event_data, node_to_string (node));
}

static void
on_closed (QmpClient *client, const GError *why, Fixture *fx)
{
  g_assert_nonnull (why);
  g_assert_cmpint (qmp_client_get_state (client), ==, QMP_STATE_CLOSED);
  fx->closed_count++;
  if (fx->closed_error == NULL)
    fx->closed_error = g_error_copy (why);
}

static void
call_done_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Call *call = user_data;

  g_assert_null (call->result);
  call->result = g_object_ref (result);
  g_ptr_array_add (call->fx->log, g_strconcat ("reply:", call->command, NULL));
}

static Call *
call_start (Fixture *fx, const char *command, JsonNode *args, int fd, guint timeout_ms,
            GCancellable *cancellable)
{
  Call *call = g_new0 (Call, 1);

  call->fx = fx;
  call->command = g_strdup (command);
  qmp_client_execute_async (fx->client, command, args, fd, timeout_ms, cancellable,
                            call_done_cb, call);
  return call;
}

/* Waits for @call, frees it and returns the command's result. */
static JsonNode *
call_finish (Call *call, GError **error)
{
  JsonNode *ret;

  WAIT_UNTIL (call->result != NULL);
  ret = qmp_client_execute_finish (call->fx->client, call->result, error);
  g_object_unref (call->result);
  g_free (call->command);
  g_free (call);
  return ret;
}

/* Waits for @call and forgets its outcome. */
static void
call_finish_discard (Call *call)
{
  g_autoptr(JsonNode) ret = call_finish (call, NULL);
}

/* Waits for @call and checks that it returned exactly @expected_json. */
static void
call_finish_ok (Call *call, const char *expected_json)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonNode) ret = call_finish (call, &error);
  g_autofree char *text = NULL;

  g_assert_no_error (error);
  g_assert_nonnull (ret);
  text = node_to_string (ret);
  g_assert_cmpstr (text, ==, expected_json);
}

/* Waits for @call and checks that it failed with @domain/@code and @message. */
static void
call_finish_error (Call *call, GQuark domain, int code, const char *message)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonNode) ret = call_finish (call, &error);

  g_assert_null (ret);
  g_assert_error (error, domain, code);
  if (message != NULL)
    g_assert_cmpstr (error->message, ==, message);
}

static void G_GNUC_NULL_TERMINATED
assert_log (Fixture *fx, ...)
{
  va_list ap;
  guint i = 0;

  va_start (ap, fx);
  for (const char *want = va_arg (ap, const char *); want != NULL;
       want = va_arg (ap, const char *), i++)
    {
      g_assert_cmpuint (i, <, fx->log->len);
      g_assert_cmpstr (fx->log->pdata[i], ==, want);
    }
  va_end (ap);
  g_assert_cmpuint (fx->log->len, ==, i);
}

/* Runs one command the peer answers with @return_json, checking the result. */
static void
roundtrip (Fixture *fx, const char *command, const char *return_json)
{
  Call *call = call_start (fx, command, NULL, -1, 0, NULL);
  g_autofree char *id = peer_expect (fx, command, NULL);

  peer_reply (fx, id, return_json);
  call_finish_ok (call, return_json);
}

/* ---- fixtures ------------------------------------------------------------- */

static void
fixture_setup (Fixture *fx, gboolean greet)
{
  fx->fake = fake_qemu_new ();
  fake_qemu_set_manual (fx->fake, NULL, NULL);
  fake_qemu_keep_fds (fx->fake);
  fx->client_fd = fake_qemu_socketpair (fx->fake, greet);
  fx->tick = g_timeout_add (100, tick_cb, NULL);
  fx->log = g_ptr_array_new_with_free_func (g_free);
  fx->event_data = g_ptr_array_new_with_free_func (g_free);
}

static void
fixture_setup_pair (Fixture *fx, gconstpointer data)
{
  fixture_setup (fx, FALSE);
}

/* Greeting, qmp_capabilities, query-commands (the fake answers them from the
 * schema): leaves a READY client. */
static void
fixture_setup_ready (Fixture *fx, gconstpointer data)
{
  g_autoptr(GAsyncResult) result = NULL;
  g_autoptr(GError) error = NULL;

  fixture_setup (fx, TRUE);
  qmp_client_adopt_fd_async (fx->client_fd, LABEL, NULL, store_result_cb, &result);
  fx->client_fd = -1;
  WAIT_UNTIL (result != NULL);
  fx->client = qmp_client_adopt_fd_finish (result, &error);
  g_assert_no_error (error);
  g_assert_nonnull (fx->client);
  g_signal_connect (fx->client, "event", G_CALLBACK (on_event), fx);
  g_signal_connect (fx->client, "closed", G_CALLBACK (on_closed), fx);
}

static void
fixture_teardown (Fixture *fx, gconstpointer data)
{
  if (fx->client != NULL)
    qmp_client_close (fx->client);
  g_clear_object (&fx->client);
  g_clear_handle_id (&fx->tick, g_source_remove);
  flush ();
  if (fx->client_fd >= 0)
    close (fx->client_fd);
  fake_qemu_verify (fx->fake);
  g_clear_pointer (&fx->fake, fake_qemu_free);
  g_ptr_array_unref (fx->log);
  g_ptr_array_unref (fx->event_data);
  g_clear_error (&fx->closed_error);
}

/* ---- tests ---------------------------------------------------------------- */

static void
test_handshake (Fixture *fx, gconstpointer data)
{
  g_assert_cmpint (qmp_client_get_state (fx->client), ==, QMP_STATE_READY);
  g_assert_cmpstr (qmp_client_get_version (fx->client), ==, "7.2.22");
  g_assert_cmpstr (qmp_client_get_label (fx->client), ==, LABEL);
  g_assert_true (qmp_client_has_command (fx->client, "getfd"));
  g_assert_true (qmp_client_has_command (fx->client, "blockdev-mirror"));
  g_assert_false (qmp_client_has_command (fx->client, "blockdev-frobnicate"));
  g_assert_false (qmp_client_has_command (fx->client, "drive"));
  g_assert_false (qmp_client_has_command (fx->client, ""));
  g_assert_cmpuint (fake_qemu_count (fx->fake, "qmp_capabilities"), ==, 1);
  g_assert_cmpuint (fake_qemu_count (fx->fake, "query-commands"), ==, 1);
  /* Nothing else was sent and nothing happened yet. */
  fake_qemu_assert_quiet (fx->fake);
  g_assert_cmpuint (fx->log->len, ==, 0);
  g_assert_cmpuint (fx->closed_count, ==, 0);
}

static void
test_arguments (Fixture *fx, gconstpointer data)
{
  JsonNode *args = qmp_args_new ("device", qmp_str ("vda"), "target", qmp_str ("/t"),
                                 "sync", qmp_str ("full"), "unmap", qmp_bool (TRUE),
                                 "speed", qmp_int (1048576), "skipped", NULL, NULL);
  Call *call = call_start (fx, "drive-mirror", args, -1, 0, NULL);
  g_autofree char *id = peer_expect (fx, "drive-mirror",
                                     "{\"device\":\"vda\",\"target\":\"/t\",\"sync\":\"full\","
                                     "\"unmap\":true,\"speed\":1048576}");

  g_assert_cmpstr (id, ==, "blkmig-3");
  peer_reply (fx, id, "{}");
  call_finish_ok (call, "{}");
}

static void
test_events_between (Fixture *fx, gconstpointer data)
{
  Call *call = call_start (fx, "query-block", NULL, -1, 0, NULL);
  g_autofree char *id = peer_expect (fx, "query-block", NULL);

  peer_write (fx, "{\"event\":\"JOB_STATUS_CHANGE\",\"data\":{\"status\":\"running\","
                  "\"id\":\"mirror0\"},\"timestamp\":{\"seconds\":1,\"microseconds\":2}}\n");
  peer_write (fx, "{\"timestamp\":{\"seconds\":1,\"microseconds\":3},\"event\":\"STOP\"}\n");
  peer_reply (fx, id, "[{\"device\":\"vda\"}]");
  call_finish_ok (call, "[{\"device\":\"vda\"}]");
  assert_log (fx, "event:JOB_STATUS_CHANGE", "event:STOP", "reply:query-block", NULL);
  g_assert_cmpstr (fx->event_data->pdata[0], ==, "{\"status\":\"running\",\"id\":\"mirror0\"}");
  g_assert_cmpstr (fx->event_data->pdata[1], ==, "{}");
  g_assert_cmpint (qmp_client_get_state (fx->client), ==, QMP_STATE_READY);
}

static void
test_fragmented (Fixture *fx, gconstpointer data)
{
  Call *call = call_start (fx, "query-status", NULL, -1, 0, NULL);
  g_autofree char *id = peer_expect (fx, "query-status", NULL);
  const char *event = "{\"event\":\"BLOCK_JOB_READY\",\"data\":{\"device\":\"gr\xc3\xb6\xc3\x9f" "e\"}}\n";
  g_autofree char *text = g_strdup_printf ("%s{\"return\":{\"status\":\"running\"},"
                                           "\"id\":\"%s\"}\n", event, id);
  gsize len = strlen (text);

  for (gsize i = 0; i < len; i++)
    {
      char byte[2] = { text[i], '\0' };

      peer_write (fx, byte);
      flush ();
      g_assert_cmpuint (fx->log->len, ==, i + 1 < strlen (event) ? 0 : i + 1 < len ? 1 : 2);
    }
  call_finish_ok (call, "{\"status\":\"running\"}");
  assert_log (fx, "event:BLOCK_JOB_READY", "reply:query-status", NULL);
  g_assert_cmpstr (fx->event_data->pdata[0], ==, "{\"device\":\"gr\xc3\xb6\xc3\x9f" "e\"}");
}

static void
test_batched (Fixture *fx, gconstpointer data)
{
  Call *a = call_start (fx, "query-block", NULL, -1, 0, NULL);
  Call *b = call_start (fx, "query-jobs", NULL, -1, 0, NULL);
  g_autofree char *id_a = peer_expect (fx, "query-block", NULL);
  g_autofree char *id_b = peer_expect (fx, "query-jobs", NULL);
  g_autofree char *text = g_strdup_printf ("{\"return\":[\"b\"],\"id\":\"%s\"}\n"
                                           "{\"event\":\"RESUME\"}\n"
                                           "{\"id\":\"%s\",\"return\":[\"a\"]}\n",
                                           id_b, id_a);

  g_assert_cmpstr (id_a, !=, id_b);
  peer_write (fx, text);
  call_finish_ok (b, "[\"b\"]");
  call_finish_ok (a, "[\"a\"]");
  g_assert_cmpuint (fx->log->len, ==, 3);
  g_assert_true (g_ptr_array_find_with_equal_func (fx->log, "event:RESUME", g_str_equal, NULL));
  g_assert_cmpstr (fx->event_data->pdata[0], ==, "{}");
}

static void
test_eof_mid_reply (Fixture *fx, gconstpointer data)
{
  Call *a = call_start (fx, "query-block", NULL, -1, 0, NULL);
  Call *b = call_start (fx, "query-status", NULL, -1, 0, NULL);
  g_autofree char *id_a = peer_expect (fx, "query-block", NULL);
  g_autofree char *id_b = peer_expect (fx, "query-status", NULL);
  g_autofree char *half = g_strdup_printf ("{\"return\":{},\"id\":\"%s", id_a);

  peer_write (fx, half);
  peer_close (fx);
  call_finish_error (a, QMP_ERROR, QMP_ERROR_CLOSED,
                     LABEL ": query-block: QMP connection closed by QEMU");
  call_finish_error (b, QMP_ERROR, QMP_ERROR_CLOSED,
                     LABEL ": query-status: QMP connection closed by QEMU");
  g_assert_cmpint (qmp_client_get_state (fx->client), ==, QMP_STATE_CLOSED);
  g_assert_cmpuint (fx->closed_count, ==, 1);
  g_assert_error (fx->closed_error, QMP_ERROR, QMP_ERROR_CLOSED);
  g_assert_cmpstr (fx->closed_error->message, ==, LABEL ": QMP connection closed by QEMU");
  /* Later commands fail at once; closing again signals nothing. */
  call_finish_error (call_start (fx, "query-status", NULL, -1, 0, NULL), QMP_ERROR,
                     QMP_ERROR_CLOSED, LABEL ": query-status: QMP connection is closed");
  qmp_client_close (fx->client);
  flush ();
  g_assert_cmpuint (fx->closed_count, ==, 1);
  g_assert_cmpuint (fx->log->len, ==, 3);
}

static void
test_close_fails_pending (Fixture *fx, gconstpointer data)
{
  Call *call = call_start (fx, "stop", NULL, -1, 0, NULL);
  g_autofree char *id = peer_expect (fx, "stop", NULL);

  qmp_client_close (fx->client);
  call_finish_error (call, QMP_ERROR, QMP_ERROR_CLOSED,
                     LABEL ": stop: QMP connection closed by blkmig");
  g_assert_cmpuint (fx->closed_count, ==, 1);
  g_assert_cmpstr (fx->closed_error->message, ==, LABEL ": QMP connection closed by blkmig");
  WAIT_UNTIL (fake_qemu_client_gone (fx->fake));
}

static void
close_on_reply_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr(JsonNode) ret = qmp_client_execute_finish (QMP_CLIENT (source), result, NULL);

  g_assert_nonnull (ret);
  *(gboolean *) user_data = TRUE;
  qmp_client_close (QMP_CLIENT (source));
}

static void
test_close_in_callback (Fixture *fx, gconstpointer data)
{
  gboolean first_done = FALSE;
  Call *second;
  g_autofree char *id_a = NULL;
  g_autofree char *id_b = NULL;
  g_autofree char *text = NULL;

  qmp_client_execute_async (fx->client, "query-block", NULL, -1, 0, NULL,
                            close_on_reply_cb, &first_done);
  second = call_start (fx, "query-status", NULL, -1, 0, NULL);
  id_a = peer_expect (fx, "query-block", NULL);
  id_b = peer_expect (fx, "query-status", NULL);
  text = g_strdup_printf ("{\"return\":[],\"id\":\"%s\"}\n{\"event\":\"STOP\"}\n"
                          "{\"return\":{},\"id\":\"%s\"}\n", id_a, id_b);
  peer_write (fx, text);
  /* Depending on when GTask runs the first callback, the second command either
   * got its reply or failed with the close: both are fine, crashing is not. */
  call_finish_discard (second);
  g_assert_true (first_done);
  g_assert_cmpint (qmp_client_get_state (fx->client), ==, QMP_STATE_CLOSED);
  g_assert_cmpuint (fx->closed_count, ==, 1);
  WAIT_UNTIL (fake_qemu_client_gone (fx->fake));
}

/* Sends one command, answers it with @error_json, checks the GError. */
static void
check_error_reply (Fixture *fx, const char *command, const char *error_json, int code,
                   const char *message)
{
  Call *call = call_start (fx, command, NULL, -1, 0, NULL);
  g_autofree char *id = peer_expect (fx, command, NULL);
  g_autofree char *text = g_strdup_printf ("{\"id\":\"%s\",\"error\":%s}\n", id, error_json);

  peer_write (fx, text);
  call_finish_error (call, QMP_ERROR, code, message);
}

static void
test_error_replies (Fixture *fx, gconstpointer data)
{
  check_error_reply (fx, "stop",
                     "{\"class\":\"GenericError\",\"desc\":\"Need a root block node\"}",
                     QMP_ERROR_GENERIC, LABEL ": stop: Need a root block node");
  check_error_reply (fx, "query-jobs",
                     "{\"class\":\"DeviceNotFound\",\"desc\":\"Block job 'job0' not found\"}",
                     QMP_ERROR_DEVICE_NOT_FOUND,
                     LABEL ": query-jobs: Block job 'job0' not found (DeviceNotFound)");
  /* (a command 7.2 does not know would fail the fake's schema check: the class
   * arrives here with one it knows) */
  check_error_reply (fx, "cont",
                     "{\"class\":\"CommandNotFound\","
                     "\"desc\":\"The command cont has not been found\"}",
                     QMP_ERROR_COMMAND_NOT_FOUND,
                     LABEL ": cont: The command cont has not been found (CommandNotFound)");
  check_error_reply (fx, "query-block", "{\"class\":\"NewClass\",\"desc\":\"odd\"}",
                     QMP_ERROR_GENERIC, LABEL ": query-block: odd");
  check_error_reply (fx, "query-block", "{\"class\":\"GenericError\"}",
                     QMP_ERROR_GENERIC, LABEL ": query-block: (no text)");
  g_assert_cmpint (qmp_client_get_state (fx->client), ==, QMP_STATE_READY);
  g_assert_cmpuint (fx->closed_count, ==, 0);
}

static void
test_error_reply_without_id (Fixture *fx, gconstpointer data)
{
  Call *call = call_start (fx, "query-status", NULL, -1, 0, NULL);
  g_autofree char *id = peer_expect (fx, "query-status", NULL);

  /* What QEMU sends for input it cannot parse: no id to match. */
  peer_write (fx, "{\"error\":{\"class\":\"GenericError\",\"desc\":\"JSON parse error\"}}\n");
  peer_write (fx, "{\"return\":{},\"id\":\"blkmig-999\"}\n");
  peer_write (fx, "{\"return\":{},\"id\":7}\n");
  flush ();
  g_assert_cmpuint (fx->log->len, ==, 0);
  g_assert_cmpint (qmp_client_get_state (fx->client), ==, QMP_STATE_READY);
  peer_reply (fx, id, "{\"running\":true}");
  call_finish_ok (call, "{\"running\":true}");
}

static void
test_timeout (Fixture *fx, gconstpointer data)
{
  gint64 start = g_get_monotonic_time ();  /* the timer runs from the call */
  Call *slow = call_start (fx, "query-block", NULL, -1, 50, NULL);
  g_autofree char *slow_id = peer_expect (fx, "query-block", NULL);
  Call *next;
  g_autofree char *next_id = NULL;

  call_finish_error (slow, QMP_ERROR, QMP_ERROR_TIMEOUT,
                     LABEL ": query-block: no reply from QEMU within 50 ms");
  g_assert_cmpint (g_get_monotonic_time () - start, >=, 40 * 1000);
  next = call_start (fx, "query-status", NULL, -1, 0, NULL);
  next_id = peer_expect (fx, "query-status", NULL);
  /* The late reply must neither crash nor complete the next command. */
  peer_reply (fx, slow_id, "[\"late\"]");
  flush ();
  g_assert_cmpuint (fx->log->len, ==, 1);
  peer_reply (fx, next_id, "{\"status\":\"running\"}");
  call_finish_ok (next, "{\"status\":\"running\"}");
  g_assert_cmpint (qmp_client_get_state (fx->client), ==, QMP_STATE_READY);
  g_assert_cmpuint (fx->closed_count, ==, 0);
}

static void
test_default_timeout (Fixture *fx, gconstpointer data)
{
  Call *call;
  g_autofree char *id = NULL;

  qmp_client_set_default_timeout (fx->client, 30);
  call = call_start (fx, "query-block", NULL, -1, 0, NULL);
  id = peer_expect (fx, "query-block", NULL);
  call_finish_error (call, QMP_ERROR, QMP_ERROR_TIMEOUT,
                     LABEL ": query-block: no reply from QEMU within 30 ms");
  qmp_client_set_default_timeout (fx->client, 5000);
  roundtrip (fx, "query-status", "{}");
}

/* Reads what is in the pipe's read end @fd, or "" at EOF. */
static char *
read_pipe (int fd)
{
  char buf[64];
  gssize n = read (fd, buf, sizeof buf);

  g_assert_cmpint (n, >=, 0);
  return g_strndup (buf, n);
}

static void
test_fd_passing (Fixture *fx, gconstpointer data)
{
  int p[2];
  Call *call;
  g_autofree char *id = NULL;
  g_autofree char *got = NULL;
  g_autofree char *eof = NULL;
  int received;

  g_assert_true (g_unix_open_pipe (p, FD_CLOEXEC, NULL));
  g_assert_true (g_unix_set_fd_nonblocking (p[0], TRUE, NULL));
  call = call_start (fx, "getfd", qmp_args_new ("fdname", qmp_str ("mirror0"), NULL),
                     p[1], 0, NULL);
  close (p[1]);                        /* the client keeps its own dup */
  id = peer_expect (fx, "getfd", "{\"fdname\":\"mirror0\"}");
  g_assert_cmpuint (fake_qemu_fd_count (fx->fake), ==, 1);
  received = fake_qemu_steal_fd (fx->fake);
  g_assert_cmpint (write (received, "hello", 5), ==, 5);
  got = read_pipe (p[0]);
  g_assert_cmpstr (got, ==, "hello");
  peer_reply (fx, id, "{}");
  call_finish_ok (call, "{}");
  /* Once the peer drops its copy, no write end is left: the client closed its dup. */
  close (received);
  eof = read_pipe (p[0]);
  g_assert_cmpstr (eof, ==, "");
  close (p[0]);
}

static void
test_fd_passing_sync (Fixture *fx, gconstpointer data)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonNode) ret = NULL;
  g_autofree char *id = NULL;
  int p[2];

  g_assert_true (g_unix_open_pipe (p, FD_CLOEXEC, NULL));
  /* The peer cannot answer while the sync call blocks: let it time out. */
  ret = qmp_client_execute_full_sync (fx->client, "getfd",
                                      qmp_args_new ("fdname", qmp_str ("f1"), NULL),
                                      p[1], 50, NULL, &error);
  g_assert_null (ret);
  g_assert_error (error, QMP_ERROR, QMP_ERROR_TIMEOUT);
  g_assert_cmpstr (error->message, ==, LABEL ": getfd: no reply from QEMU within 50 ms");
  id = peer_expect (fx, "getfd", "{\"fdname\":\"f1\"}");
  g_assert_cmpuint (fake_qemu_fd_count (fx->fake), ==, 1);
  close (p[0]);
  close (p[1]);
}

static void
test_cancel (Fixture *fx, gconstpointer data)
{
  g_autoptr(GCancellable) cancellable = g_cancellable_new ();
  Call *call = call_start (fx, "stop", NULL, -1, 0, cancellable);
  g_autofree char *id = peer_expect (fx, "stop", NULL);

  g_cancellable_cancel (cancellable);
  call_finish_error (call, G_IO_ERROR, G_IO_ERROR_CANCELLED, NULL);
  g_assert_cmpint (qmp_client_get_state (fx->client), ==, QMP_STATE_READY);
  /* The reply to the cancelled command arrives later and is dropped. */
  peer_reply (fx, id, "{}");
  flush ();
  g_assert_cmpuint (fx->log->len, ==, 1);
  roundtrip (fx, "query-status", "{\"status\":\"running\"}");
  g_assert_cmpuint (fx->closed_count, ==, 0);
}

static void
test_cancel_before_send (Fixture *fx, gconstpointer data)
{
  g_autoptr(GCancellable) cancellable = g_cancellable_new ();
  g_autofree char *id = NULL;
  Call *call;

  g_cancellable_cancel (cancellable);
  call = call_start (fx, "stop", NULL, -1, 0, cancellable);
  call_finish_error (call, G_IO_ERROR, G_IO_ERROR_CANCELLED, NULL);
  call = call_start (fx, "query-status", NULL, -1, 0, NULL);
  /* The cancelled command may still go out (it is dropped unanswered). */
  id = peer_expect (fx, NULL, NULL);
  if (g_str_equal (id, "blkmig-3"))
    {
      g_free (id);
      id = peer_expect (fx, "query-status", NULL);
    }
  peer_reply (fx, id, "{}");
  call_finish_ok (call, "{}");
  g_assert_cmpint (qmp_client_get_state (fx->client), ==, QMP_STATE_READY);
}

/* The peer sends @line while a command is pending: protocol error. */
static void
check_garbage (Fixture *fx, const char *line, const char *message_prefix)
{
  Call *call = call_start (fx, "query-status", NULL, -1, 0, NULL);
  g_autofree char *id = peer_expect (fx, "query-status", NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonNode) ret = NULL;
  /* "LABEL: query-status: QMP peer ..." from "LABEL: QMP peer ..." */
  g_autofree char *want = g_strconcat (LABEL ": query-status: ",
                                       message_prefix + strlen (LABEL ": "), NULL);

  peer_write (fx, line);
  ret = call_finish (call, &error);
  g_assert_null (ret);
  g_assert_error (error, QMP_ERROR, QMP_ERROR_PROTOCOL);
  g_assert_true (g_str_has_prefix (error->message, want));
  g_assert_cmpint (qmp_client_get_state (fx->client), ==, QMP_STATE_CLOSED);
  g_assert_cmpuint (fx->closed_count, ==, 1);
  g_assert_error (fx->closed_error, QMP_ERROR, QMP_ERROR_PROTOCOL);
  g_assert_true (g_str_has_prefix (fx->closed_error->message, message_prefix));
  WAIT_UNTIL (fake_qemu_client_gone (fx->fake));
}

static void
test_garbage (Fixture *fx, gconstpointer data)
{
  check_garbage (fx, "this is not JSON\n", LABEL ": QMP peer sent bad JSON: ");
  g_assert_cmpuint (strlen (fx->closed_error->message),
                    >, strlen (LABEL ": QMP peer sent bad JSON: "));
}

static void
test_not_object (Fixture *fx, gconstpointer data)
{
  check_garbage (fx, "[1,2,3]\n",
                 LABEL ": QMP peer sent a message that is not a JSON object");
}

static void
test_greeting_timeout (Fixture *fx, gconstpointer data)
{
  g_autoptr(GAsyncResult) result = NULL;
  g_autoptr(GError) error = NULL;
  QmpClient *client;

  qmp_client_set_connect_timeout_default (50);
  qmp_client_adopt_fd_async (fx->client_fd, LABEL, NULL, store_result_cb, &result);
  fx->client_fd = -1;
  qmp_client_set_connect_timeout_default (0);
  WAIT_UNTIL (result != NULL);
  client = qmp_client_adopt_fd_finish (result, &error);
  g_assert_null (client);
  g_assert_error (error, QMP_ERROR, QMP_ERROR_TIMEOUT);
  g_assert_cmpstr (error->message, ==, LABEL ": no QMP greeting within 50 ms");
  WAIT_UNTIL (fake_qemu_client_gone (fx->fake));
  g_assert_cmpuint (fake_qemu_count (fx->fake, "qmp_capabilities"), ==, 0);
}

static void
test_eof_before_greeting (Fixture *fx, gconstpointer data)
{
  g_autoptr(GAsyncResult) result = NULL;
  g_autoptr(GError) error = NULL;

  qmp_client_adopt_fd_async (fx->client_fd, LABEL, NULL, store_result_cb, &result);
  fx->client_fd = -1;
  peer_write (fx, "{\"QMP\":");
  peer_close (fx);
  WAIT_UNTIL (result != NULL);
  g_assert_null (qmp_client_adopt_fd_finish (result, &error));
  g_assert_error (error, QMP_ERROR, QMP_ERROR_CLOSED);
  g_assert_cmpstr (error->message, ==, LABEL ": QMP connection closed by QEMU");
}

static void
test_adopt_bad_fd (Fixture *fx, gconstpointer data)
{
  g_autoptr(GAsyncResult) result = NULL;
  g_autoptr(GError) error = NULL;
  int p[2];

  g_assert_true (g_unix_open_pipe (p, FD_CLOEXEC, NULL));
  qmp_client_adopt_fd_async (p[0], LABEL, NULL, store_result_cb, &result);
  WAIT_UNTIL (result != NULL);
  g_assert_null (qmp_client_adopt_fd_finish (result, &error));
  g_assert_error (error, QMP_ERROR, QMP_ERROR_CLOSED);
  g_assert_true (g_str_has_prefix (error->message, LABEL ": cannot use QMP fd "));
  /* The client owns the fd even on failure: it is closed. */
  g_assert_cmpint (fcntl (p[0], F_GETFD), ==, -1);
  close (p[1]);
}

int
main (int argc, char **argv)
{
  signal (SIGPIPE, SIG_IGN);
  g_test_init (&argc, &argv, NULL);

#define ADD_READY(path, func) \
  g_test_add ("/qmp/" path, Fixture, NULL, fixture_setup_ready, func, fixture_teardown)
#define ADD_PAIR(path, func) \
  g_test_add ("/qmp/" path, Fixture, NULL, fixture_setup_pair, func, fixture_teardown)
  ADD_READY ("handshake", test_handshake);
  ADD_READY ("arguments", test_arguments);
  ADD_READY ("events-between", test_events_between);
  ADD_READY ("fragmented", test_fragmented);
  ADD_READY ("batched", test_batched);
  ADD_READY ("eof-mid-reply", test_eof_mid_reply);
  ADD_READY ("close-fails-pending", test_close_fails_pending);
  ADD_READY ("close-in-callback", test_close_in_callback);
  ADD_READY ("error-replies", test_error_replies);
  ADD_READY ("error-reply-without-id", test_error_reply_without_id);
  ADD_READY ("timeout", test_timeout);
  ADD_READY ("default-timeout", test_default_timeout);
  ADD_READY ("fd-passing", test_fd_passing);
  ADD_READY ("fd-passing-sync", test_fd_passing_sync);
  ADD_READY ("cancel", test_cancel);
  ADD_READY ("cancel-before-send", test_cancel_before_send);
  ADD_READY ("garbage", test_garbage);
  ADD_READY ("not-object", test_not_object);
  ADD_PAIR ("greeting-timeout", test_greeting_timeout);
  ADD_PAIR ("eof-before-greeting", test_eof_before_greeting);
  ADD_PAIR ("adopt-bad-fd", test_adopt_bad_fd);
  return g_test_run ();
}
