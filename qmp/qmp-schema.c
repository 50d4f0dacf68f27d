/* Reading query-qmp-schema: which arguments each command takes. */
#include "qmp/qmp-schema.h"

#include "qmp/qmp-json.h"

/* Adds "COMMAND MEMBER" for each member of object type @type_name and of its
 * variants' types (one level: QEMU's unions are flat). */
static void
qmp_schema_add_members (GHashTable *types, GHashTable *out, const char *command,
                        const char *type_name, gboolean variants)
{
  JsonObject *type = type_name != NULL ? g_hash_table_lookup (types, type_name) : NULL;
  JsonArray *members = qmp_member_array (type, "members");
  JsonArray *cases = qmp_member_array (type, "variants");

  for (guint i = 0; i < qmp_array_length (members); i++)
    {
      const char *name = qmp_member_string (qmp_array_object (members, i), "name");
      if (name != NULL)
        g_hash_table_add (out, g_strdup_printf ("%s %s", command, name));
    }
  for (guint i = 0; variants && i < qmp_array_length (cases); i++)
    qmp_schema_add_members (types, out, command,
                            qmp_member_string (qmp_array_object (cases, i), "type"), FALSE);
}

GHashTable *
qmp_schema_arguments (JsonArray *schema)
{
  g_autoptr(GHashTable) types = g_hash_table_new (g_str_hash, g_str_equal);
  GHashTable *out = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);

  for (guint i = 0; i < qmp_array_length (schema); i++)
    {
      JsonObject *entry = qmp_array_object (schema, i);
      const char *name = qmp_member_string (entry, "name");
      if (name != NULL && g_strcmp0 (qmp_member_string (entry, "meta-type"), "object") == 0)
        g_hash_table_insert (types, (gpointer) name, entry);
    }
  for (guint i = 0; i < qmp_array_length (schema); i++)
    {
      JsonObject *entry = qmp_array_object (schema, i);
      const char *name = qmp_member_string (entry, "name");
      if (name != NULL && g_strcmp0 (qmp_member_string (entry, "meta-type"), "command") == 0)
        qmp_schema_add_members (types, out, name, qmp_member_string (entry, "arg-type"), TRUE);
    }
  return out;
}
