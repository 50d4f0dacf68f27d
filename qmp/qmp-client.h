/* Asynchronous QMP client on the GLib main loop: commands, events, fd passing. */
#pragma once

#include <gio/gio.h>
#include <json-glib/json-glib.h>

#define QMP_ERROR (qmp_error_quark ())
GQuark qmp_error_quark (void);

typedef enum {
  QMP_ERROR_GENERIC,            /* QEMU's GenericError (or an unknown class) */
  QMP_ERROR_COMMAND_NOT_FOUND,
  QMP_ERROR_DEVICE_NOT_ACTIVE,
  QMP_ERROR_DEVICE_NOT_FOUND,
  QMP_ERROR_KVM_MISSING_CAP,
  QMP_ERROR_CLOSED,             /* the connection ended before the reply */
  QMP_ERROR_TIMEOUT,            /* no reply within the command's timeout */
  QMP_ERROR_PROTOCOL,           /* the peer sent something that is not QMP */
  QMP_ERROR_STATE,              /* call not allowed in the connection's state */
} QmpErrorCode;

/* Connection states:
 *   CONNECTING → GREETING → NEGOTIATING → READY → CLOSED
 * Any state may go to CLOSED (EOF, socket error, qmp_client_close). */
typedef enum {
  QMP_STATE_CONNECTING,
  QMP_STATE_GREETING,
  QMP_STATE_NEGOTIATING,
  QMP_STATE_READY,
  QMP_STATE_CLOSED,
} QmpState;

#define QMP_TYPE_CLIENT (qmp_client_get_type ())
G_DECLARE_FINAL_TYPE (QmpClient, qmp_client, QMP, CLIENT, GObject)

/* Signals:
 *   "event"  (const char *name, JsonObject *data)  — every QMP event, in order;
 *            data is never NULL (an empty object when the event has none)
 *   "closed" (const GError *why)                   — once, when the connection ends */

/* Connects to a UNIX socket and negotiates; @label names the peer in errors/traces. */
void qmp_client_connect_async (const char *socket_path, const char *label,
                               GCancellable *cancellable,
                               GAsyncReadyCallback callback, gpointer user_data);
QmpClient *qmp_client_connect_finish (GAsyncResult *result, GError **error);
/* Adopts an already connected socket fd (the client owns it). */
void qmp_client_adopt_fd_async (int fd, const char *label, GCancellable *cancellable,
                                GAsyncReadyCallback callback, gpointer user_data);
QmpClient *qmp_client_adopt_fd_finish (GAsyncResult *result, GError **error);

/* Runs one command.  @args is an object or NULL (ownership taken).  @fd >= 0 is
 * sent with the command as SCM_RIGHTS (for getfd); the client dups it.  Returns
 * the "return" member.  timeout_ms 0 means the client's default. */
void qmp_client_execute_async (QmpClient *self, const char *command, JsonNode *args,
                               int fd, guint timeout_ms, GCancellable *cancellable,
                               GAsyncReadyCallback callback, gpointer user_data);
JsonNode *qmp_client_execute_finish (QmpClient *self, GAsyncResult *result,
                                     GError **error);

QmpState qmp_client_get_state (QmpClient *self);
const char *qmp_client_get_label (QmpClient *self);
/* "7.2.22" from the greeting. */
const char *qmp_client_get_version (QmpClient *self);
/* Whether the peer lists @command in query-commands (probed at connect). */
gboolean qmp_client_has_command (QmpClient *self, const char *command);
/* Whether @command takes @argument, from query-qmp-schema (read once per
 * connection, on the first call; FALSE where the peer has no schema). */
gboolean qmp_client_has_argument (QmpClient *self, const char *command, const char *argument);
guint qmp_client_get_default_timeout (QmpClient *self);
void qmp_client_set_default_timeout (QmpClient *self, guint timeout_ms);
/* Time allowed for greeting and negotiation in later connects; 0 restores 60 s. */
void qmp_client_set_connect_timeout_default (guint timeout_ms);
void qmp_client_close (QmpClient *self);

/* Synchronous wrappers: iterate the thread-default main context until done.
 * For main() and tests only. */
QmpClient *qmp_client_connect_sync (const char *socket_path, const char *label,
                                    GCancellable *cancellable, GError **error);
JsonNode *qmp_client_execute_sync (QmpClient *self, const char *command,
                                   JsonNode *args, GCancellable *cancellable,
                                   GError **error);
/* Same, with a getfd-style fd and an explicit timeout. */
JsonNode *qmp_client_execute_full_sync (QmpClient *self, const char *command,
                                        JsonNode *args, int fd, guint timeout_ms,
                                        GCancellable *cancellable, GError **error);

/* Argument building: qmp_args_new ("device", qmp_str ("vda"), "force",
 * qmp_bool (TRUE), NULL) takes ownership of each value node. */
JsonNode *qmp_args_new (const char *first_key, ...) G_GNUC_NULL_TERMINATED;
JsonNode *qmp_str (const char *value);
JsonNode *qmp_int (gint64 value);
JsonNode *qmp_bool (gboolean value);
JsonNode *qmp_double (double value);
/* Parses a JSON text into a node (for fixed argument shapes); NULL on bad JSON. */
JsonNode *qmp_json (const char *text);
