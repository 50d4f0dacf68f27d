/* The control socket of a running operation: listening, one request per connection, the commands. */
#include "src/control.h"

#include <errno.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gio/gunixsocketaddress.h>

#include "common/error.h"
#include "common/escape.h"
#include "common/json.h"
#include "qmp/qmp-commands.h"
#include "qmp/qmp-json.h"
#include "src/events.h"
#include "src/host-share.h"
#include "src/journal.h"

#define CONTROL_MAX_CONNECTIONS 8
#define CONTROL_REQUEST_TIMEOUT_S 5
#define CONTROL_ID_MAX 40
#define CONTROL_BUDGET_TICK_MS 1000

struct _Control {
  char *id;                    /* the operation's name: --op-id, else the migration id */
  char *migration_id;          /* what its QEMU names carry (names.h): gc spares them */
  char *command;
  char *path;
  GSocketService *service;
  GCancellable *operation;     /* `cancel` cancels it */
  GList *requests;             /* ControlRequest, in flight */
  char *phase;                 /* from the phase events */
  Progress *progress;          /* the mirrors being watched, or NULL */
  JobGroup *group;
  QmpClient *memory_qmp;       /* live: the source, whose memory stream set-speed limits */
  gint64 memory_default;       /* its max-bandwidth before set-speed changed it; -1 */
  gboolean memory_changed;
  gboolean speed_set;
  gint64 speed;
  HostSlot *slot;              /* --max-parallel: our turn */
  HostBudget *budget;          /* --host-bandwidth: shared with the host's other operations */
  gint64 host_bandwidth;
  gint64 budget_speed;         /* what the budget last gave each mirror; 0: not yet */
  guint budget_timer;
  gboolean hold;               /* --hold */
  gboolean quiet;              /* no line on stderr when held */
  gboolean held;               /* every mirror READY, waiting for switchover */
  gboolean switch_asked;
};

typedef struct {
  Control *control;
  GSocketConnection *conn;
  GCancellable *cancellable;   /* control_close or the timeout cancel it */
  guint timeout;
  char buf[CONTROL_MAX_REQUEST];
  gsize len;
} ControlRequest;

static Control *control_current;

gboolean
control_check_id (const char *id, GError **error)
{
  gsize len = id != NULL ? strlen (id) : 0;
  g_autofree char *quoted = NULL;

  if (len >= 1 && len <= CONTROL_ID_MAX && id[0] != '.' && id[0] != '-'
      && strspn (id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == len)
    return TRUE;
  quoted = blkmig_escape (id != NULL ? id : "");
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
               "operation id '%s' is not valid: 1 to %d letters, digits, '.', '_' or '-', "
               "not starting with '.' or '-'", quoted, CONTROL_ID_MAX);
  return FALSE;
}

char *
control_socket_path (const char *id, GError **error)
{
  g_autofree char *dir = journal_dir ();
  g_autofree char *name = NULL;
  g_autofree char *path = NULL;

  if (!control_check_id (id, error))
    return NULL;
  name = g_strdup_printf ("%s.ctl", id);
  path = g_build_filename (dir, name, NULL);
  if (strlen (path) >= sizeof (((struct sockaddr_un *) NULL)->sun_path))
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "control socket %s: the path is too long for a socket (state "
                        "directory %s)", path, dir), NULL;
  return g_steal_pointer (&path);
}

/* Mirrors of this operation that still copy (not READY, not ended): what the
 * host's budget is divided by. */
static guint
control_copying (Control *c)
{
  GPtrArray *jobs = c->group != NULL ? job_group_get_jobs (c->group) : NULL;
  guint n = 0;

  for (guint i = 0; jobs != NULL && i < jobs->len; i++)
    {
      BlkJob *job = jobs->pdata[i];
      n += !job->reached_ready && !blk_job_is_ended (job);
    }
  return n;
}

/* The per-mirror speed now: the budget divided by every mirror copying on the
 * host, capped by --speed or set-speed. */
static gint64
control_budget_speed (Control *c, gint64 cap)
{
  guint total = host_budget_share (c->budget, control_copying (c));
  gint64 speed = MAX (c->host_bandwidth / MAX (total, 1), 1);

  return cap > 0 ? MIN (speed, cap) : speed;
}

