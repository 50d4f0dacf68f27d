/* Small JsonBuilder helpers: a member with a string (or null), an integer, a string array. */
#include "common/json.h"

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
blkmig_json_add_strv (JsonBuilder *b, const char *key, const char *const *strv)
{
  json_builder_set_member_name (b, key);
  json_builder_begin_array (b);
  for (gsize i = 0; strv != NULL && strv[i] != NULL; i++)
    json_builder_add_string_value (b, strv[i]);
  json_builder_end_array (b);
}
