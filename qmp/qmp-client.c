/* Asynchronous QMP client: framing, negotiation, command/reply matching, events, fds. */
#include "qmp/qmp-client.h"

#include <gio/gunixfdmessage.h>
#include <gio/gunixsocketaddress.h>

#include "common/async.h"
#include "common/debug.h"
#include "common/escape.h"
#include "common/json.h"
#include "qmp/qmp-json.h"
#include "qmp/qmp-schema.h"

#define QMP_DEFAULT_TIMEOUT_MS (60 * 1000)
#define QMP_READ_CHUNK 65536
/* A peer's line is bounded before json-glib sees it: its length, its nesting
 * (json-glib recurses; a backing chain nests one level per layer in query-block)
 * and its node count (the tree costs ~50 bytes a node, whatever the text's size).
 * QEMU's largest replies (query-qmp-schema, query-named-block-nodes) stay far
 * below all three. */
#define QMP_MAX_LINE (16 * 1024 * 1024)
static const BlkmigJsonLimits qmp_json_limits = {
  .max_bytes = QMP_MAX_LINE, .max_depth = 1024, .max_values = 1024 * 1024,
};

G_DEFINE_QUARK (qmp-error-quark, qmp_error)

static guint qmp_connect_timeout_ms = QMP_DEFAULT_TIMEOUT_MS;

typedef struct {
  GBytes *data;
  gsize offset;
  int fd;                      /* sent with the first byte, then -1 */
} QmpOutMsg;

typedef struct {
  QmpClient *client;           /* not a reference: the client owns the table */
  GTask *task;
  char *command;
  char *id;
  GSource *timeout_source;
  GSource *cancel_source;
} QmpPending;

struct _QmpClient {
  GObject parent_instance;
  char *label;
  QmpState state;
  GSocket *socket;
  GSocketConnection *connection;
  GSource *in_source;
  GSource *out_source;
  GString *inbuf;
  GQueue outq;
  GHashTable *pending;         /* id → QmpPending */
  guint64 next_id;
  char *version;
  GHashTable *commands;        /* set of command names */
  GHashTable *arguments;       /* "COMMAND ARG" from query-qmp-schema, read on first use */
  guint default_timeout_ms;
  guint connect_timeout_ms;
  GTask *connect_task;         /* while CONNECTING .. NEGOTIATING */
  GSource *connect_guard;      /* timeout for the whole connect */
  GSource *connect_cancel;     /* the connect's cancellable */
};

enum { SIGNAL_EVENT, SIGNAL_CLOSED, N_SIGNALS };
static guint signals[N_SIGNALS];

G_DEFINE_TYPE (QmpClient, qmp_client, G_TYPE_OBJECT)

static void qmp_client_close_with_error (QmpClient *self, GError *error);
static GSource *qmp_attach (GSource *source, GSourceFunc func, gpointer data);
static void qmp_client_schedule_write (QmpClient *self);
static void qmp_negotiated_cb (GObject *source, GAsyncResult *result, gpointer user_data);

static void
qmp_source_clear (GSource **source)
{
  if (*source == NULL)
    return;
  g_source_destroy (*source);
  g_clear_pointer (source, g_source_unref);
}

/* Ends the connect task: success when @why is NULL. */
static void
qmp_client_connect_done (QmpClient *self, const GError *why)
{
  g_autoptr(GTask) task = g_steal_pointer (&self->connect_task);

  qmp_source_clear (&self->connect_guard);
  qmp_source_clear (&self->connect_cancel);
  if (task == NULL)
    return;
  if (why != NULL)
    g_task_return_error (task, g_error_copy (why));
  else
    g_task_return_pointer (task, g_object_ref (self), g_object_unref);
}

static void
qmp_out_msg_free (QmpOutMsg *msg)
{
  g_bytes_unref (msg->data);
  if (msg->fd >= 0)
    close (msg->fd);
  g_free (msg);
}

static void
qmp_pending_free (QmpPending *pending)
{
  if (pending->timeout_source != NULL)
    {
      g_source_destroy (pending->timeout_source);
      g_source_unref (pending->timeout_source);
    }
  if (pending->cancel_source != NULL)
    {
      g_source_destroy (pending->cancel_source);
      g_source_unref (pending->cancel_source);
    }
  g_clear_object (&pending->task);
  g_free (pending->command);
  g_free (pending->id);
  g_free (pending);
}

