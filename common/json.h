/* Small JsonBuilder helpers: a member with a string (or null), an integer, a boolean, a string array. */
#pragma once

#include <json-glib/json-glib.h>

/* "key": "value", or "key": null when @value is NULL. */
void blkmig_json_add_string (JsonBuilder *b, const char *key, const char *value);
void blkmig_json_add_int (JsonBuilder *b, const char *key, gint64 value);
void blkmig_json_add_bool (JsonBuilder *b, const char *key, gboolean value);
/* "key": [ ... ], empty when @strv is NULL. */
void blkmig_json_add_strv (JsonBuilder *b, const char *key, const char *const *strv);

/* Bounds checked before a peer's JSON text reaches json-glib, which recurses
 * without limit and builds a tree many times the text's size. */
typedef struct {
  gsize max_bytes;     /* the text's length */
  guint max_depth;     /* nested arrays and objects */
  gsize max_values;    /* roughly the number of nodes the tree would have */
} BlkmigJsonLimits;

/* Checks the limits, then parses.  Errors are BLKMIG_ERROR_FAILED with the
 * problem alone ("nested deeper than 32 levels", json-glib's message escaped):
 * callers prefix what they were reading.  Returns the root (never NULL on success;
 * an empty text is an error). */
JsonNode *blkmig_json_parse (const char *data, gssize len, const BlkmigJsonLimits *limits,
                             GError **error);