/* ---- the commands ---------------------------------------------------------- */

static JsonObject *
control_reply_ok (void)
{
  JsonObject *reply = json_object_new ();

  json_object_set_boolean_member (reply, "ok", TRUE);
  return reply;
}

static JsonObject *
control_reply_error (const GError *error)
{
  JsonObject *reply = json_object_new ();
  int code = error->domain == BLKMIG_ERROR ? error->code : BLKMIG_ERROR_FAILED;

  json_object_set_boolean_member (reply, "ok", FALSE);
  json_object_set_string_member (reply, "error", error->message);
  json_object_set_int_member (reply, "exit-code", code);
  return reply;
}

static JsonObject *
control_status (Control *c)
{
  JsonObject *reply = control_reply_ok ();

  json_object_set_string_member (reply, "id", c->id);
  json_object_set_string_member (reply, "migration-id", c->migration_id);
  json_object_set_string_member (reply, "command", c->command);
  json_object_set_string_member (reply, "phase", c->phase != NULL ? c->phase : "start");
  json_object_set_boolean_member (reply, "hold", c->hold);
  json_object_set_boolean_member (reply, "held", c->held);
  if (c->speed_set)
    json_object_set_int_member (reply, "speed", c->speed);
  if (c->budget != NULL)
    {
      json_object_set_int_member (reply, "host-bandwidth", c->host_bandwidth);
      json_object_set_int_member (reply, "host-share", c->budget_speed);
    }
  json_object_set_array_member (reply, "disks", c->progress != NULL
                                                ? progress_snapshot (c->progress)
                                                : json_array_new ());
  return reply;
}

/* The memory stream follows set-speed; 0 gives it back its own limit. */
static gboolean
control_set_memory_speed (Control *c, gint64 speed, GError **error)
{
  QmpMigrateParameters params = { .max_bandwidth = speed > 0 ? speed : c->memory_default };

  if (c->memory_qmp == NULL || params.max_bandwidth <= 0)
    return TRUE;
  if (!qmp_migrate_set_parameters (c->memory_qmp, &params, c->operation, error))
    return g_prefix_error (error, "memory stream: "), FALSE;
  c->memory_changed = speed > 0;
  return TRUE;
}

static JsonObject *
control_set_speed (Control *c, JsonObject *request, GError **error)
{
  JsonNode *node = json_object_get_member (request, "bytes");
  gint64 speed;

  if (node == NULL || json_node_get_value_type (node) != G_TYPE_INT64
      || (speed = json_node_get_int (node)) < 0)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "set-speed needs bytes per second, a whole number >= 0"), NULL;
  c->speed = speed;  /* also for mirrors that start later */
  c->speed_set = TRUE;
  if (c->budget != NULL)  /* a cap under the host's budget: the next tick applies it */
    speed = control_budget_speed (c, speed);
  if ((c->group != NULL && !job_group_set_speed (c->group, speed, c->operation, error))
      || !control_set_memory_speed (c, speed, error))
    return NULL;
  return control_reply_ok ();
}

static JsonObject *
control_copy_mode (Control *c, JsonObject *request, GError **error)
{
  if (g_strcmp0 (qmp_member_string (request, "mode"), "write-blocking") != 0)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "copy-mode can only switch to write-blocking (QEMU cannot go back)"), NULL;
  if (c->group == NULL)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "no mirror is running yet (phase %s)",
                        c->phase != NULL ? c->phase : "start"), NULL;
  if (!job_group_set_write_blocking (c->group, c->operation, error))
    return NULL;
  return control_reply_ok ();
}

/* How many of the watched mirrors are READY, of how many. */
static void
control_count_ready (Control *c, guint *ready, guint *total)
{
  GPtrArray *jobs = c->group != NULL ? job_group_get_jobs (c->group) : NULL;

  *ready = 0;
  *total = jobs != NULL ? jobs->len : 0;
  for (guint i = 0; i < *total; i++)
    *ready += ((BlkJob *) jobs->pdata[i])->state == BLK_JOB_READY;
}

