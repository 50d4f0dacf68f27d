/* Waiting for one QMP event whose data member matches one of several values. */
#pragma once

#include "qmp/qmp-client.h"

typedef struct _QmpEventWait QmpEventWait;

/* Starts recording at once, so create it before the command that causes the event.
 * @key/@values: the event's data[key] must be a string in @values (NULL = any). */
QmpEventWait *qmp_event_wait_new (QmpClient *qmp, const char *event, const char *key,
                                  const char *const *values);
void qmp_event_wait_free (QmpEventWait *wait);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (QmpEventWait, qmp_event_wait_free)

/* Returns the matching event's data (a new reference) or NULL with an error on
 * timeout (QMP_ERROR_TIMEOUT), connection loss or cancellation. */
JsonObject *qmp_event_wait_sync (QmpEventWait *wait, guint timeout_ms,
                                 GCancellable *cancellable, GError **error);
