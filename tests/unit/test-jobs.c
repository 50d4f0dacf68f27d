/* Unit tests for jobs/job.c (BlkJob state machine) and jobs/job-group.c against the fake QEMU. */
#include "jobs/job-group.h"

#include "common/error.h"
#include "tests/unit/fake-qemu.h"

#include <errno.h>
#include <glib-unix.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define LABEL "src"
#define WAIT_LIMIT_US (5 * G_USEC_PER_SEC)
#define CLOSED_TEXT LABEL ": QMP connection closed by QEMU"

/* Waits (iterating the default main context) until @cond holds; fails after 5 s. */
#define WAIT_UNTIL(cond)                                                \
  G_STMT_START {                                                        \
    gint64 deadline_ = g_get_monotonic_time () + WAIT_LIMIT_US;         \
    while (!(cond))                                                     \
      wait_step (deadline_);                                            \
  } G_STMT_END

/* ---- part A: BlkJob alone ------------------------------------------------- */

/* Feeds @event with data parsed from @data_json to @job; returns what apply returned. */
static gboolean
apply (BlkJob *job, const char *event, const char *data_json)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonNode) node = json_from_string (data_json, &error);

  g_assert_no_error (error);
  g_assert_true (JSON_NODE_HOLDS_OBJECT (node));
  return blk_job_apply_event (job, event, json_node_get_object (node));
}

static gboolean
apply_status (BlkJob *job, const char *status)
{
  g_autofree char *data = g_strdup_printf ("{\"id\":\"%s\",\"status\":\"%s\"}", job->id, status);

  return apply (job, "JOB_STATUS_CHANGE", data);
}

static void
test_job_new (void)
{
  g_autoptr(BlkJob) job = blk_job_new ("J1", "vda");

  g_assert_cmpstr (job->id, ==, "J1");
  g_assert_cmpstr (job->label, ==, "vda");
  g_assert_cmpint (job->state, ==, BLK_JOB_NEW);
  g_assert_false (job->reached_ready);
  g_assert_false (job->dismissed);
  g_assert_null (job->error);
  g_assert_false (blk_job_is_ended (job));
  g_assert_cmpstr (blk_job_state_to_string (BLK_JOB_NEW), ==, "new");
  g_assert_cmpstr (blk_job_state_to_string (BLK_JOB_RUNNING), ==, "copying");
  g_assert_cmpstr (blk_job_state_to_string (BLK_JOB_READY), ==, "ready");
  g_assert_cmpstr (blk_job_state_to_string (BLK_JOB_COMPLETING), ==, "completing");
  g_assert_cmpstr (blk_job_state_to_string (BLK_JOB_CANCELLING), ==, "cancelling");
  g_assert_cmpstr (blk_job_state_to_string (BLK_JOB_CONCLUDED), ==, "done");
  g_assert_cmpstr (blk_job_state_to_string (BLK_JOB_FAILED), ==, "failed");
  /* Statuses that mean nothing to blkmig and unknown events change nothing. */
  g_assert_false (apply_status (job, "created"));
  g_assert_false (apply (job, "BLOCK_JOB_PENDING", "{\"id\":\"J1\"}"));
  g_assert_false (apply (job, "STOP", "{}"));
  g_assert_cmpint (job->state, ==, BLK_JOB_NEW);
}

static void
test_job_running (void)
{
  g_autoptr(BlkJob) job = blk_job_new ("J1", "vda");

  g_assert_true (apply_status (job, "running"));
  g_assert_cmpint (job->state, ==, BLK_JOB_RUNNING);
  g_assert_false (apply_status (job, "running"));
  g_assert_cmpint (job->state, ==, BLK_JOB_RUNNING);
  g_assert_false (blk_job_is_ended (job));
}

static void
test_job_ready_event (void)
{
  g_autoptr(BlkJob) job = blk_job_new ("J1", "vda");
  g_autoptr(BlkJob) direct = blk_job_new ("J2", "vdb");

  g_assert_true (apply_status (job, "running"));
  g_assert_true (apply (job, "BLOCK_JOB_READY",
                        "{\"device\":\"J1\",\"len\":1048576,\"offset\":1048576,"
                        "\"speed\":0,\"type\":\"mirror\"}"));
  g_assert_cmpint (job->state, ==, BLK_JOB_READY);
  g_assert_true (job->reached_ready);
  g_assert_cmpint (job->len, ==, 1048576);
  g_assert_cmpint (job->offset, ==, 1048576);
  /* QEMU may skip "running" in what we see: NEW goes straight to READY. */
  g_assert_true (apply (direct, "BLOCK_JOB_READY",
                        "{\"device\":\"J2\",\"len\":4096,\"offset\":2048}"));
  g_assert_cmpint (direct->state, ==, BLK_JOB_READY);
  g_assert_cmpint (direct->len, ==, 4096);
  g_assert_cmpint (direct->offset, ==, 2048);
}

static void
test_job_ready_status (void)
{
  g_autoptr(BlkJob) job = blk_job_new ("J1", "vda");
  g_autoptr(BlkJob) direct = blk_job_new ("J2", "vdb");

  g_assert_true (apply_status (job, "running"));
  g_assert_true (apply_status (job, "ready"));
  g_assert_cmpint (job->state, ==, BLK_JOB_READY);
  g_assert_true (job->reached_ready);
  g_assert_true (apply_status (direct, "ready"));
  g_assert_cmpint (direct->state, ==, BLK_JOB_READY);
}

static void
test_job_ready_sticky (void)
{
  g_autoptr(BlkJob) job = blk_job_new ("J1", "vda");

  g_assert_true (apply (job, "BLOCK_JOB_READY", "{\"device\":\"J1\",\"len\":10,\"offset\":10}"));
  g_assert_false (apply_status (job, "standby"));
  g_assert_cmpint (job->state, ==, BLK_JOB_READY);
  g_assert_false (apply_status (job, "ready"));
  g_assert_false (apply_status (job, "running"));
  g_assert_cmpint (job->state, ==, BLK_JOB_READY);
  /* A repeated READY changes no state but still carries fresh figures. */
  g_assert_false (apply (job, "BLOCK_JOB_READY", "{\"device\":\"J1\",\"len\":20,\"offset\":15}"));
  g_assert_cmpint (job->state, ==, BLK_JOB_READY);
  g_assert_cmpint (job->len, ==, 20);
  g_assert_cmpint (job->offset, ==, 15);
  g_assert_true (job->reached_ready);
}