static void
qmp_client_dispose (GObject *object)
{
  QmpClient *self = QMP_CLIENT (object);

  if (self->state != QMP_STATE_CLOSED)
    qmp_client_close_with_error (self, g_error_new (QMP_ERROR, QMP_ERROR_CLOSED,
                                                    "%s: QMP client closed", self->label));
  G_OBJECT_CLASS (qmp_client_parent_class)->dispose (object);
}

static void
qmp_client_finalize (GObject *object)
{
  QmpClient *self = QMP_CLIENT (object);

  g_free (self->label);
  g_free (self->version);
  g_string_free (self->inbuf, TRUE);
  g_queue_clear_full (&self->outq, (GDestroyNotify) qmp_out_msg_free);
  g_hash_table_unref (self->pending);
  g_hash_table_unref (self->commands);
  g_clear_pointer (&self->arguments, g_hash_table_unref);
  g_clear_object (&self->socket);
  g_clear_object (&self->connection);
  G_OBJECT_CLASS (qmp_client_parent_class)->finalize (object);
}

static void
qmp_client_class_init (QmpClientClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);

  object_class->dispose = qmp_client_dispose;
  object_class->finalize = qmp_client_finalize;
  signals[SIGNAL_EVENT] = g_signal_new ("event", G_TYPE_FROM_CLASS (klass),
                                        G_SIGNAL_RUN_LAST, 0, NULL, NULL, NULL,
                                        G_TYPE_NONE, 2, G_TYPE_STRING,
                                        JSON_TYPE_OBJECT);
  signals[SIGNAL_CLOSED] = g_signal_new ("closed", G_TYPE_FROM_CLASS (klass),
                                         G_SIGNAL_RUN_LAST, 0, NULL, NULL, NULL,
                                         G_TYPE_NONE, 1, G_TYPE_ERROR);
}

static void
qmp_client_init (QmpClient *self)
{
  self->state = QMP_STATE_CONNECTING;
  self->inbuf = g_string_new (NULL);
  g_queue_init (&self->outq);
  self->pending = g_hash_table_new_full (g_str_hash, g_str_equal, NULL,
                                         (GDestroyNotify) qmp_pending_free);
  self->commands = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  self->default_timeout_ms = QMP_DEFAULT_TIMEOUT_MS;
}

/* ---- closing ------------------------------------------------------------ */

static void
qmp_client_fail_pending (QmpClient *self, const GError *why)
{
  GHashTableIter iter;
  gpointer value;
  g_autoptr(GPtrArray) tasks = g_ptr_array_new_with_free_func (g_object_unref);

  g_hash_table_iter_init (&iter, self->pending);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    {
      QmpPending *pending = value;
      GTask *task = g_steal_pointer (&pending->task);

      g_task_set_task_data (task, g_strdup (pending->command), g_free);
      g_ptr_array_add (tasks, task);
    }
  g_hash_table_remove_all (self->pending);
  for (guint i = 0; i < tasks->len; i++)
    {
      GTask *task = tasks->pdata[i];
      g_autofree char *prefix = g_strdup_printf ("%s: ", self->label);
      const char *text = g_str_has_prefix (why->message, prefix)
                         ? why->message + strlen (prefix) : why->message;

      /* "LABEL: COMMAND: text", like every other error of a command */
      g_task_return_new_error (task, why->domain, why->code, "%s: %s: %s", self->label,
                               (const char *) g_task_get_task_data (task), text);
    }
}

/* Takes @error.  Idempotent: only the first reason is kept. */
static void
qmp_client_close_with_error (QmpClient *self, GError *error)
{
  g_autoptr(GError) why = error;
  g_autoptr(QmpClient) hold = g_object_ref (self);

  if (self->state == QMP_STATE_CLOSED)
    return;
  blkmig_debug (BLKMIG_DEBUG_QMP, "%s: closed: %s", self->label, why->message);
  self->state = QMP_STATE_CLOSED;
  if (self->in_source != NULL)
    g_source_destroy (self->in_source);
  g_clear_pointer (&self->in_source, g_source_unref);
  if (self->out_source != NULL)
    g_source_destroy (self->out_source);
  g_clear_pointer (&self->out_source, g_source_unref);
  if (self->socket != NULL)
    g_socket_close (self->socket, NULL);
  qmp_client_fail_pending (self, why);
  qmp_client_connect_done (self, why);
  g_signal_emit (self, signals[SIGNAL_CLOSED], 0, why);
}