static JsonObject *
control_switchover (Control *c, GError **error)
{
  guint ready, total;

  if (!c->hold)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "%s was not started with --hold: it switches over by itself once every "
                        "mirror is ready", c->id), NULL;
  control_count_ready (c, &ready, &total);
  if (!c->held)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_BUSY,
                        "not held yet (phase %s, %u of %u mirrors ready): switchover is possible "
                        "once status says held", c->phase != NULL ? c->phase : "start",
                        ready, total), NULL;
  c->switch_asked = TRUE;
  return control_reply_ok ();
}

static JsonObject *
control_dispatch (Control *c, JsonObject *request, GError **error)
{
  const char *command = qmp_member_string (request, "command");
  g_autofree char *quoted = NULL;

  if (g_strcmp0 (command, "status") == 0)
    return control_status (c);
  if (g_strcmp0 (command, "set-speed") == 0)
    return control_set_speed (c, request, error);
  if (g_strcmp0 (command, "copy-mode") == 0)
    return control_copy_mode (c, request, error);
  if (g_strcmp0 (command, "switchover") == 0)
    return control_switchover (c, error);
  if (g_strcmp0 (command, "cancel") == 0)
    {
      g_cancellable_cancel (c->operation);
      return control_reply_ok ();
    }
  quoted = blkmig_escape (command != NULL ? command : "");
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
               "unknown control command '%s' (status, set-speed, copy-mode, switchover, cancel)",
               quoted);
  return NULL;
}

/* ---- one request per connection ------------------------------------------- */

static void
control_request_free (ControlRequest *req)
{
  if (!g_cancellable_is_cancelled (req->cancellable))
    req->control->requests = g_list_remove (req->control->requests, req);
  if (req->timeout != 0)
    g_source_remove (req->timeout);
  g_io_stream_close (G_IO_STREAM (req->conn), NULL, NULL);
  g_object_unref (req->conn);
  g_object_unref (req->cancellable);
  g_free (req);
}

/* After the reply: the rest of what the client sent is read and dropped until it
 * hangs up (or the timeout), so closing never resets a reply it has not read. */
static void
control_drained_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  ControlRequest *req = user_data;

  if (g_input_stream_read_finish (G_INPUT_STREAM (source), result, NULL) <= 0)
    control_request_free (req);
  else
    g_input_stream_read_async (G_INPUT_STREAM (source), req->buf, sizeof req->buf,
                               G_PRIORITY_DEFAULT, req->cancellable, control_drained_cb, req);
}

static void
control_written_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  ControlRequest *req = user_data;
  GSocket *socket = g_socket_connection_get_socket (req->conn);

  if (!g_output_stream_write_all_finish (G_OUTPUT_STREAM (source), result, NULL, NULL)
      || !g_socket_shutdown (socket, FALSE, TRUE, NULL))
    {
      control_request_free (req);
      return;
    }
  g_input_stream_read_async (g_io_stream_get_input_stream (G_IO_STREAM (req->conn)), req->buf,
                             sizeof req->buf, G_PRIORITY_DEFAULT, req->cancellable,
                             control_drained_cb, req);
}

static void
control_send (ControlRequest *req, JsonObject *reply)
{
  g_autoptr(JsonNode) root = json_node_new (JSON_NODE_OBJECT);
  g_autofree char *text = NULL;
  GBytes *bytes;

  json_node_set_object (root, reply);
  text = json_to_string (root, FALSE);
  bytes = g_bytes_new_take (g_strconcat (text, "\n", NULL), strlen (text) + 1);
  g_output_stream_write_all_async (g_io_stream_get_output_stream (G_IO_STREAM (req->conn)),
                                   g_bytes_get_data (bytes, NULL), g_bytes_get_size (bytes),
                                   G_PRIORITY_DEFAULT, req->cancellable, control_written_cb, req);
  g_object_set_data_full (G_OBJECT (req->conn), "reply", bytes, (GDestroyNotify) g_bytes_unref);
}

/* @len bytes of @req->buf hold one request (its newline cut off). */
static void
control_answer (ControlRequest *req, gsize len)
{
  static const BlkmigJsonLimits limits = { CONTROL_MAX_REQUEST, 4, 64 };
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonObject) reply = NULL;
  g_autoptr(JsonNode) root = blkmig_json_parse (req->buf, len, &limits, &error);

  if (root == NULL || !JSON_NODE_HOLDS_OBJECT (root))
    {
      g_clear_error (&error);
      g_set_error (&error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                   "a request is one JSON object on one line");
    }
  else
    reply = control_dispatch (req->control, json_node_get_object (root), &error);
  if (reply == NULL)
    reply = control_reply_error (error);
  control_send (req, reply);
}