static void
test_job_completed (void)
{
  g_autoptr(BlkJob) job = blk_job_new ("J1", "vda");

  g_assert_true (apply_status (job, "running"));
  g_assert_true (apply (job, "BLOCK_JOB_COMPLETED",
                        "{\"device\":\"J1\",\"len\":500,\"offset\":500,\"speed\":0,"
                        "\"type\":\"mirror\"}"));
  g_assert_cmpint (job->state, ==, BLK_JOB_CONCLUDED);
  g_assert_true (blk_job_is_ended (job));
  g_assert_null (job->error);
  g_assert_cmpint (job->len, ==, 500);
  g_assert_cmpint (job->offset, ==, 500);
  g_assert_false (job->reached_ready);
  /* "concluded" is reported as a change (time to dismiss), the state stays. */
  g_assert_true (apply_status (job, "concluded"));
  g_assert_cmpint (job->state, ==, BLK_JOB_CONCLUDED);
  g_assert_false (job->dismissed);
}

static void
test_job_completed_error (void)
{
  g_autoptr(BlkJob) job = blk_job_new ("J1", "vda");

  g_assert_true (apply (job, "BLOCK_JOB_READY", "{\"device\":\"J1\",\"len\":10,\"offset\":10}"));
  g_assert_true (apply (job, "BLOCK_JOB_COMPLETED",
                        "{\"device\":\"J1\",\"len\":10,\"offset\":4,"
                        "\"error\":\"Input/output error\",\"type\":\"mirror\"}"));
  g_assert_cmpint (job->state, ==, BLK_JOB_FAILED);
  g_assert_true (blk_job_is_ended (job));
  g_assert_cmpstr (job->error, ==, "Input/output error");
  g_assert_cmpint (job->offset, ==, 4);
  g_assert_true (job->reached_ready);
}

static void
test_job_cancelled_by_us (void)
{
  g_autoptr(BlkJob) job = blk_job_new ("J1", "vda");

  g_assert_true (apply_status (job, "running"));
  blk_job_set_state (job, BLK_JOB_CANCELLING);  /* what job_group_cancel_all does */
  g_assert_true (apply (job, "BLOCK_JOB_CANCELLED",
                        "{\"device\":\"J1\",\"len\":100,\"offset\":30,\"type\":\"mirror\"}"));
  g_assert_cmpint (job->state, ==, BLK_JOB_CONCLUDED);
  g_assert_null (job->error);
  g_assert_cmpint (job->offset, ==, 30);
}

static void
test_job_cancelled_outside (void)
{
  g_autoptr(BlkJob) job = blk_job_new ("J1", "vda");
  g_autoptr(BlkJob) ready = blk_job_new ("J2", "vdb");

  g_assert_true (apply_status (job, "running"));
  g_assert_true (apply (job, "BLOCK_JOB_CANCELLED", "{\"device\":\"J1\"}"));
  g_assert_cmpint (job->state, ==, BLK_JOB_FAILED);
  g_assert_cmpstr (job->error, ==, "the job was cancelled outside blkmig");
  g_assert_true (apply (ready, "BLOCK_JOB_READY", "{\"device\":\"J2\"}"));
  g_assert_true (apply (ready, "BLOCK_JOB_CANCELLED", "{\"device\":\"J2\"}"));
  g_assert_cmpint (ready->state, ==, BLK_JOB_FAILED);
  g_assert_cmpstr (ready->error, ==, "the job was cancelled outside blkmig");
}

static void
test_job_dismissed (void)
{
  g_autoptr(BlkJob) job = blk_job_new ("J1", "vda");

  g_assert_true (apply (job, "BLOCK_JOB_COMPLETED", "{\"device\":\"J1\"}"));
  g_assert_false (job->dismissed);
  g_assert_true (apply_status (job, "null"));
  g_assert_true (job->dismissed);
  g_assert_cmpint (job->state, ==, BLK_JOB_CONCLUDED);
}

static void
test_job_after_end (void)
{
  g_autoptr(BlkJob) done = blk_job_new ("J1", "vda");
  g_autoptr(BlkJob) failed = blk_job_new ("J2", "vdb");

  g_assert_true (apply (done, "BLOCK_JOB_COMPLETED", "{\"device\":\"J1\"}"));
  g_assert_false (apply (done, "BLOCK_JOB_COMPLETED",
                         "{\"device\":\"J1\",\"error\":\"late error\"}"));
  g_assert_false (apply (done, "BLOCK_JOB_CANCELLED", "{\"device\":\"J1\"}"));
  g_assert_false (apply (done, "BLOCK_JOB_READY", "{\"device\":\"J1\"}"));
  g_assert_false (apply_status (done, "running"));
  g_assert_false (apply_status (done, "ready"));
  g_assert_cmpint (done->state, ==, BLK_JOB_CONCLUDED);
  g_assert_null (done->error);
  g_assert_false (done->reached_ready);

  g_assert_true (apply (failed, "BLOCK_JOB_COMPLETED",
                        "{\"device\":\"J2\",\"error\":\"No space left on device\"}"));
  g_assert_false (apply (failed, "BLOCK_JOB_COMPLETED", "{\"device\":\"J2\"}"));
  g_assert_false (apply (failed, "BLOCK_JOB_COMPLETED",
                         "{\"device\":\"J2\",\"error\":\"other\"}"));
  g_assert_false (apply (failed, "BLOCK_JOB_CANCELLED", "{\"device\":\"J2\"}"));
  g_assert_false (apply (failed, "BLOCK_JOB_READY", "{\"device\":\"J2\"}"));
  g_assert_false (apply_status (failed, "ready"));
  g_assert_cmpint (failed->state, ==, BLK_JOB_FAILED);
  g_assert_cmpstr (failed->error, ==, "No space left on device");
}

/* The "we" transitions: a change is reported once; a refused cancel restores READY. */
static void
test_job_set_state (void)
{
  g_autoptr(BlkJob) job = blk_job_new ("J1", "vda");

  g_assert_true (blk_job_set_state (job, BLK_JOB_READY));
  g_assert_true (job->reached_ready);
  g_assert_false (blk_job_set_state (job, BLK_JOB_READY));
  g_assert_true (blk_job_set_state (job, BLK_JOB_CANCELLING));
  g_assert_cmpint (job->state, ==, BLK_JOB_CANCELLING);
  g_assert_true (blk_job_set_state (job, BLK_JOB_READY));
  g_assert_cmpint (job->state, ==, BLK_JOB_READY);
  g_assert_true (job->reached_ready);
  g_assert_true (blk_job_set_state (job, BLK_JOB_COMPLETING));
  g_assert_false (blk_job_is_ended (job));
}