void
qmp_client_close (QmpClient *self)
{
  g_return_if_fail (QMP_IS_CLIENT (self));
  qmp_client_close_with_error (self, g_error_new (QMP_ERROR, QMP_ERROR_CLOSED,
                                                  "%s: QMP connection closed by blkmig",
                                                  self->label));
}

/* ---- incoming messages -------------------------------------------------- */

static QmpErrorCode
qmp_error_code_from_class (const char *klass)
{
  static const struct { const char *name; QmpErrorCode code; } map[] = {
    { "CommandNotFound", QMP_ERROR_COMMAND_NOT_FOUND },
    { "DeviceNotActive", QMP_ERROR_DEVICE_NOT_ACTIVE },
    { "DeviceNotFound", QMP_ERROR_DEVICE_NOT_FOUND },
    { "KVMMissingCap", QMP_ERROR_KVM_MISSING_CAP },
  };

  for (gsize i = 0; klass != NULL && i < G_N_ELEMENTS (map); i++)
    if (g_str_equal (klass, map[i].name))
      return map[i].code;
  return QMP_ERROR_GENERIC;
}

/* The command failed: QEMU's error class and text (escaped) in a QMP_ERROR. */
static void
qmp_client_return_error (QmpClient *self, GTask *task, const char *command, JsonObject *msg)
{
  JsonObject *err = qmp_member_object (msg, "error");
  const char *klass = qmp_member_string (err, "class");
  const char *desc = qmp_member_string (err, "desc");
  g_autofree char *text = blkmig_escape (desc != NULL ? desc : "(no text)");
  g_autofree char *klass_text = blkmig_escape (klass);
  QmpErrorCode code = qmp_error_code_from_class (klass);

  if (code == QMP_ERROR_GENERIC)
    g_task_return_new_error (task, QMP_ERROR, code, "%s: %s: %s", self->label, command, text);
  else
    g_task_return_new_error (task, QMP_ERROR, code, "%s: %s: %s (%s)", self->label,
                             command, text, klass_text);
}

static void
qmp_client_handle_reply (QmpClient *self, JsonObject *msg)
{
  /* QEMU answers input it cannot parse with an error that has no id. */
  const char *id = qmp_member_string (msg, "id");
  QmpPending *pending = id != NULL ? g_hash_table_lookup (self->pending, id) : NULL;
  g_autoptr(GTask) task = NULL;
  g_autofree char *command = NULL;

  if (pending == NULL)
    {
      blkmig_debug (BLKMIG_DEBUG_QMP, "%s: dropping reply to unknown or expired id %s",
                    self->label, id != NULL ? id : "(none)");
      return;
    }
  task = g_steal_pointer (&pending->task);
  command = g_strdup (pending->command);
  g_hash_table_remove (self->pending, id);

  if (json_object_has_member (msg, "return"))
    g_task_return_pointer (task, json_node_copy (json_object_get_member (msg, "return")),
                           (GDestroyNotify) json_node_unref);
  else
    qmp_client_return_error (self, task, command, msg);
}

static void
qmp_client_handle_greeting (QmpClient *self, JsonObject *msg)
{
  JsonObject *qemu = qmp_member_object (qmp_member_object (qmp_member_object (msg, "QMP"),
                                                           "version"), "qemu");

  if (self->state != QMP_STATE_GREETING)
    return;
  if (qemu != NULL)
    self->version = g_strdup_printf ("%" G_GINT64_FORMAT ".%" G_GINT64_FORMAT ".%" G_GINT64_FORMAT,
                                     qmp_member_int (qemu, "major", 0),
                                     qmp_member_int (qemu, "minor", 0),
                                     qmp_member_int (qemu, "micro", 0));
  self->state = QMP_STATE_NEGOTIATING;
  qmp_client_execute_async (self, "qmp_capabilities", NULL, -1, 0, NULL,
                            qmp_negotiated_cb, NULL);
}

static void
qmp_client_handle_message (QmpClient *self, JsonObject *msg)
{
  if (json_object_has_member (msg, "QMP"))
    qmp_client_handle_greeting (self, msg);
  else if (json_object_has_member (msg, "event"))
    {
      const char *name = qmp_member_string (msg, "event");
      g_autoptr(JsonObject) empty = json_object_new ();
      JsonObject *data = qmp_member_object (msg, "data");

      g_signal_emit (self, signals[SIGNAL_EVENT], 0, name != NULL ? name : "",
                     data != NULL ? data : empty);
    }
  else if (json_object_has_member (msg, "return") || json_object_has_member (msg, "error"))
    qmp_client_handle_reply (self, msg);
  else
    blkmig_debug (BLKMIG_DEBUG_QMP, "%s: ignoring unknown message", self->label);
}

