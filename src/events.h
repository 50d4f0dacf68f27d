/* Machine-readable events: one JSON object per line, for hooks and orchestrators. */
#pragma once

#include <json-glib/json-glib.h>

#define EVENTS_VERSION 1

/* Starts writing events to @path ("-" = stdout).  Without a call, events_emit
 * does nothing. */
gboolean events_open (const char *path, GError **error);
gboolean events_enabled (void);
/* Writes {"v":1,"ms":SINCE-START,"event":TYPE, KEY:VALUE...}; the values are nodes
 * (qmp_str, qmp_int, ...) and are consumed; NULL values are skipped. */
void events_emit (const char *type, const char *first_key, ...) G_GNUC_NULL_TERMINATED;
/* The same with the keys of @members, in their order (@members is not consumed). */
void events_emit_object (const char *type, JsonObject *members);
void events_close (void);
/* Also hands every event to @observer (NULL: none), with or without an output: the
 * control socket's status learns the phase from them. */
typedef void (*EventsObserver) (const char *type, JsonObject *event);
void events_set_observer (EventsObserver observer);