static void control_read_more (ControlRequest *req);

static void
control_read_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  ControlRequest *req = user_data;
  gssize n = g_input_stream_read_finish (G_INPUT_STREAM (source), result, NULL);
  const char *newline;

  if (n <= 0)
    {
      control_request_free (req);  /* gone, cancelled or timed out before a whole line */
      return;
    }
  req->len += n;
  newline = memchr (req->buf, '\n', req->len);
  if (newline != NULL)
    control_answer (req, newline - req->buf);
  else if (req->len == sizeof req->buf)
    {
      g_autoptr(GError) error = g_error_new (BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                                             "request longer than %d bytes", CONTROL_MAX_REQUEST);
      g_autoptr(JsonObject) reply = control_reply_error (error);
      control_send (req, reply);
    }
  else
    control_read_more (req);
}

static void
control_read_more (ControlRequest *req)
{
  g_input_stream_read_async (g_io_stream_get_input_stream (G_IO_STREAM (req->conn)),
                             req->buf + req->len, sizeof req->buf - req->len,
                             G_PRIORITY_DEFAULT, req->cancellable, control_read_cb, req);
}

static gboolean
control_timeout_cb (gpointer user_data)
{
  ControlRequest *req = user_data;

  req->timeout = 0;
  g_cancellable_cancel (req->cancellable);  /* the pending read or write ends */
  req->control->requests = g_list_remove (req->control->requests, req);
  return G_SOURCE_REMOVE;
}

/* Only our own user (and root) may talk to us, whatever the file's mode says. */
static gboolean
control_peer_trusted (GSocketConnection *conn)
{
  g_autoptr(GCredentials) creds = g_socket_get_credentials (g_socket_connection_get_socket (conn),
                                                            NULL);
  uid_t uid = creds != NULL ? g_credentials_get_unix_user (creds, NULL) : (uid_t) -1;

  return uid == geteuid () || uid == 0;
}

static gboolean
control_incoming_cb (GSocketService *service, GSocketConnection *conn, GObject *source,
                     gpointer user_data)
{
  Control *c = user_data;
  ControlRequest *req;

  if (g_list_length (c->requests) >= CONTROL_MAX_CONNECTIONS || !control_peer_trusted (conn))
    return FALSE;  /* the service closes it */
  req = g_new0 (ControlRequest, 1);
  req->control = c;
  req->conn = g_object_ref (conn);
  req->cancellable = g_cancellable_new ();
  req->timeout = g_timeout_add_seconds (CONTROL_REQUEST_TIMEOUT_S, control_timeout_cb, req);
  c->requests = g_list_prepend (c->requests, req);
  control_read_more (req);
  return TRUE;
}

/* ---- the socket ------------------------------------------------------------ */

/* A socket left at @path by a dead operation goes; a live one means busy. */
static gboolean
control_clear_stale (const char *path, const char *id, GError **error)
{
  g_autoptr(GSocketClient) client = g_socket_client_new ();
  g_autoptr(GSocketAddress) addr = g_unix_socket_address_new (path);
  g_autoptr(GSocketConnection) conn = NULL;
  struct stat st;

  if (lstat (path, &st) != 0)
    return TRUE;
  if (!S_ISSOCK (st.st_mode) || st.st_uid != geteuid ())
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED,
                        "%s exists and is not a control socket of this user", path), FALSE;
  conn = g_socket_client_connect (client, G_SOCKET_CONNECTABLE (addr), NULL, NULL);
  if (conn != NULL)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_BUSY,
                        "operation %s is already running (its control socket %s answers)",
                        id, path), FALSE;
  if (unlink (path) != 0 && errno != ENOENT)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED, "cannot remove stale %s: %s",
                        path, g_strerror (errno)), FALSE;
  return TRUE;
}