static gboolean
qmp_client_handle_line (QmpClient *self, const char *line, GError **error)
{
  g_autoptr(GError) local_error = NULL;
  g_autoptr(JsonNode) root = NULL;

  if (*line == '\0' || g_str_equal (line, "\r"))
    return TRUE;
  blkmig_debug (BLKMIG_DEBUG_QMP, "%s <<< %s", self->label, line);
  root = blkmig_json_parse (line, -1, &qmp_json_limits, &local_error);
  if (root == NULL)
    {
      g_set_error (error, QMP_ERROR, QMP_ERROR_PROTOCOL, "%s: QMP peer sent bad JSON: %s",
                   self->label, local_error->message);
      return FALSE;
    }
  if (!JSON_NODE_HOLDS_OBJECT (root))
    {
      g_set_error (error, QMP_ERROR, QMP_ERROR_PROTOCOL,
                   "%s: QMP peer sent a message that is not a JSON object", self->label);
      return FALSE;
    }
  qmp_client_handle_message (self, json_node_get_object (root));
  return TRUE;
}

/* Dispatches every complete line in the input buffer. */
static void
qmp_client_process_input (QmpClient *self)
{
  g_autoptr(QmpClient) hold = g_object_ref (self);
  gsize start = 0;
  char *nl;

  while (self->state != QMP_STATE_CLOSED
         && (nl = memchr (self->inbuf->str + start, '\n', self->inbuf->len - start)) != NULL)
    {
      g_autofree char *line = g_strndup (self->inbuf->str + start,
                                         nl - (self->inbuf->str + start));
      GError *error = NULL;

      start = nl - self->inbuf->str + 1;
      if (!qmp_client_handle_line (self, line, &error))
        {
          qmp_client_close_with_error (self, error);
          return;
        }
    }
  if (self->state == QMP_STATE_CLOSED)
    return;
  g_string_erase (self->inbuf, 0, start);
  if (self->inbuf->len > QMP_MAX_LINE)
    qmp_client_close_with_error (self, g_error_new (QMP_ERROR, QMP_ERROR_PROTOCOL,
                                                    "%s: QMP message too long", self->label));
}

