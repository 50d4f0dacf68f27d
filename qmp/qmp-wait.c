/* Waiting for one QMP event whose data member matches one of several values. */
#include "qmp/qmp-json.h"
#include "qmp/qmp-wait.h"

struct _QmpEventWait {
  QmpClient *qmp;
  char *event;
  char *key;
  GStrv values;
  JsonObject *match;          /* first matching event's data */
  GError *closed;
  gulong event_handler;
  gulong closed_handler;
};

static void
qmp_event_wait_event_cb (QmpClient *qmp, const char *name, JsonObject *data,
                         gpointer user_data)
{
  QmpEventWait *wait = user_data;
  const char *value;

  if (wait->match != NULL || !g_str_equal (name, wait->event))
    return;
  value = wait->key != NULL
          ? qmp_member_string (data, wait->key) : NULL;
  if (wait->values != NULL && (value == NULL || !g_strv_contains ((const char *const *) wait->values, value)))
    return;
  wait->match = json_object_ref (data);
}

static void
qmp_event_wait_closed_cb (QmpClient *qmp, const GError *why, gpointer user_data)
{
  QmpEventWait *wait = user_data;

  if (wait->closed == NULL)
    wait->closed = g_error_copy (why);
}

QmpEventWait *
qmp_event_wait_new (QmpClient *qmp, const char *event, const char *key,
                    const char *const *values)
{
  QmpEventWait *wait = g_new0 (QmpEventWait, 1);

  wait->qmp = g_object_ref (qmp);
  wait->event = g_strdup (event);
  wait->key = g_strdup (key);
  wait->values = g_strdupv ((char **) values);
  wait->event_handler = g_signal_connect (qmp, "event", G_CALLBACK (qmp_event_wait_event_cb),
                                          wait);
  wait->closed_handler = g_signal_connect (qmp, "closed",
                                           G_CALLBACK (qmp_event_wait_closed_cb), wait);
  if (qmp_client_get_state (qmp) == QMP_STATE_CLOSED)
    wait->closed = g_error_new (QMP_ERROR, QMP_ERROR_CLOSED, "%s: QMP connection is closed",
                                qmp_client_get_label (qmp));
  return wait;
}

void
qmp_event_wait_free (QmpEventWait *wait)
{
  if (wait == NULL)
    return;
  g_signal_handler_disconnect (wait->qmp, wait->event_handler);
  g_signal_handler_disconnect (wait->qmp, wait->closed_handler);
  g_clear_pointer (&wait->match, json_object_unref);
  g_clear_error (&wait->closed);
  g_strfreev (wait->values);
  g_free (wait->key);
  g_free (wait->event);
  g_object_unref (wait->qmp);
  g_free (wait);
}

static gboolean
qmp_event_wait_timeout_cb (gpointer user_data)
{
  *(gboolean *) user_data = TRUE;
  return G_SOURCE_REMOVE;
}

JsonObject *
qmp_event_wait_sync (QmpEventWait *wait, guint timeout_ms, GCancellable *cancellable,
                     GError **error)
{
  GMainContext *ctx = g_main_context_get_thread_default ();
  gboolean expired = FALSE;
  guint timer = g_timeout_add (timeout_ms, qmp_event_wait_timeout_cb, &expired);

  while (wait->match == NULL && wait->closed == NULL && !expired
         && !g_cancellable_is_cancelled (cancellable))
    g_main_context_iteration (ctx, TRUE);
  if (!expired)
    g_source_remove (timer);
  if (wait->match != NULL)
    return json_object_ref (wait->match);
  if (wait->closed != NULL)
    g_propagate_error (error, g_error_copy (wait->closed));
  else if (g_cancellable_set_error_if_cancelled (cancellable, error))
    ;
  else
    g_set_error (error, QMP_ERROR, QMP_ERROR_TIMEOUT, "%s: no %s event within %u s",
                 qmp_client_get_label (wait->qmp), wait->event, timeout_ms / 1000);
  return NULL;
}
