/* JSON helpers: building members, and parsing a peer's text within bounds. */
#include "common/json.h"

#include <string.h>

#include "common/error.h"
#include "common/escape.h"

void
blkmig_json_add_string (JsonBuilder *b, const char *key, const char *value)
{
  json_builder_set_member_name (b, key);
  if (value != NULL)
    json_builder_add_string_value (b, value);
  else
    json_builder_add_null_value (b);
}

void
blkmig_json_add_int (JsonBuilder *b, const char *key, gint64 value)
{
  json_builder_set_member_name (b, key);
  json_builder_add_int_value (b, value);
}

void
blkmig_json_add_bool (JsonBuilder *b, const char *key, gboolean value)
{
  json_builder_set_member_name (b, key);
  json_builder_add_boolean_value (b, value);
}

void
blkmig_json_add_strv (JsonBuilder *b, const char *key, const char *const *strv)
{
  json_builder_set_member_name (b, key);
  json_builder_begin_array (b);
  for (gsize i = 0; strv != NULL && strv[i] != NULL; i++)
    json_builder_add_string_value (b, strv[i]);
  json_builder_end_array (b);
}

/* The scanner's view of one byte outside strings: nesting, values, or nothing. */
static gboolean
json_scan_byte (char c, guint *depth, gsize *values, const BlkmigJsonLimits *limits,
                GError **error)
{
  /* Outside strings JSON has only these; json-glib also takes 'strings' and
   * comments, which would hide nesting from this count: refuse them here. */
  if (c == '\0' || strchr (" \t\r\n{}[],:-+.0123456789eEtrufalsn", c) == NULL)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED,
                        "not valid JSON: unexpected character 0x%02x", (guchar) c), FALSE;
  if (c == '[' || c == '{')
    {
      if (++*depth > limits->max_depth)
        return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED,
                            "nested deeper than %u levels", limits->max_depth), FALSE;
      ++*values;
    }
  else if (c == ']' || c == '}')
    *depth -= *depth > 0;
  else if (c == ',' || c == ':')
    ++*values;
  if (*values <= limits->max_values)
    return TRUE;
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED, "more than %" G_GSIZE_FORMAT " values",
               limits->max_values);
  return FALSE;
}

/* Checks @data against @limits without parsing. */
static gboolean
blkmig_json_check_limits (const char *data, gssize len, const BlkmigJsonLimits *limits,
                          GError **error)
{
  gsize n = len < 0 ? strlen (data) : (gsize) len;
  gboolean in_string = FALSE, escaped = FALSE;
  guint depth = 0;
  gsize values = 1;

  if (n > limits->max_bytes)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED,
                        "larger than %" G_GSIZE_FORMAT " bytes", limits->max_bytes), FALSE;
  for (gsize i = 0; i < n; i++)
    {
      char c = data[i];

      if (escaped)
        escaped = FALSE;
      else if (in_string)
        escaped = c == '\\', in_string = c != '"';
      else if (c == '"')
        in_string = TRUE;
      else if (!json_scan_byte (c, &depth, &values, limits, error))
        return FALSE;
    }
  return TRUE;
}

JsonNode *
blkmig_json_parse (const char *data, gssize len, const BlkmigJsonLimits *limits,
                   GError **error)
{
  g_autoptr(JsonParser) parser = json_parser_new ();
  g_autoptr(GError) local = NULL;
  g_autofree char *escaped = NULL;
  JsonNode *root;

  if (!blkmig_json_check_limits (data, len, limits, error))
    return NULL;
  if (!json_parser_load_from_data (parser, data, len, &local))
    {
      escaped = blkmig_escape_controls (local->message);
      g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED, "not valid JSON: %s", escaped);
      return NULL;
    }
  root = json_parser_get_root (parser);
  if (root == NULL)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED, "empty"), NULL;
  return json_node_copy (root);
}