static gboolean
qmp_client_readable_cb (GSocket *socket, GIOCondition condition, gpointer user_data)
{
  QmpClient *self = user_data;
  char buf[QMP_READ_CHUNK];
  g_autoptr(GError) error = NULL;
  gssize n = g_socket_receive (socket, buf, sizeof buf, NULL, &error);

  if (n < 0 && g_error_matches (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
    return G_SOURCE_CONTINUE;
  if (n <= 0)
    {
      g_clear_pointer (&self->in_source, g_source_unref);
      qmp_client_close_with_error (self, n == 0
          ? g_error_new (QMP_ERROR, QMP_ERROR_CLOSED, "%s: QMP connection closed by QEMU",
                         self->label)
          : g_error_new (QMP_ERROR, QMP_ERROR_CLOSED, "%s: QMP connection failed: %s",
                         self->label, error->message));
      return G_SOURCE_REMOVE;
    }
  g_string_append_len (self->inbuf, buf, n);
  qmp_client_process_input (self);
  return G_SOURCE_CONTINUE;
}

/* ---- outgoing messages -------------------------------------------------- */

static gssize
qmp_client_send_one (QmpClient *self, QmpOutMsg *msg, GError **error)
{
  gsize len = 0;
  const guint8 *data = g_bytes_get_data (msg->data, &len);
  GOutputVector vec = { data + msg->offset, len - msg->offset };
  g_autoptr(GSocketControlMessage) fdmsg = NULL;
  GSocketControlMessage *msgs[1];

  if (msg->fd < 0)
    return g_socket_send_message (self->socket, NULL, &vec, 1, NULL, 0, 0, NULL, error);
  fdmsg = g_unix_fd_message_new ();
  if (!g_unix_fd_message_append_fd (G_UNIX_FD_MESSAGE (fdmsg), msg->fd, error))
    return -1;
  msgs[0] = fdmsg;
  return g_socket_send_message (self->socket, NULL, &vec, 1, msgs, 1, 0, NULL, error);
}

static gboolean
qmp_client_writable_cb (GSocket *socket, GIOCondition condition, gpointer user_data)
{
  QmpClient *self = user_data;

  while (!g_queue_is_empty (&self->outq))
    {
      QmpOutMsg *msg = g_queue_peek_head (&self->outq);
      g_autoptr(GError) error = NULL;
      gssize n = qmp_client_send_one (self, msg, &error);

      if (n < 0 && g_error_matches (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
        return G_SOURCE_CONTINUE;
      if (n < 0)
        {
          g_clear_pointer (&self->out_source, g_source_unref);
          qmp_client_close_with_error (self, g_error_new (QMP_ERROR, QMP_ERROR_CLOSED,
                                                          "%s: QMP send failed: %s",
                                                          self->label, error->message));
          return G_SOURCE_REMOVE;
        }
      if (msg->fd >= 0)
        {
          close (msg->fd);
          msg->fd = -1;
        }
      msg->offset += n;
      if (msg->offset == g_bytes_get_size (msg->data))
        qmp_out_msg_free (g_queue_pop_head (&self->outq));
    }
  g_clear_pointer (&self->out_source, g_source_unref);
  return G_SOURCE_REMOVE;
}

static void
qmp_client_schedule_write (QmpClient *self)
{
  if (self->out_source != NULL || self->state == QMP_STATE_CLOSED)
    return;
  self->out_source = g_socket_create_source (self->socket, G_IO_OUT, NULL);
  g_source_set_callback (self->out_source, G_SOURCE_FUNC (qmp_client_writable_cb),
                         self, NULL);
  g_source_attach (self->out_source, g_main_context_get_thread_default ());
}

static void
qmp_client_start_io (QmpClient *self, GSocket *socket)
{
  self->socket = g_object_ref (socket);
  g_socket_set_blocking (self->socket, FALSE);
  self->state = QMP_STATE_GREETING;
  self->in_source = g_socket_create_source (self->socket, G_IO_IN | G_IO_HUP | G_IO_ERR, NULL);
  g_source_set_callback (self->in_source, G_SOURCE_FUNC (qmp_client_readable_cb), self, NULL);
  g_source_attach (self->in_source, g_main_context_get_thread_default ());
}

/* ---- commands ----------------------------------------------------------- */

static gboolean
qmp_pending_timeout_cb (gpointer user_data)
{
  QmpPending *pending = user_data;
  QmpClient *self = pending->client;
  GTask *task = g_steal_pointer (&pending->task);
  guint timeout_ms = GPOINTER_TO_UINT (g_object_get_data (G_OBJECT (task), "timeout-ms"));
  g_autofree char *command = g_strdup (pending->command);

  g_hash_table_remove (self->pending, pending->id);
  g_task_return_new_error (task, QMP_ERROR, QMP_ERROR_TIMEOUT,
                           "%s: %s: no reply from QEMU within %u ms", self->label,
                           command, timeout_ms);
  g_object_unref (task);
  return G_SOURCE_REMOVE;
}

static gboolean
qmp_pending_cancelled_cb (GCancellable *cancellable, gpointer user_data)
{
  QmpPending *pending = user_data;
  GTask *task = g_steal_pointer (&pending->task);

  g_hash_table_remove (pending->client->pending, pending->id);
  g_task_return_error_if_cancelled (task);
  g_object_unref (task);
  return G_SOURCE_REMOVE;
}

static GSource *
qmp_attach (GSource *source, GSourceFunc func, gpointer data)
{
  g_source_set_callback (source, func, data, NULL);
  g_source_attach (source, g_main_context_get_thread_default ());
  return source;
}

static QmpPending *
qmp_pending_new (QmpClient *self, GTask *task, const char *command, guint timeout_ms,
                 GCancellable *cancellable)
{
  QmpPending *pending = g_new0 (QmpPending, 1);

  pending->client = self;
  pending->task = g_object_ref (task);
  pending->command = g_strdup (command);
  pending->id = g_strdup_printf ("blkmig-%" G_GUINT64_FORMAT, ++self->next_id);
  g_object_set_data (G_OBJECT (task), "timeout-ms", GUINT_TO_POINTER (timeout_ms));
  pending->timeout_source = qmp_attach (g_timeout_source_new (timeout_ms),
                                        qmp_pending_timeout_cb, pending);
  if (cancellable != NULL)
    pending->cancel_source = qmp_attach (g_cancellable_source_new (cancellable),
                                         G_SOURCE_FUNC (qmp_pending_cancelled_cb), pending);
  return pending;
}

static GBytes *
qmp_encode_command (const char *command, JsonNode *args, const char *id)
{
  g_autoptr(JsonObject) obj = json_object_new ();
  g_autoptr(JsonNode) root = json_node_new (JSON_NODE_OBJECT);
  g_autofree char *text = NULL;

  json_object_set_string_member (obj, "execute", command);
  if (args != NULL)
    json_object_set_member (obj, "arguments", json_node_ref (args));
  json_object_set_string_member (obj, "id", id);
  json_node_set_object (root, obj);
  text = json_to_string (root, FALSE);
  return g_bytes_new_take (g_strconcat (text, "\n", NULL), strlen (text) + 1);
}

static gboolean
qmp_client_check_can_execute (QmpClient *self, const char *command, GError **error)
{
  gboolean negotiating = self->state == QMP_STATE_NEGOTIATING;

  if (self->state == QMP_STATE_READY || negotiating)
    return TRUE;
  g_set_error (error, QMP_ERROR, self->state == QMP_STATE_CLOSED ? QMP_ERROR_CLOSED
                                                                 : QMP_ERROR_STATE,
               "%s: %s: QMP connection is %s", self->label, command,
               self->state == QMP_STATE_CLOSED ? "closed" : "not ready");
  return FALSE;
}

void
qmp_client_execute_async (QmpClient *self, const char *command, JsonNode *args, int fd,
                          guint timeout_ms, GCancellable *cancellable,
                          GAsyncReadyCallback callback, gpointer user_data)
{
  g_autoptr(JsonNode) owned_args = args;
  g_autoptr(GTask) task = g_task_new (self, cancellable, callback, user_data);
  GError *error = NULL;
  QmpPending *pending;
  QmpOutMsg *msg;
  g_autofree char *trace = NULL;

  g_task_set_source_tag (task, qmp_client_execute_async);
  if (!qmp_client_check_can_execute (self, command, &error))
    {
      g_task_return_error (task, error);
      return;
    }
  pending = qmp_pending_new (self, task, command,
                             timeout_ms != 0 ? timeout_ms : self->default_timeout_ms,
                             cancellable);
  g_hash_table_insert (self->pending, pending->id, pending);
  msg = g_new0 (QmpOutMsg, 1);
  msg->data = qmp_encode_command (command, owned_args, pending->id);
  msg->fd = fd >= 0 ? dup (fd) : -1;
  if (blkmig_debug_enabled (BLKMIG_DEBUG_QMP))
    {
      trace = g_strndup (g_bytes_get_data (msg->data, NULL), g_bytes_get_size (msg->data) - 1);
      blkmig_debug (BLKMIG_DEBUG_QMP, "%s >>> %s%s", self->label, trace,
                    fd >= 0 ? " (+fd)" : "");
    }
  g_queue_push_tail (&self->outq, msg);
  qmp_client_schedule_write (self);
}

JsonNode *
qmp_client_execute_finish (QmpClient *self, GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (g_task_is_valid (result, self), NULL);
  return g_task_propagate_pointer (G_TASK (result), error);
}

/* ---- connecting --------------------------------------------------------- */

static void
qmp_connect_task_fail (QmpClient *self, GError *error)
{
  qmp_client_close_with_error (self, error);
}

static void
qmp_commands_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  QmpClient *self = QMP_CLIENT (source);
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonNode) ret = qmp_client_execute_finish (self, result, &error);
  JsonArray *list;

  if (ret == NULL || !JSON_NODE_HOLDS_ARRAY (ret))
    {
      if (error == NULL)
        error = g_error_new (QMP_ERROR, QMP_ERROR_PROTOCOL,
                             "%s: query-commands returned no list", self->label);
      qmp_connect_task_fail (self, g_steal_pointer (&error));
      return;
    }
  list = json_node_get_array (ret);
  for (guint i = 0; i < json_array_get_length (list); i++)
    {
      const char *name = qmp_member_string (qmp_array_object (list, i), "name");
      if (name != NULL)
        g_hash_table_add (self->commands, g_strdup (name));
    }
  self->state = QMP_STATE_READY;
  qmp_client_connect_done (self, NULL);
}

static void
qmp_negotiated_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  QmpClient *self = QMP_CLIENT (source);
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonNode) ret = qmp_client_execute_finish (self, result, &error);

  if (ret == NULL)
    {
      qmp_connect_task_fail (self, g_steal_pointer (&error));
      return;
    }
  qmp_client_execute_async (self, "query-commands", NULL, -1, 0, NULL, qmp_commands_cb, NULL);
}