static void
test_job_fail (void)
{
  g_autoptr(BlkJob) job = blk_job_new ("J1", "vda");
  g_autoptr(BlkJob) done = blk_job_new ("J2", "vdb");

  g_assert_true (apply_status (job, "running"));
  g_assert_true (blk_job_fail (job, "connection lost"));
  g_assert_cmpint (job->state, ==, BLK_JOB_FAILED);
  g_assert_cmpstr (job->error, ==, "connection lost");
  g_assert_false (blk_job_fail (job, "again"));
  g_assert_cmpstr (job->error, ==, "connection lost");

  g_assert_true (apply (done, "BLOCK_JOB_COMPLETED", "{\"device\":\"J2\"}"));
  g_assert_false (blk_job_fail (done, "too late"));
  g_assert_cmpint (done->state, ==, BLK_JOB_CONCLUDED);
  g_assert_null (done->error);
}

/* ---- part B: the fake QEMU (tests/unit/fake-qemu.c), driven step by step ---- */

typedef struct {
  char *line;               /* exactly what the client sent, without the newline */
  char *execute;
  char *id;
  char *args;               /* compact JSON of "arguments", NULL when absent */
  gboolean held;            /* not answered: waiting in the fake for fake_qemu_take */
} Cmd;

typedef struct {
  QmpClient *client;
  JobGroup *group;
  FakeQemu *fake;
  GQueue *received;         /* Cmd, in arrival order, not yet taken by peer_expect */
  gboolean auto_reply;      /* answer {"return":{}} as soon as a command arrives */
  gboolean simulate;        /* with auto_reply: also send the events QEMU would */
  guint tick;               /* wakes blocking iterations so WAIT_UNTIL can give up */
  guint changes;            /* calls of the group's changed func */
} Fixture;

/* Collects the outcome of one async call. */
typedef struct {
  GAsyncResult *result;
} Slot;

