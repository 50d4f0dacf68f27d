/* Type-checked reads of QMP replies and events: a missing or mistyped member is absent. */
#pragma once

#include <json-glib/json-glib.h>

/* QEMU is a peer like any other: every member read from what it sends goes
 * through these.  Each takes NULL for the container and returns NULL (or
 * @fallback) when the member is missing or of another JSON type, so a reply
 * like {"node-name": false} can never crash blkmig or raise a GLib critical. */
JsonObject *qmp_node_object (JsonNode *node);
JsonArray *qmp_node_array (JsonNode *node);
const char *qmp_node_string (JsonNode *node);
const char *qmp_member_string (JsonObject *obj, const char *key);
const char *qmp_member_string_or (JsonObject *obj, const char *key, const char *fallback);
gint64 qmp_member_int (JsonObject *obj, const char *key, gint64 fallback);
gboolean qmp_member_bool (JsonObject *obj, const char *key, gboolean fallback);
JsonObject *qmp_member_object (JsonObject *obj, const char *key);
JsonArray *qmp_member_array (JsonObject *obj, const char *key);
/* Element @index of @array (NULL array: none), when it is an object / a string. */
JsonObject *qmp_array_object (JsonArray *array, guint index);
const char *qmp_array_string (JsonArray *array, guint index);
/* json_array_get_length that takes NULL (0). */
guint qmp_array_length (JsonArray *array);