static gboolean
qmp_connect_timeout_cb (gpointer user_data)
{
  QmpClient *self = user_data;

  g_clear_pointer (&self->connect_guard, g_source_unref);
  qmp_client_close_with_error (self, g_error_new (QMP_ERROR, QMP_ERROR_TIMEOUT,
                                                  "%s: no QMP greeting within %u ms",
                                                  self->label, self->connect_timeout_ms));
  return G_SOURCE_REMOVE;
}

static gboolean
qmp_connect_cancelled_cb (GCancellable *cancellable, gpointer user_data)
{
  QmpClient *self = user_data;

  g_clear_pointer (&self->connect_cancel, g_source_unref);
  qmp_client_close_with_error (self, g_error_new (G_IO_ERROR, G_IO_ERROR_CANCELLED,
                                                  "%s: connecting cancelled", self->label));
  return G_SOURCE_REMOVE;
}

/* The connect task keeps the client alive (a cycle broken when the task ends). */
static QmpClient *
qmp_client_new (const char *label, GCancellable *cancellable, GAsyncReadyCallback callback,
                gpointer user_data, gpointer source_tag)
{
  QmpClient *self = g_object_new (QMP_TYPE_CLIENT, NULL);

  self->label = g_strdup (label);
  self->connect_task = g_task_new (NULL, cancellable, callback, user_data);
  g_task_set_source_tag (self->connect_task, source_tag);
  g_object_set_data_full (G_OBJECT (self->connect_task), "client", g_object_ref (self),
                          g_object_unref);
  self->connect_timeout_ms = qmp_connect_timeout_ms;
  self->connect_guard = qmp_attach (g_timeout_source_new (self->connect_timeout_ms),
                                    qmp_connect_timeout_cb, self);
  if (cancellable != NULL)
    self->connect_cancel = qmp_attach (g_cancellable_source_new (cancellable),
                                       G_SOURCE_FUNC (qmp_connect_cancelled_cb), self);
  return self;
}

