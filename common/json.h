/* Small JsonBuilder helpers: a member with a string (or null), an integer, a string array. */
#pragma once

#include <json-glib/json-glib.h>

/* "key": "value", or "key": null when @value is NULL. */
void blkmig_json_add_string (JsonBuilder *b, const char *key, const char *value);
void blkmig_json_add_int (JsonBuilder *b, const char *key, gint64 value);
/* "key": [ ... ], empty when @strv is NULL. */
void blkmig_json_add_strv (JsonBuilder *b, const char *key, const char *const *strv);
