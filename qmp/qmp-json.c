/* Type-checked reads of QMP replies and events: a missing or mistyped member is absent. */
#include "qmp/qmp-json.h"

JsonObject *
qmp_node_object (JsonNode *node)
{
  return node != NULL && JSON_NODE_HOLDS_OBJECT (node) ? json_node_get_object (node) : NULL;
}

JsonArray *
qmp_node_array (JsonNode *node)
{
  return node != NULL && JSON_NODE_HOLDS_ARRAY (node) ? json_node_get_array (node) : NULL;
}

const char *
qmp_node_string (JsonNode *node)
{
  return node != NULL && JSON_NODE_HOLDS_VALUE (node)
         && json_node_get_value_type (node) == G_TYPE_STRING ? json_node_get_string (node) : NULL;
}

static JsonNode *
qmp_member (JsonObject *obj, const char *key)
{
  return obj != NULL ? json_object_get_member (obj, key) : NULL;
}

/* A scalar of @type (strings, booleans; integers are checked separately). */
static gboolean
qmp_holds (JsonNode *node, GType type)
{
  return node != NULL && JSON_NODE_HOLDS_VALUE (node) && json_node_get_value_type (node) == type;
}

const char *
qmp_member_string (JsonObject *obj, const char *key)
{
  JsonNode *node = qmp_member (obj, key);

  return qmp_holds (node, G_TYPE_STRING) ? json_node_get_string (node) : NULL;
}

const char *
qmp_member_string_or (JsonObject *obj, const char *key, const char *fallback)
{
  const char *value = qmp_member_string (obj, key);

  return value != NULL ? value : fallback;
}

gint64
qmp_member_int (JsonObject *obj, const char *key, gint64 fallback)
{
  JsonNode *node = qmp_member (obj, key);

  return qmp_holds (node, G_TYPE_INT64) ? json_node_get_int (node) : fallback;
}

gboolean
qmp_member_bool (JsonObject *obj, const char *key, gboolean fallback)
{
  JsonNode *node = qmp_member (obj, key);

  return qmp_holds (node, G_TYPE_BOOLEAN) ? json_node_get_boolean (node) : fallback;
}

JsonObject *
qmp_member_object (JsonObject *obj, const char *key)
{
  return qmp_node_object (qmp_member (obj, key));
}

JsonArray *
qmp_member_array (JsonObject *obj, const char *key)
{
  return qmp_node_array (qmp_member (obj, key));
}

guint
qmp_array_length (JsonArray *array)
{
  return array != NULL ? json_array_get_length (array) : 0;
}

JsonObject *
qmp_array_object (JsonArray *array, guint index)
{
  return index < qmp_array_length (array)
         ? qmp_node_object (json_array_get_element (array, index)) : NULL;
}

const char *
qmp_array_string (JsonArray *array, guint index)
{
  JsonNode *node = index < qmp_array_length (array) ? json_array_get_element (array, index) : NULL;

  return qmp_holds (node, G_TYPE_STRING) ? json_node_get_string (node) : NULL;
}