static void
qmp_socket_connected_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr(QmpClient) self = user_data;
  g_autoptr(GError) error = NULL;
  GSocketConnection *conn = g_socket_client_connect_finish (G_SOCKET_CLIENT (source),
                                                            result, &error);

  if (conn == NULL)
    {
      qmp_connect_task_fail (self, g_error_new (QMP_ERROR, QMP_ERROR_CLOSED,
                                                "%s: cannot connect to QMP: %s",
                                                self->label, error->message));
      return;
    }
  self->connection = conn;
  if (self->state == QMP_STATE_CONNECTING)
    qmp_client_start_io (self, g_socket_connection_get_socket (conn));
}

void
qmp_client_connect_async (const char *socket_path, const char *label,
                          GCancellable *cancellable, GAsyncReadyCallback callback,
                          gpointer user_data)
{
  QmpClient *self = qmp_client_new (label, cancellable, callback, user_data,
                                    qmp_client_connect_async);
  g_autoptr(GSocketClient) client = g_socket_client_new ();
  g_autoptr(GSocketAddress) addr = g_unix_socket_address_new (socket_path);

  /* The connect task holds the only strong reference until it returns. */
  g_socket_client_connect_async (client, G_SOCKET_CONNECTABLE (addr), cancellable,
                                 qmp_socket_connected_cb, self);
}

QmpClient *
qmp_client_connect_finish (GAsyncResult *result, GError **error)
{
  return g_task_propagate_pointer (G_TASK (result), error);
}

void
qmp_client_adopt_fd_async (int fd, const char *label, GCancellable *cancellable,
                           GAsyncReadyCallback callback, gpointer user_data)
{
  g_autoptr(QmpClient) self = qmp_client_new (label, cancellable, callback, user_data,
                                              qmp_client_adopt_fd_async);
  g_autoptr(GError) error = NULL;
  g_autoptr(GSocket) socket = g_socket_new_from_fd (fd, &error);

  if (socket == NULL)
    {
      /* No close (fd): the failed GSocket has already closed it. */
      qmp_connect_task_fail (self, g_error_new (QMP_ERROR, QMP_ERROR_CLOSED,
                                                "%s: cannot use QMP fd %d: %s",
                                                label, fd, error->message));
      return;
    }
  qmp_client_start_io (self, socket);
}

QmpClient *
qmp_client_adopt_fd_finish (GAsyncResult *result, GError **error)
{
  return g_task_propagate_pointer (G_TASK (result), error);
}

