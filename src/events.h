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
void events_close (void);