gboolean
control_remove_dead (const char *id, gboolean dry_run)
{
  g_autofree char *path = control_socket_path (id, NULL);
  struct stat st;

  if (path == NULL || lstat (path, &st) != 0 || !S_ISSOCK (st.st_mode) || st.st_uid != geteuid ()
      || control_answers (id))
    return FALSE;
  return dry_run || unlink (path) == 0;
}

/* Binds @path with mode 0600 from the start: never a moment others could connect. */
static gboolean
control_listen (Control *c, GError **error)
{
  g_autoptr(GSocketAddress) addr = g_unix_socket_address_new (c->path);
  mode_t old = umask (0177);
  gboolean ok;

  ok = g_socket_listener_add_address (G_SOCKET_LISTENER (c->service), addr,
                                      G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_DEFAULT, NULL,
                                      NULL, error);
  umask (old);
  if (!ok)
    return g_prefix_error (error, "control socket %s: ", c->path), FALSE;
  g_signal_connect (c->service, "incoming", G_CALLBACK (control_incoming_cb), c);
  g_socket_service_start (c->service);
  return TRUE;
}

static void
control_observe (const char *type, JsonObject *event)
{
  const char *phase = qmp_member_string (event, "phase");

  if (control_current != NULL && g_str_equal (type, "phase") && phase != NULL)
    {
      g_free (control_current->phase);
      control_current->phase = g_strdup (phase);
    }
}

Control *
control_open (const char *id, const char *migration_id, const char *command,
              GCancellable *cancellable, GError **error)
{
  g_autofree char *dir = journal_dir ();
  g_autofree char *path = control_socket_path (id, error);
  Control *c;

  if (path == NULL || !journal_dir_check (dir, TRUE, error)
      || !control_clear_stale (path, id, error))
    return NULL;
  c = g_new0 (Control, 1);
  c->id = g_strdup (id);
  c->migration_id = g_strdup (migration_id);
  c->command = g_strdup (command);
  c->path = g_steal_pointer (&path);
  c->operation = g_object_ref (cancellable);
  c->memory_default = -1;
  c->service = g_socket_service_new ();
  if (!control_listen (c, error))
    {
      control_close (c);
      return NULL;
    }
  control_current = c;
  events_set_observer (control_observe);
  events_emit ("control", "id", qmp_str (id), "socket", qmp_str (c->path), NULL);
  return c;
}

/* The memory stream's limit goes back to what it was before set-speed. */
static void
control_restore_memory (Control *c)
{
  g_autoptr(GError) error = NULL;

  if (c->memory_changed && qmp_client_get_state (c->memory_qmp) == QMP_STATE_READY
      && !control_set_memory_speed (c, 0, &error))
    g_printerr ("blkmig: warning: %s\n", error->message);
}

void
control_close (Control *c)
{
  if (c == NULL)
    return;
  if (control_current == c)
    {
      events_set_observer (NULL);
      control_current = NULL;
    }
  for (GList *l = c->requests; l != NULL; l = l->next)
    {
      ControlRequest *req = l->data;

      g_clear_handle_id (&req->timeout, g_source_remove);
      g_cancellable_cancel (req->cancellable);  /* its callback frees it */
    }
  g_list_free (c->requests);
  g_socket_service_stop (c->service);
  g_socket_listener_close (G_SOCKET_LISTENER (c->service));
  g_object_unref (c->service);
  g_clear_handle_id (&c->budget_timer, g_source_remove);
  g_clear_pointer (&c->budget, host_budget_leave);
  g_clear_pointer (&c->slot, host_slot_release);
  if (c->memory_qmp != NULL)
    control_restore_memory (c);
  if (c->path != NULL && unlink (c->path) != 0 && errno != ENOENT)
    g_printerr ("blkmig: warning: cannot remove %s: %s\n", c->path, g_strerror (errno));
  g_clear_object (&c->memory_qmp);
  g_object_unref (c->operation);
  g_free (c->phase);
  g_free (c->id);
  g_free (c->migration_id);
  g_free (c->command);
  g_free (c->path);
  g_free (c);
}

/* ---- what the operation tells us ----------------------------------------- */

void
control_watch_jobs (Progress *progress, JobGroup *group)
{
  if (control_current == NULL)
    return;
  control_current->progress = progress;
  control_current->group = group;
}

void
control_unwatch_jobs (Progress *progress)
{
  if (control_current == NULL || control_current->progress != progress)
    return;
  control_current->progress = NULL;
  control_current->group = NULL;
}