/* ---- accessors ---------------------------------------------------------- */

QmpState
qmp_client_get_state (QmpClient *self)
{
  return self->state;
}

const char *
qmp_client_get_label (QmpClient *self)
{
  return self->label;
}

const char *
qmp_client_get_version (QmpClient *self)
{
  return self->version != NULL ? self->version : "unknown";
}

gboolean
qmp_client_has_command (QmpClient *self, const char *command)
{
  return g_hash_table_contains (self->commands, command);
}

/* Read once per connection, on first use.  A QEMU that cannot tell (no
 * query-qmp-schema, an error) is taken to have no optional arguments. */
static GHashTable *
qmp_client_arguments (QmpClient *self)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonNode) schema = NULL;

  if (self->arguments != NULL)
    return self->arguments;
  if (qmp_client_has_command (self, "query-qmp-schema"))
    schema = qmp_client_execute_sync (self, "query-qmp-schema", NULL, NULL, &error);
  if (schema == NULL)
    blkmig_debug (BLKMIG_DEBUG_QMP, "%s: no schema: %s", self->label,
                  error != NULL ? error->message : "no query-qmp-schema");
  self->arguments = qmp_schema_arguments (qmp_node_array (schema));
  return self->arguments;
}

gboolean
qmp_client_has_argument (QmpClient *self, const char *command, const char *argument)
{
  g_autofree char *key = g_strdup_printf ("%s %s", command, argument);

  if (!qmp_client_has_command (self, command))
    return FALSE;
  return g_hash_table_contains (qmp_client_arguments (self), key);
}

guint
qmp_client_get_default_timeout (QmpClient *self)
{
  return self->default_timeout_ms;
}

void
qmp_client_set_default_timeout (QmpClient *self, guint timeout_ms)
{
  self->default_timeout_ms = timeout_ms;
}

void
qmp_client_set_connect_timeout_default (guint timeout_ms)
{
  qmp_connect_timeout_ms = timeout_ms != 0 ? timeout_ms : QMP_DEFAULT_TIMEOUT_MS;
}

/* ---- synchronous wrappers ----------------------------------------------- */

QmpClient *
qmp_client_connect_sync (const char *socket_path, const char *label,
                         GCancellable *cancellable, GError **error)
{
  g_autoptr(GAsyncResult) result = NULL;

  qmp_client_connect_async (socket_path, label, cancellable, blkmig_store_result_cb, &result);
  return qmp_client_connect_finish (blkmig_await (&result), error);
}

JsonNode *
qmp_client_execute_full_sync (QmpClient *self, const char *command, JsonNode *args, int fd,
                              guint timeout_ms, GCancellable *cancellable, GError **error)
{
  g_autoptr(GAsyncResult) result = NULL;

  qmp_client_execute_async (self, command, args, fd, timeout_ms, cancellable,
                            blkmig_store_result_cb, &result);
  return qmp_client_execute_finish (self, blkmig_await (&result), error);
}

JsonNode *
qmp_client_execute_sync (QmpClient *self, const char *command, JsonNode *args,
                         GCancellable *cancellable, GError **error)
{
  return qmp_client_execute_full_sync (self, command, args, -1, 0, cancellable, error);
}

/* ---- argument helpers --------------------------------------------------- */

JsonNode *
qmp_args_new (const char *first_key, ...)
{
  g_autoptr(JsonObject) obj = json_object_new ();
  JsonNode *root = json_node_new (JSON_NODE_OBJECT);
  va_list ap;

  va_start (ap, first_key);
  for (const char *key = first_key; key != NULL; key = va_arg (ap, const char *))
    {
      JsonNode *value = va_arg (ap, JsonNode *);
      if (value != NULL)
        json_object_set_member (obj, key, value);
    }
  va_end (ap);
  json_node_set_object (root, obj);
  return root;
}

JsonNode *
qmp_str (const char *value)
{
  return json_node_init_string (json_node_alloc (), value);
}

JsonNode *
qmp_int (gint64 value)
{
  return json_node_init_int (json_node_alloc (), value);
}

JsonNode *
qmp_double (double value)
{
  return json_node_init_double (json_node_alloc (), value);
}

JsonNode *
qmp_bool (gboolean value)
{
  return json_node_init_boolean (json_node_alloc (), value);
}

JsonNode *
qmp_json (const char *text)
{
  return json_from_string (text, NULL);
}