static void
cmd_free (Cmd *cmd)
{
  g_free (cmd->line);
  g_free (cmd->execute);
  g_free (cmd->id);
  g_free (cmd->args);
  g_free (cmd);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC (Cmd, cmd_free)

static void
wait_step (gint64 deadline)
{
  if (g_get_monotonic_time () >= deadline)
    g_error ("timed out waiting");
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
slot_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Slot *slot = user_data;

  g_assert_null (slot->result);
  slot->result = g_object_ref (result);
}

static void
peer_write (Fixture *fx, const char *text)
{
  fake_qemu_send_raw (fx->fake, text);
}

static void
peer_reply (Fixture *fx, const char *id, const char *return_json)
{
  fake_qemu_reply (fx->fake, id, return_json);
}

static void
peer_event (Fixture *fx, const char *name, const char *data_json)
{
  fake_qemu_send_event (fx->fake, name, data_json);
}

static void
peer_status (Fixture *fx, const char *id, const char *status)
{
  g_autofree char *data = g_strdup_printf ("{\"id\":\"%s\",\"status\":\"%s\"}", id, status);

  peer_event (fx, "JOB_STATUS_CHANGE", data);
}

/* BLOCK_JOB_COMPLETED/CANCELLED/READY for @device, with @error unless NULL. */
static void
peer_block_event (Fixture *fx, const char *name, const char *device, const char *error)
{
  g_autofree char *err = error != NULL ? g_strdup_printf (",\"error\":\"%s\"", error)
                                       : g_strdup ("");
  g_autofree char *data = g_strdup_printf ("{\"device\":\"%s\",\"len\":1000,\"offset\":1000,"
                                           "\"speed\":0,\"type\":\"mirror\"%s}", device, err);

  peer_event (fx, name, data);
}

/* What QEMU would emit after successfully running @cmd. */
static void
peer_simulate (Fixture *fx, Cmd *cmd)
{
  g_autoptr(JsonNode) args = cmd->args != NULL ? json_from_string (cmd->args, NULL) : NULL;
  JsonObject *obj = args != NULL ? json_node_get_object (args) : NULL;

  if (g_str_equal (cmd->execute, "block-job-cancel"))
    {
      const char *device = json_object_get_string_member (obj, "device");
      /* A soft cancel of a READY mirror ends as COMPLETED in QEMU >= 6.2. */
      gboolean force = json_object_get_boolean_member_with_default (obj, "force", FALSE);

      peer_block_event (fx, force ? "BLOCK_JOB_CANCELLED" : "BLOCK_JOB_COMPLETED", device, NULL);
      peer_status (fx, device, "concluded");
    }
  else if (g_str_equal (cmd->execute, "job-complete"))
    {
      const char *device = json_object_get_string_member (obj, "id");

      peer_block_event (fx, "BLOCK_JOB_COMPLETED", device, NULL);
      peer_status (fx, device, "concluded");
    }
  else if (g_str_equal (cmd->execute, "job-dismiss"))
    peer_status (fx, json_object_get_string_member (obj, "id"), "null");
}

/* The fake's handler: every command (already checked against the schema) is
 * logged; with auto_reply it is answered at once, else it waits in the fake. */
static gboolean
peer_take_command (FakeQemu *fake, const char *line, const char *id, const char *command,
                   JsonNode *args, gpointer data)
{
  Fixture *fx = data;
  Cmd *cmd = g_new0 (Cmd, 1);

  cmd->line = g_strdup (line);
  cmd->execute = g_strdup (command);
  cmd->id = g_strdup (id);
  cmd->args = args != NULL ? json_to_string (args, FALSE) : NULL;
  cmd->held = !fx->auto_reply;
  g_queue_push_tail (fx->received, cmd);
  if (!fx->auto_reply)
    return FALSE;
  peer_reply (fx, cmd->id, "{}");
  if (fx->simulate)
    peer_simulate (fx, cmd);
  return TRUE;
}

/* The peer's next unread command; checks its name and arguments (NULL: none). */
static Cmd *
peer_expect (Fixture *fx, const char *command, const char *args_json)
{
  Cmd *cmd;

  WAIT_UNTIL (!g_queue_is_empty (fx->received) || fake_qemu_client_gone (fx->fake));
  cmd = g_queue_pop_head (fx->received);
  g_assert_nonnull (cmd);
  g_assert_cmpstr (cmd->execute, ==, command);
  g_assert_cmpstr (cmd->args, ==, args_json);
  if (cmd->held)
    {
      g_autofree char *id = fake_qemu_take (fx->fake, command, "*");
      g_assert_cmpstr (id, ==, cmd->id);
    }
  return cmd;
}

/* Takes as many commands as there are "COMMAND ARGS" strings and checks that
 * each string matches exactly one of them, in any order. */
static void G_GNUC_NULL_TERMINATED
peer_expect_set (Fixture *fx, ...)
{
  g_autoptr(GPtrArray) want = g_ptr_array_new ();
  va_list ap;

  va_start (ap, fx);
  for (const char *w = va_arg (ap, const char *); w != NULL; w = va_arg (ap, const char *))
    g_ptr_array_add (want, (gpointer) w);
  va_end (ap);
  for (guint n = want->len; n > 0; n--)
    {
      g_autoptr(Cmd) cmd = NULL;
      g_autofree char *got = NULL;
      guint index;

      WAIT_UNTIL (!g_queue_is_empty (fx->received));
      cmd = g_queue_peek_head (fx->received);
      got = g_strdup_printf ("%s %s", cmd->execute, cmd->args != NULL ? cmd->args : "");
      if (!g_ptr_array_find_with_equal_func (want, got, g_str_equal, &index))
        g_error ("unexpected command: %s", cmd->line);
      g_ptr_array_remove_index (want, index);
      cmd = peer_expect (fx, cmd->execute, cmd->args);
    }
}

/* Nothing more reached the peer. */
static void
peer_assert_quiet (Fixture *fx)
{
  flush ();
  if (!g_queue_is_empty (fx->received))
    g_error ("unexpected command: %s", ((Cmd *) g_queue_peek_head (fx->received))->line);
  fake_qemu_assert_quiet (fx->fake);
}

/* Ends the peer's side of the conversation (QEMU went away). */
static void
peer_close (Fixture *fx)
{
  fake_qemu_close (fx->fake);
}

static void
changed_cb (JobGroup *group, BlkJob *job, gpointer user_data)
{
  Fixture *fx = user_data;

  fx->changes++;
}

static void
fixture_setup (Fixture *fx, gconstpointer data)
{
  Slot slot = { NULL };
  g_autoptr(GError) error = NULL;
  int fd;

  fx->tick = g_timeout_add (100, tick_cb, NULL);
  fx->received = g_queue_new ();
  fx->fake = fake_qemu_new ();
  fake_qemu_set_manual (fx->fake, peer_take_command, fx);
  fd = fake_qemu_socketpair (fx->fake, TRUE);

  /* Greeting, qmp_capabilities, query-commands (the fake's): a READY client. */
  qmp_client_adopt_fd_async (fd, LABEL, NULL, slot_cb, &slot);
  WAIT_UNTIL (slot.result != NULL);
  fx->client = qmp_client_adopt_fd_finish (slot.result, &error);
  g_clear_object (&slot.result);
  g_assert_no_error (error);
  g_assert_cmpint (qmp_client_get_state (fx->client), ==, QMP_STATE_READY);
  /* Sync calls must not hang the test if the peer stays silent. */
  qmp_client_set_default_timeout (fx->client, 5000);

  fx->group = job_group_new (fx->client);
  job_group_set_changed_func (fx->group, changed_cb, fx);
}

static void
fixture_teardown (Fixture *fx, gconstpointer data)
{
  g_clear_pointer (&fx->group, job_group_free);
  if (fx->client != NULL)
    qmp_client_close (fx->client);
  g_clear_object (&fx->client);
  flush ();
  g_clear_handle_id (&fx->tick, g_source_remove);
  flush ();
  g_clear_pointer (&fx->fake, fake_qemu_free);
  g_queue_free_full (fx->received, (GDestroyNotify) cmd_free);
}

static gboolean
finish_ready (Fixture *fx, Slot *slot, GError **error)
{
  gboolean ok;

  g_assert_nonnull (slot->result);
  ok = job_group_wait_ready_finish (fx->group, slot->result, error);
  g_clear_object (&slot->result);
  return ok;
}

static gboolean
finish_ended (Fixture *fx, Slot *slot, GError **error)
{
  gboolean ok;

  g_assert_nonnull (slot->result);
  ok = job_group_wait_ended_finish (fx->group, slot->result, error);
  g_clear_object (&slot->result);
  return ok;
}

/* Sends what QEMU sends when a mirror starts and reaches READY. */
static void
make_ready (Fixture *fx, BlkJob *job)
{
  peer_status (fx, job->id, "created");
  peer_status (fx, job->id, "running");
  peer_block_event (fx, "BLOCK_JOB_READY", job->id, NULL);
  peer_status (fx, job->id, "ready");
  WAIT_UNTIL (job->state == BLK_JOB_READY);
}

static void
make_running (Fixture *fx, BlkJob *job)
{
  peer_status (fx, job->id, "created");
  peer_status (fx, job->id, "running");
  WAIT_UNTIL (job->state == BLK_JOB_RUNNING);
}

/* ---- part B: tests ---------------------------------------------------------- */

/* 1: the READY barrier opens only when every job is READY. */
static void
test_group_wait_ready (Fixture *fx, gconstpointer data)
{
  BlkJob *j1 = job_group_add (fx->group, "J1", "vda");
  BlkJob *j2 = job_group_add (fx->group, "J2", "vdb");
  g_autoptr(GError) error = NULL;
  Slot slot = { NULL };

  g_assert_cmpuint (job_group_get_jobs (fx->group)->len, ==, 2);
  job_group_wait_ready_async (fx->group, NULL, slot_cb, &slot);
  make_running (fx, j2);
  make_ready (fx, j1);
  flush ();
  g_assert_null (slot.result);
  g_assert_cmpint (j2->state, ==, BLK_JOB_RUNNING);
  /* Events for jobs the group does not know are ignored. */
  peer_block_event (fx, "BLOCK_JOB_READY", "J9", NULL);
  peer_status (fx, "J9", "ready");
  flush ();
  g_assert_null (slot.result);
  peer_block_event (fx, "BLOCK_JOB_READY", "J2", NULL);
  WAIT_UNTIL (slot.result != NULL);
  g_assert_cmpint (j2->state, ==, BLK_JOB_READY);
  g_assert_true (finish_ready (fx, &slot, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (fx->changes, ==, 4);       /* J2 running, J1 running+ready, J2 ready */
  /* Once READY, a new wait completes at once; the sync wrapper too. */
  job_group_wait_ready_async (fx->group, NULL, slot_cb, &slot);
  WAIT_UNTIL (slot.result != NULL);
  g_assert_true (finish_ready (fx, &slot, &error));
  g_assert_true (job_group_wait_ready_sync (fx->group, NULL, &error));
  g_assert_no_error (error);
  peer_assert_quiet (fx);
}

/* 2: one failed job fails the READY wait at once, with QEMU's text. */
static void
test_group_fail_fast (Fixture *fx, gconstpointer data)
{
  BlkJob *j1 = job_group_add (fx->group, "J1", "vda");
  BlkJob *j2 = job_group_add (fx->group, "J2", "vdb");
  g_autoptr(GError) error = NULL;
  g_autoptr(GError) ended_error = NULL;
  Slot slot = { NULL };
  Slot ended = { NULL };

  job_group_wait_ready_async (fx->group, NULL, slot_cb, &slot);
  job_group_wait_ended_async (fx->group, NULL, slot_cb, &ended);
  make_running (fx, j1);
  make_running (fx, j2);
  peer_block_event (fx, "BLOCK_JOB_COMPLETED", "J2", "Input/output error");
  WAIT_UNTIL (slot.result != NULL);
  g_assert_false (finish_ready (fx, &slot, &error));
  g_assert_error (error, BLKMIG_ERROR, BLKMIG_ERROR_JOB);
  g_assert_cmpstr (error->message, ==, "vdb: block job J2 failed: Input/output error");
  g_assert_cmpint (j1->state, ==, BLK_JOB_RUNNING);
  g_assert_cmpint (j2->state, ==, BLK_JOB_FAILED);
  /* The ended wait still waits for every job to end and be dismissed. */
  peer_status (fx, "J2", "concluded");
  g_autoptr(Cmd) dismiss = peer_expect (fx, "job-dismiss", "{\"id\":\"J2\"}");
  peer_reply (fx, dismiss->id, "{}");
  peer_status (fx, "J2", "null");
  WAIT_UNTIL (j2->dismissed);
  flush ();
  g_assert_null (ended.result);
  g_clear_error (&error);
  g_assert_false (job_group_wait_ready_sync (fx->group, NULL, &error));
  g_assert_error (error, BLKMIG_ERROR, BLKMIG_ERROR_JOB);
  g_assert_cmpstr (error->message, ==, "vdb: block job J2 failed: Input/output error");
  peer_block_event (fx, "BLOCK_JOB_COMPLETED", "J1", NULL);
  peer_status (fx, "J1", "concluded");
  g_autoptr(Cmd) dismiss1 = peer_expect (fx, "job-dismiss", "{\"id\":\"J1\"}");
  peer_reply (fx, dismiss1->id, "{}");
  peer_status (fx, "J1", "null");
  WAIT_UNTIL (ended.result != NULL);
  g_assert_false (finish_ended (fx, &ended, &ended_error));
  g_assert_error (ended_error, BLKMIG_ERROR, BLKMIG_ERROR_JOB);
  g_assert_cmpstr (ended_error->message, ==, "vdb: block job J2 failed: Input/output error");
  g_assert_cmpint (j1->state, ==, BLK_JOB_CONCLUDED);
  peer_assert_quiet (fx);
}

/* 3: concluded jobs are dismissed; the ended wait needs every status null. */
static void
test_group_dismiss (Fixture *fx, gconstpointer data)
{
  BlkJob *j1 = job_group_add (fx->group, "J1", "vda");
  BlkJob *j2 = job_group_add (fx->group, "J2", "vdb");
  g_autoptr(GError) error = NULL;
  g_autoptr(Cmd) d1 = NULL;
  g_autoptr(Cmd) d2 = NULL;
  g_autofree char *line = NULL;
  Slot slot = { NULL };

  make_ready (fx, j1);
  make_ready (fx, j2);
  job_group_wait_ended_async (fx->group, NULL, slot_cb, &slot);
  peer_block_event (fx, "BLOCK_JOB_COMPLETED", "J1", NULL);
  WAIT_UNTIL (j1->state == BLK_JOB_CONCLUDED);
  /* No dismiss before QEMU says the job concluded. */
  peer_assert_quiet (fx);
  peer_status (fx, "J1", "waiting");
  peer_status (fx, "J1", "pending");
  peer_status (fx, "J1", "concluded");
  d1 = peer_expect (fx, "job-dismiss", "{\"id\":\"J1\"}");
  line = g_strdup_printf ("{\"execute\":\"job-dismiss\",\"arguments\":{\"id\":\"J1\"},"
                          "\"id\":\"%s\"}", d1->id);
  g_assert_cmpstr (d1->line, ==, line);
  peer_reply (fx, d1->id, "{}");
  peer_assert_quiet (fx);
  g_assert_null (slot.result);

  peer_block_event (fx, "BLOCK_JOB_COMPLETED", "J2", NULL);
  peer_status (fx, "J2", "concluded");
  d2 = peer_expect (fx, "job-dismiss", "{\"id\":\"J2\"}");
  /* A failed dismiss is only traced. */
  g_autofree char *err = g_strdup_printf ("{\"error\":{\"class\":\"GenericError\","
                                          "\"desc\":\"nope\"},\"id\":\"%s\"}\n", d2->id);
  peer_write (fx, err);
  flush ();
  g_assert_cmpint (j2->state, ==, BLK_JOB_CONCLUDED);
  g_assert_null (slot.result);

  peer_status (fx, "J1", "null");
  WAIT_UNTIL (j1->dismissed);
  flush ();
  g_assert_null (slot.result);
  peer_status (fx, "J2", "null");
  WAIT_UNTIL (slot.result != NULL);
  g_assert_true (finish_ended (fx, &slot, &error));
  g_assert_no_error (error);
  g_assert_true (j2->dismissed);
  g_assert_true (job_group_wait_ended_sync (fx->group, NULL, &error));
  g_assert_no_error (error);
  peer_assert_quiet (fx);
}

/* 4: cancel_all sends block-job-cancel for every job not ended. */
static void
test_group_cancel_all (Fixture *fx, gconstpointer data)
{
  BlkJob *j1 = job_group_add (fx->group, "J1", "vda");
  BlkJob *j2 = job_group_add (fx->group, "J2", "vdb");
  BlkJob *j3 = job_group_add (fx->group, "J3", "vdc");
  g_autoptr(GError) error = NULL;
  g_autoptr(Cmd) c1 = NULL;
  g_autoptr(Cmd) c2 = NULL;
  Slot slot = { NULL };

  make_ready (fx, j1);
  make_running (fx, j2);
  peer_block_event (fx, "BLOCK_JOB_COMPLETED", "J3", "Input/output error");
  WAIT_UNTIL (j3->state == BLK_JOB_FAILED);

  fx->auto_reply = TRUE;
  g_assert_true (job_group_cancel_all (fx->group, FALSE, NULL, &error));
  g_assert_no_error (error);
  c1 = peer_expect (fx, "block-job-cancel", "{\"device\":\"J1\",\"force\":false}");
  c2 = peer_expect (fx, "block-job-cancel", "{\"device\":\"J2\",\"force\":false}");
  peer_assert_quiet (fx);
  g_assert_cmpint (j1->state, ==, BLK_JOB_CANCELLING);
  g_assert_cmpint (j2->state, ==, BLK_JOB_CANCELLING);
  g_assert_false (j1->forced);
  g_assert_cmpint (j3->state, ==, BLK_JOB_FAILED);

  /* Our own cancels end the jobs cleanly. */
  fx->auto_reply = FALSE;
  job_group_wait_ended_async (fx->group, NULL, slot_cb, &slot);
  peer_block_event (fx, "BLOCK_JOB_COMPLETED", "J1", NULL);
  peer_block_event (fx, "BLOCK_JOB_CANCELLED", "J2", NULL);
  WAIT_UNTIL (j1->state == BLK_JOB_CONCLUDED && j2->state == BLK_JOB_CONCLUDED);
  g_assert_null (j2->error);
  fx->auto_reply = TRUE;
  for (guint i = 1; i <= 3; i++)
    {
      g_autofree char *id = g_strdup_printf ("J%u", i);
      peer_status (fx, id, "concluded");
      peer_status (fx, id, "null");
    }
  WAIT_UNTIL (slot.result != NULL);
  g_assert_false (finish_ended (fx, &slot, &error));
  g_assert_error (error, BLKMIG_ERROR, BLKMIG_ERROR_JOB);
  g_assert_cmpstr (error->message, ==, "vdc: block job J3 failed: Input/output error");
  for (guint i = 1; i <= 3; i++)
    {
      g_autofree char *args = g_strdup_printf ("{\"id\":\"J%u\"}", i);
      g_autoptr(Cmd) d = peer_expect (fx, "job-dismiss", args);
    }
  /* Nothing left to cancel. */
  g_assert_true (job_group_cancel_all (fx->group, TRUE, NULL, NULL));
  peer_assert_quiet (fx);
}

/* A failing cancel restores the job's state and stops cancel_all. */
static void
test_group_cancel_error (Fixture *fx, gconstpointer data)
{
  BlkJob *j1 = job_group_add (fx->group, "J1", "vda");
  BlkJob *j2 = job_group_add (fx->group, "J2", "vdb");
  g_autoptr(GError) error = NULL;
  g_autoptr(GCancellable) cancellable = g_cancellable_new ();

  make_ready (fx, j1);
  make_ready (fx, j2);
  /* The peer stays silent; the cancellable ends the sync call. */
  g_cancellable_cancel (cancellable);
  g_assert_false (job_group_cancel_all (fx->group, TRUE, cancellable, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_assert_cmpint (j1->state, ==, BLK_JOB_READY);
  g_assert_cmpint (j2->state, ==, BLK_JOB_READY);
  flush ();
  /* The cancelled command may or may not have gone out; J2 was never tried. */
  while (!g_queue_is_empty (fx->received))
    {
      g_autoptr(Cmd) c = peer_expect (fx, "block-job-cancel",
                                      "{\"device\":\"J1\",\"force\":true}");
    }
}

/* complete_all pivots every job; QEMU's events then conclude them. */
static void
test_group_complete_all (Fixture *fx, gconstpointer data)
{
  BlkJob *j1 = job_group_add (fx->group, "J1", "vda");
  BlkJob *j2 = job_group_add (fx->group, "J2", "vdb");
  g_autoptr(GError) error = NULL;
  g_autoptr(Cmd) c1 = NULL;
  g_autoptr(Cmd) c2 = NULL;

  make_ready (fx, j1);
  make_ready (fx, j2);
  g_assert_true (job_group_wait_ready_sync (fx->group, NULL, &error));
  fx->auto_reply = TRUE;
  g_assert_true (job_group_complete_all (fx->group, NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpint (j1->state, ==, BLK_JOB_COMPLETING);
  g_assert_cmpint (j2->state, ==, BLK_JOB_COMPLETING);
  c1 = peer_expect (fx, "job-complete", "{\"id\":\"J1\"}");
  c2 = peer_expect (fx, "job-complete", "{\"id\":\"J2\"}");
  peer_assert_quiet (fx);
  fx->simulate = TRUE;
  for (guint i = 0; i < 2; i++)
    {
      BlkJob *job = job_group_get_jobs (fx->group)->pdata[i];
      peer_block_event (fx, "BLOCK_JOB_COMPLETED", job->id, NULL);
      peer_status (fx, job->id, "concluded");
    }
  g_assert_true (job_group_wait_ended_sync (fx->group, NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpint (j1->state, ==, BLK_JOB_CONCLUDED);
  g_assert_cmpint (j2->state, ==, BLK_JOB_CONCLUDED);
}

/* 5: losing the connection fails every unfinished job and every wait. */
static void
test_group_connection_lost (Fixture *fx, gconstpointer data)
{
  BlkJob *j1 = job_group_add (fx->group, "J1", "vda");
  BlkJob *j2 = job_group_add (fx->group, "J2", "vdb");
  BlkJob *j3 = job_group_add (fx->group, "J3", "vdc");
  g_autoptr(GError) ready_error = NULL;
  g_autoptr(GError) ended_error = NULL;
  g_autoptr(GError) later_error = NULL;
  Slot ready = { NULL };
  Slot ended = { NULL };

  make_ready (fx, j1);
  make_running (fx, j2);
  peer_block_event (fx, "BLOCK_JOB_COMPLETED", "J3", NULL);
  WAIT_UNTIL (j3->state == BLK_JOB_CONCLUDED);
  job_group_wait_ready_async (fx->group, NULL, slot_cb, &ready);
  job_group_wait_ended_async (fx->group, NULL, slot_cb, &ended);
  flush ();
  g_assert_null (ready.result);
  g_assert_null (ended.result);

  peer_close (fx);
  WAIT_UNTIL (ready.result != NULL && ended.result != NULL);
  g_assert_false (finish_ready (fx, &ready, &ready_error));
  g_assert_error (ready_error, QMP_ERROR, QMP_ERROR_CLOSED);  /* exit code 5, not 6 */
  g_assert_cmpstr (ready_error->message, ==, "vda: block job J1 failed: " CLOSED_TEXT);
  g_assert_false (finish_ended (fx, &ended, &ended_error));
  g_assert_error (ended_error, QMP_ERROR, QMP_ERROR_CLOSED);
  g_assert_cmpstr (ended_error->message, ==, "vda: block job J1 failed: " CLOSED_TEXT);
  g_assert_cmpint (j1->state, ==, BLK_JOB_FAILED);
  g_assert_cmpint (j2->state, ==, BLK_JOB_FAILED);
  g_assert_cmpstr (j1->error, ==, CLOSED_TEXT);
  g_assert_cmpstr (j2->error, ==, CLOSED_TEXT);
  /* A job that had ended keeps its outcome. */
  g_assert_cmpint (j3->state, ==, BLK_JOB_CONCLUDED);
  g_assert_null (j3->error);
  g_assert_cmpint (qmp_client_get_state (fx->client), ==, QMP_STATE_CLOSED);
  /* Later waits fail at once. */
  g_assert_false (job_group_wait_ended_sync (fx->group, NULL, &later_error));
  g_assert_error (later_error, QMP_ERROR, QMP_ERROR_CLOSED);
  g_assert_true (strstr (later_error->message, "closed") != NULL);
}

/* 6: refresh takes offset/len from query-block-jobs; totals sum them. */
static void
test_group_refresh (Fixture *fx, gconstpointer data)
{
  BlkJob *j1 = job_group_add (fx->group, "J1", "vda");
  BlkJob *j2 = job_group_add (fx->group, "J2", "vdb");
  g_autoptr(GError) error = NULL;
  g_autoptr(Cmd) cmd = NULL;
  Slot slot = { NULL };
  gint64 done = -1;
  gint64 total = -1;

  job_group_totals (fx->group, &done, &total);
  g_assert_cmpint (done, ==, 0);
  g_assert_cmpint (total, ==, 0);
  make_running (fx, j1);
  make_running (fx, j2);
  job_group_refresh_async (fx->group, NULL, slot_cb, &slot);
  cmd = peer_expect (fx, "query-block-jobs", NULL);
  peer_reply (fx, cmd->id,
              "[{\"device\":\"J1\",\"offset\":100,\"len\":1000,\"busy\":true,\"paused\":false,"
              "\"speed\":0,\"ready\":false,\"type\":\"mirror\",\"io-status\":\"ok\"},"
              "{\"device\":\"J2\",\"offset\":250,\"len\":4000,\"type\":\"mirror\"},"
              "{\"device\":\"other\",\"offset\":7,\"len\":9,\"type\":\"mirror\"}]");
  WAIT_UNTIL (slot.result != NULL);
  g_assert_true (job_group_refresh_finish (fx->group, slot.result, &error));
  g_clear_object (&slot.result);
  g_assert_no_error (error);
  g_assert_cmpint (j1->offset, ==, 100);
  g_assert_cmpint (j1->len, ==, 1000);
  g_assert_cmpint (j2->offset, ==, 250);
  g_assert_cmpint (j2->len, ==, 4000);
  job_group_totals (fx->group, &done, &total);
  g_assert_cmpint (done, ==, 350);
  g_assert_cmpint (total, ==, 5000);
  /* States are untouched by a refresh. */
  g_assert_cmpint (j1->state, ==, BLK_JOB_RUNNING);
  peer_assert_quiet (fx);
}

/* A refresh whose command fails reports the QMP error. */
static void
test_group_refresh_error (Fixture *fx, gconstpointer data)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(Cmd) cmd = NULL;
  g_autofree char *text = NULL;
  Slot slot = { NULL };

  job_group_add (fx->group, "J1", "vda");
  job_group_refresh_async (fx->group, NULL, slot_cb, &slot);
  cmd = peer_expect (fx, "query-block-jobs", NULL);
  text = g_strdup_printf ("{\"error\":{\"class\":\"GenericError\",\"desc\":\"busy\"},"
                          "\"id\":\"%s\"}\n", cmd->id);
  peer_write (fx, text);
  WAIT_UNTIL (slot.result != NULL);
  g_assert_false (job_group_refresh_finish (fx->group, slot.result, &error));
  g_clear_object (&slot.result);
  g_assert_error (error, QMP_ERROR, QMP_ERROR_GENERIC);
}

/* 7: cancelling one wait leaves the others waiting. */
static void
test_group_wait_cancel (Fixture *fx, gconstpointer data)
{
  BlkJob *j1 = job_group_add (fx->group, "J1", "vda");
  BlkJob *j2 = job_group_add (fx->group, "J2", "vdb");
  g_autoptr(GCancellable) cancellable = g_cancellable_new ();
  g_autoptr(GCancellable) other = g_cancellable_new ();
  g_autoptr(GError) error = NULL;
  Slot cancelled = { NULL };
  Slot cancelled_ended = { NULL };
  Slot plain = { NULL };
  Slot with_other = { NULL };

  job_group_wait_ready_async (fx->group, cancellable, slot_cb, &cancelled);
  job_group_wait_ready_async (fx->group, NULL, slot_cb, &plain);
  job_group_wait_ready_async (fx->group, other, slot_cb, &with_other);
  job_group_wait_ended_async (fx->group, cancellable, slot_cb, &cancelled_ended);
  make_ready (fx, j1);
  flush ();
  g_assert_null (cancelled.result);

  g_cancellable_cancel (cancellable);
  WAIT_UNTIL (cancelled.result != NULL && cancelled_ended.result != NULL);
  g_assert_false (finish_ready (fx, &cancelled, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_clear_error (&error);
  g_assert_false (finish_ended (fx, &cancelled_ended, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_clear_error (&error);
  flush ();
  g_assert_null (plain.result);
  g_assert_null (with_other.result);

  /* An already cancelled cancellable fails a new wait too. */
  job_group_wait_ready_async (fx->group, cancellable, slot_cb, &cancelled);
  WAIT_UNTIL (cancelled.result != NULL);
  g_assert_false (finish_ready (fx, &cancelled, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_clear_error (&error);

  make_ready (fx, j2);
  WAIT_UNTIL (plain.result != NULL && with_other.result != NULL);
  g_assert_true (finish_ready (fx, &plain, &error));
  g_assert_no_error (error);
  g_assert_true (finish_ready (fx, &with_other, &error));
  g_assert_no_error (error);
  /* The cancellation source was removed with its waiter. */
  g_cancellable_cancel (other);
  flush ();
  peer_assert_quiet (fx);
}

/* forget drops a job whose start failed, and the barrier moves on without it. */
static void
test_group_forget (Fixture *fx, gconstpointer data)
{
  BlkJob *j1 = job_group_add (fx->group, "J1", "vda");
  BlkJob *j2 = job_group_add (fx->group, "J2", "vdb");
  g_autoptr(GError) error = NULL;
  Slot slot = { NULL };

  job_group_wait_ready_async (fx->group, NULL, slot_cb, &slot);
  make_ready (fx, j1);
  flush ();
  g_assert_null (slot.result);
  job_group_forget (fx->group, j2);
  WAIT_UNTIL (slot.result != NULL);
  g_assert_true (finish_ready (fx, &slot, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (job_group_get_jobs (fx->group)->len, ==, 1);
  /* Events for the forgotten job are ignored. */
  peer_block_event (fx, "BLOCK_JOB_COMPLETED", "J2", "gone");
  flush ();
  g_assert_true (job_group_wait_ready_sync (fx->group, NULL, &error));
  g_assert_no_error (error);
}

/* abort force-cancels, waits and dismisses everything (QEMU cooperating). */
static void
test_group_abort (Fixture *fx, gconstpointer data)
{
  BlkJob *j1 = job_group_add (fx->group, "J1", "vda");
  BlkJob *j2 = job_group_add (fx->group, "J2", "vdb");
  gint64 start;

  make_ready (fx, j1);
  make_running (fx, j2);
  fx->auto_reply = TRUE;
  fx->simulate = TRUE;
  start = g_get_monotonic_time ();
  job_group_abort (fx->group, 4000);
  g_assert_cmpint (g_get_monotonic_time () - start, <, 3 * G_USEC_PER_SEC);
  g_assert_cmpint (j1->state, ==, BLK_JOB_CONCLUDED);
  g_assert_cmpint (j2->state, ==, BLK_JOB_CONCLUDED);
  g_assert_true (j1->forced);
  g_assert_true (j1->dismissed);
  g_assert_true (j2->dismissed);
  /* J1's dismiss and J2's cancel may reach the peer in either order. */
  peer_expect_set (fx, "block-job-cancel {\"device\":\"J1\",\"force\":true}",
                   "job-dismiss {\"id\":\"J1\"}",
                   "block-job-cancel {\"device\":\"J2\",\"force\":true}",
                   "job-dismiss {\"id\":\"J2\"}", NULL);
  peer_assert_quiet (fx);
}

/* abort gives up after its timeout when QEMU never ends the jobs. */
static void
test_group_abort_timeout (Fixture *fx, gconstpointer data)
{
  BlkJob *j1 = job_group_add (fx->group, "J1", "vda");
  gint64 start;

  make_running (fx, j1);
  fx->auto_reply = TRUE;
  start = g_get_monotonic_time ();
  job_group_abort (fx->group, 100);
  g_assert_cmpint (g_get_monotonic_time () - start, >=, 90 * 1000);
  g_assert_cmpint (g_get_monotonic_time () - start, <, 3 * G_USEC_PER_SEC);
  g_assert_cmpint (j1->state, ==, BLK_JOB_CANCELLING);
  g_autoptr(Cmd) c1 = peer_expect (fx, "block-job-cancel", "{\"device\":\"J1\",\"force\":true}");
  peer_assert_quiet (fx);
}

/* ---- convergence ---------------------------------------------------------- */

#define SEC G_USEC_PER_SEC
#define MIB ((gint64) 1 << 20)

/* Shrinking remaining bytes converge, however slowly. */
static void
test_converge_shrinking (void)
{
  ConvergeWatch w = CONVERGE_WATCH_INIT;

  for (gint64 t = 0; t < 100; t++)
    g_assert_false (converge_watch_stuck (&w, t * MIB, 200 * MIB, t * SEC, 3 * SEC));
}

/* Data moves, the dirty bytes come back as fast: stuck once the window passes. */
static void
test_converge_stuck (void)
{
  ConvergeWatch w = CONVERGE_WATCH_INIT;

  g_assert_false (converge_watch_stuck (&w, 10 * MIB, 40 * MIB, 0, 3 * SEC));
  g_assert_false (converge_watch_stuck (&w, 20 * MIB, 50 * MIB, 1 * SEC, 3 * SEC));
  g_assert_false (converge_watch_stuck (&w, 30 * MIB, 61 * MIB, 2 * SEC, 3 * SEC));
  g_assert_true (converge_watch_stuck (&w, 40 * MIB, 70 * MIB, 3 * SEC, 3 * SEC));
  /* a new low starts the window again */
  g_assert_false (converge_watch_stuck (&w, 50 * MIB, 79 * MIB, 4 * SEC, 3 * SEC));
  g_assert_false (converge_watch_stuck (&w, 60 * MIB, 90 * MIB, 6 * SEC, 3 * SEC));
  converge_watch_reset (&w);
  g_assert_false (converge_watch_stuck (&w, 60 * MIB, 90 * MIB, 100 * SEC, 3 * SEC));
}

/* No data moved (a stall) or nothing left to copy (the rate limit holds READY
 * back): neither is a failure to converge; no figures yet neither. */
static void
test_converge_not_stuck (void)
{
  ConvergeWatch stall = CONVERGE_WATCH_INIT;
  ConvergeWatch done = CONVERGE_WATCH_INIT;
  ConvergeWatch none = CONVERGE_WATCH_INIT;

  g_assert_false (converge_watch_stuck (&stall, 10 * MIB, 40 * MIB, 0, 3 * SEC));
  g_assert_false (converge_watch_stuck (&stall, 10 * MIB, 40 * MIB, 10 * SEC, 3 * SEC));
  g_assert_false (converge_watch_stuck (&done, 32 * MIB, 32 * MIB, 0, 3 * SEC));
  g_assert_false (converge_watch_stuck (&done, 900 * MIB, 900 * MIB, 10 * SEC, 3 * SEC));
  g_assert_false (converge_watch_stuck (&none, 0, 0, 0, 3 * SEC));
  g_assert_false (converge_watch_stuck (&none, -1, 10, 10 * SEC, 3 * SEC));
  g_assert_false (converge_watch_stuck (&none, 20, 10, 20 * SEC, 3 * SEC));
}

int
main (int argc, char **argv)
{
  signal (SIGPIPE, SIG_IGN);
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/job/new", test_job_new);
  g_test_add_func ("/converge/shrinking", test_converge_shrinking);
  g_test_add_func ("/converge/stuck", test_converge_stuck);
  g_test_add_func ("/converge/not-stuck", test_converge_not_stuck);
  g_test_add_func ("/job/running", test_job_running);
  g_test_add_func ("/job/ready-event", test_job_ready_event);
  g_test_add_func ("/job/ready-status", test_job_ready_status);
  g_test_add_func ("/job/ready-sticky", test_job_ready_sticky);
  g_test_add_func ("/job/completed", test_job_completed);
  g_test_add_func ("/job/completed-error", test_job_completed_error);
  g_test_add_func ("/job/cancelled-by-us", test_job_cancelled_by_us);
  g_test_add_func ("/job/cancelled-outside", test_job_cancelled_outside);
  g_test_add_func ("/job/dismissed", test_job_dismissed);
  g_test_add_func ("/job/after-end", test_job_after_end);
  g_test_add_func ("/job/fail", test_job_fail);
  g_test_add_func ("/job/set-state", test_job_set_state);

#define ADD(path, func) \
  g_test_add ("/job-group/" path, Fixture, NULL, fixture_setup, func, fixture_teardown)
  ADD ("wait-ready", test_group_wait_ready);
  ADD ("fail-fast", test_group_fail_fast);
  ADD ("dismiss", test_group_dismiss);
  ADD ("cancel-all", test_group_cancel_all);
  ADD ("cancel-error", test_group_cancel_error);
  ADD ("complete-all", test_group_complete_all);
  ADD ("connection-lost", test_group_connection_lost);
  ADD ("refresh", test_group_refresh);
  ADD ("refresh-error", test_group_refresh_error);
  ADD ("wait-cancel", test_group_wait_cancel);
  ADD ("forget", test_group_forget);
  ADD ("abort", test_group_abort);
  ADD ("abort-timeout", test_group_abort_timeout);
  return g_test_run ();
}