void
control_set_memory_stream (QmpClient *qmp)
{
  g_autoptr(QmpMigrateParametersInfo) info = NULL;
  Control *c = control_current;

  if (c == NULL || c->memory_qmp != NULL)
    return;
  info = qmp_query_migrate_parameters (qmp, c->operation, NULL);
  c->memory_qmp = g_object_ref (qmp);
  c->memory_default = info != NULL ? info->max_bandwidth : -1;
  if (c->speed_set)
    control_set_memory_speed (c, c->speed, NULL);
}

static gboolean
control_budget_tick_cb (gpointer data)
{
  Control *c = data;
  gint64 speed = control_budget_speed (c, c->speed);
  g_autoptr(GError) error = NULL;

  if (c->group != NULL && speed != c->budget_speed)
    {
      if (!job_group_set_speed (c->group, speed, c->operation, &error))
        g_printerr ("blkmig: warning: host bandwidth: %s\n", error->message);
      c->budget_speed = speed;
    }
  return G_SOURCE_CONTINUE;
}

static gboolean
control_set_host_bandwidth (Control *c, gint64 bytes, gint64 cap, GError **error)
{
  if (bytes <= 0)
    return TRUE;
  c->budget = host_budget_join (c->id, error);
  if (c->budget == NULL)
    return FALSE;
  c->host_bandwidth = bytes;
  c->speed = cap;
  c->budget_timer = g_timeout_add (CONTROL_BUDGET_TICK_MS, control_budget_tick_cb, c);
  return TRUE;
}

gint64
control_mirror_speed (gint64 fallback)
{
  Control *c = control_current;

  if (c != NULL && c->budget != NULL)
    return c->budget_speed = control_budget_speed (c, c->speed_set ? c->speed : fallback);
  return c != NULL && c->speed_set ? c->speed : fallback;
}

void
control_enable_hold (gboolean quiet)
{
  if (control_current == NULL)
    return;
  control_current->hold = TRUE;
  control_current->quiet = quiet;
}

gboolean
control_hold_enabled (void)
{
  return control_current != NULL && control_current->hold;
}

/* The first mirror that ended while held (it failed: nothing ends a READY one). */
static BlkJob *
control_ended_job (JobGroup *group)
{
  GPtrArray *jobs = job_group_get_jobs (group);

  for (guint i = 0; i < jobs->len; i++)
    if (blk_job_is_ended (jobs->pdata[i]))
      return jobs->pdata[i];
  return NULL;
}

static void
control_announce_held (Control *c, JobGroup *group)
{
  g_autofree char *id = blkmig_escape (c->id);

  g_free (c->phase);
  c->phase = g_strdup ("held");
  c->held = TRUE;
  events_emit ("held", "disks", qmp_int (job_group_get_jobs (group)->len), NULL);
  if (!c->quiet)
    g_printerr ("blkmig: every mirror is ready; holding until `blkmig ctl %s switchover`\n", id);
}

gboolean
control_hold (gpointer data, JobGroup *group, GCancellable *cancellable, GError **error)
{
  Control *c = control_current;
  BlkJob *ended = NULL;

  if (c == NULL || !c->hold)
    return TRUE;
  control_announce_held (c, group);
  while (!c->switch_asked && !g_cancellable_is_cancelled (cancellable)
         && (ended = control_ended_job (group)) == NULL)
    g_main_context_iteration (g_main_context_get_thread_default (), TRUE);
  c->held = FALSE;
  if (g_cancellable_set_error_if_cancelled (cancellable, error))
    return FALSE;
  if (ended != NULL)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_JOB, "hold: %s: %s", ended->label,
                        ended->error != NULL ? ended->error : "ended while held"), FALSE;
  return TRUE;
}

gboolean
control_join_host (const ControlHostOptions *opts, gint64 cap, GError **error)
{
  Control *c = control_current;

  if (c == NULL)
    return TRUE;
  if (opts->max_parallel > 0
      && (c->slot = host_slot_acquire (opts->max_parallel, c->operation, error)) == NULL)
    return FALSE;
  return control_set_host_bandwidth (c, opts->host_bandwidth, cap, error);
}
