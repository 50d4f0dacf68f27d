/* Every QMP command blkmig sends, checked against the schema of the QEMU it talks to. */
#include <glib/gstdio.h>

#include "tests/integration/harness.h"

typedef struct {
  GHashTable *types;            /* schema name → JsonObject */
  GHashTable *commands;         /* command name → arg-type name */
} Schema;

static void
schema_load (Schema *schema, Vm *vm)
{
  g_autoptr(JsonNode) ret = vm_qmp (vm, "query-qmp-schema", NULL);
  JsonArray *list = json_node_get_array (ret);

  schema->types = g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
                                         (GDestroyNotify) json_object_unref);
  schema->commands = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  for (guint i = 0; i < json_array_get_length (list); i++)
    {
      JsonObject *entry = json_array_get_object_element (list, i);
      const char *name = json_object_get_string_member (entry, "name");
      const char *meta = json_object_get_string_member (entry, "meta-type");

      if (g_str_equal (meta, "command"))
        g_hash_table_insert (schema->commands, g_strdup (name),
                             g_strdup (json_object_get_string_member (entry, "arg-type")));
      else
        g_hash_table_insert (schema->types, g_strdup (name), json_object_ref (entry));
    }
}

static gboolean check_value (Schema *schema, const char *type, JsonNode *value, GString *why);

static const char *
member_type (JsonObject *type, const char *key)
{
  JsonArray *members = json_object_get_array_member (type, "members");

  for (guint i = 0; i < json_array_get_length (members); i++)
    {
      JsonObject *m = json_array_get_object_element (members, i);
      if (g_str_equal (json_object_get_string_member (m, "name"), key))
        return json_object_get_string_member (m, "type");
    }
  return NULL;
}

/* The variant's type for the tag value @value, or NULL. */
static const char *
variant_type (JsonObject *type, JsonObject *obj)
{
  const char *tag = json_object_get_string_member_with_default (type, "tag", NULL);
  const char *value = tag != NULL ? json_object_get_string_member_with_default (obj, tag, NULL) : NULL;
  JsonArray *variants = json_object_has_member (type, "variants")
                         ? json_object_get_array_member (type, "variants") : NULL;

  for (guint i = 0; value != NULL && variants != NULL && i < json_array_get_length (variants); i++)
    {
      JsonObject *v = json_array_get_object_element (variants, i);
      if (g_str_equal (json_object_get_string_member (v, "case"), value))
        return json_object_get_string_member (v, "type");
    }
  return NULL;
}

static gboolean
check_object (Schema *schema, JsonObject *type, JsonNode *value, GString *why)
{
  JsonObject *obj;
  const char *vtype;
  JsonObject *variant = NULL;
  g_autoptr(GList) keys = NULL;

  if (!JSON_NODE_HOLDS_OBJECT (value))
    return g_string_append (why, "expected an object; "), FALSE;
  obj = json_node_get_object (value);
  vtype = variant_type (type, obj);
  if (vtype != NULL)
    variant = g_hash_table_lookup (schema->types, vtype);
  keys = json_object_get_members (obj);
  for (GList *k = keys; k != NULL; k = k->next)
    {
      const char *mtype = member_type (type, k->data);
      if (mtype == NULL && variant != NULL)
        mtype = member_type (variant, k->data);
      if (mtype == NULL)
        return g_string_append_printf (why, "unknown member '%s'; ", (char *) k->data), FALSE;
      if (!check_value (schema, mtype, json_object_get_member (obj, k->data), why))
        return g_string_append_printf (why, "in '%s'; ", (char *) k->data), FALSE;
    }
  return TRUE;
}

static gboolean
check_alternate (Schema *schema, JsonObject *type, JsonNode *value, GString *why)
{
  JsonArray *members = json_object_get_array_member (type, "members");

  for (guint i = 0; i < json_array_get_length (members); i++)
    {
      g_autoptr(GString) ignored = g_string_new (NULL);
      if (check_value (schema, json_object_get_string_member (json_array_get_object_element (members, i), "type"),
                       value, ignored))
        return TRUE;
    }
  return g_string_append (why, "matches no alternative; "), FALSE;
}

static gboolean
enum_has (JsonObject *type, JsonNode *value)
{
  JsonArray *values = json_object_get_array_member (type, "values");
  const char *str = JSON_NODE_HOLDS_VALUE (value) ? json_node_get_string (value) : NULL;

  for (guint i = 0; str != NULL && i < json_array_get_length (values); i++)
    if (g_str_equal (json_array_get_string_element (values, i), str))
      return TRUE;
  return FALSE;
}

static gboolean
check_value (Schema *schema, const char *type_name, JsonNode *value, GString *why)
{
  JsonObject *type = g_hash_table_lookup (schema->types, type_name);
  const char *meta;

  if (type == NULL)
    return g_string_append_printf (why, "unknown type %s; ", type_name), FALSE;
  meta = json_object_get_string_member (type, "meta-type");
  if (g_str_equal (meta, "object"))
    return check_object (schema, type, value, why);
  if (g_str_equal (meta, "alternate"))
    return check_alternate (schema, type, value, why);
  if (g_str_equal (meta, "array"))
    {
      JsonArray *items = JSON_NODE_HOLDS_ARRAY (value) ? json_node_get_array (value) : NULL;
      for (guint i = 0; items != NULL && i < json_array_get_length (items); i++)
        if (!check_value (schema, json_object_get_string_member (type, "element-type"),
                          json_array_get_element (items, i), why))
          return FALSE;
      return items != NULL || (g_string_append (why, "expected an array; "), FALSE);
    }
  if (g_str_equal (meta, "enum"))
    return enum_has (type, value) || (g_string_append (why, "not a value of the enum; "), FALSE);
  return TRUE;  /* builtins: the value's JSON type is QEMU's business */
}

/* Checks every ">>> {command}" line blkmig's --debug trace holds; returns how many,
 * or sets @problem to the first command this QEMU would not accept. */
static guint
check_trace (Schema *schema, const char *trace, char **problem)
{
  g_auto(GStrv) lines = g_strsplit (trace, "\n", -1);
  guint checked = 0;

  for (gsize i = 0; lines[i] != NULL; i++)
    {
      const char *json = strstr (lines[i], " >>> ");
      g_autofree char *text = NULL;
      g_autoptr(JsonNode) msg = NULL;
      g_autoptr(GString) why = g_string_new (NULL);
      const char *command, *arg_type;
      JsonObject *obj;

      if (json == NULL)
        continue;
      text = g_strdup (json + 5);
      if (g_str_has_suffix (text, " (+fd)"))
        text[strlen (text) - 6] = '\0';
      msg = json_from_string (text, NULL);
      g_assert_nonnull (msg);
      obj = json_node_get_object (msg);
      command = json_object_get_string_member (obj, "execute");
      arg_type = g_hash_table_lookup (schema->commands, command);
      if (arg_type == NULL)
        return *problem = g_strdup_printf ("%s: no such command", command), checked;
      if (json_object_has_member (obj, "arguments")
          && !check_value (schema, arg_type, json_object_get_member (obj, "arguments"), why))
        return *problem = g_strdup_printf ("%s: %s", command, why->str), checked;
      checked++;
    }
  return checked;
}

static char *
make_image (Rig *rig, const char *name, const char *format, const char *size)
{
  char *path = rig_path (rig, name);

  img_create (path, format, size);
  img_write (path, format, 0x3c, "0", "4M");
  return path;
}

static void
test_schema (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *a = make_image (rig, "a.qcow2", "qcow2", "64M");
  g_autofree char *b = make_image (rig, "b.qcow2", "qcow2", "64M");
  g_autofree char *dir = rig_path (rig, "created");
  g_autofree char *moved = rig_path (rig, "moved.raw");
  VmDisk src_disks[] = { { "vda", a, "qcow2" }, { NULL } };
  VmDisk dst_disks[] = { { "vda", b, "qcow2" }, { NULL } };
  Vm *src = vm_start (rig, "src", src_disks, NULL);
  Vm *dst = vm_start (rig, "dst", NULL, "paused");
  Vm *inc = vm_start (rig, "inc", dst_disks, "incoming");
  Schema schema = { 0 };
  g_autofree char *e1 = NULL, *e2 = NULL, *e3 = NULL;
  guint checked = 0;
  g_autofree char *problem = NULL;

  schema_load (&schema, src);
  g_assert_cmpint (g_mkdir (dir, 0700), ==, 0);
  g_assert_cmpint (blkmig_run (NULL, &e1, "migrate", "--debug", "--mode", "copy", "--create-dir", dir,
                               "--source", src->qmp_path, "--dest", dst->qmp_path, NULL), ==, 0);
  g_assert_cmpint (blkmig_run (NULL, &e2, "move", "--debug", "--qmp", src->qmp_path, "--disk", "vda",
                               "--to", moved, "--format", "raw", NULL), ==, 0);
  g_assert_cmpint (blkmig_run (NULL, &e3, "migrate", "--debug", "--speed", "1073741824", "--buf-size", "33554432",
                               "--granularity", "65536", "--copy-mode", "write-blocking",
                               "--source", src->qmp_path, "--dest", inc->qmp_path, NULL), ==, 0);
  checked = check_trace (&schema, e1, &problem) + check_trace (&schema, e2, &problem)
            + check_trace (&schema, e3, &problem);
  g_assert_cmpstr (problem, ==, NULL);
  g_test_message ("%u commands checked against the schema", checked);
  g_assert_cmpuint (checked, >, 40);
  /* The checker itself notices what QEMU would refuse. */
  check_trace (&schema, "[0] x >>> {\"execute\":\"blockdev-mirror\",\"arguments\":"
                        "{\"job-id\":\"j\",\"device\":\"d\",\"target\":\"t\","
                        "\"sync\":\"bitmapx\"}}", &problem);
  g_assert_cmpstr (problem, ==, "blockdev-mirror: not a value of the enum; in 'sync'; ");
  g_clear_pointer (&problem, g_free);
  check_trace (&schema, "[0] x >>> {\"execute\":\"nbd-server-start\",\"arguments\":"
                        "{\"addr\":{\"type\":\"unix\",\"data\":{\"paht\":\"/x\"}}}}", &problem);
  g_assert_cmpstr (problem, ==, "nbd-server-start: unknown member 'paht'; in 'data'; in 'addr'; ");
  g_hash_table_unref (schema.types);
  g_hash_table_unref (schema.commands);
}

/* qmp_client_has_argument reads the real schema of the QEMU under test: the
 * arguments it has, and those that came later (migrate's "channels" in 8.1,
 * nbd-server-start's "handshake-max-seconds" in 10.0). */
static void
test_has_argument (void)
{
  g_autoptr(Rig) rig = rig_new ();
  Vm *vm = vm_start (rig, "vm", NULL, "paused");
  g_autofree char *version = rig_qemu_version (FALSE);
  int major = atoi (version);

  g_test_message ("QEMU %s", version);
  g_assert_true (qmp_client_has_argument (vm->qmp, "migrate", "uri"));
  g_assert_true (qmp_client_has_argument (vm->qmp, "migrate", "channels") == (major >= 9));
  g_assert_true (qmp_client_has_argument (vm->qmp, "nbd-server-start", "handshake-max-seconds")
                 == (major >= 10));
  g_assert_true (qmp_client_has_argument (vm->qmp, "blockdev-add", "reconnect-delay"));
  g_assert_true (qmp_client_has_argument (vm->qmp, "blockdev-mirror", "copy-mode"));
  g_assert_true (qmp_client_has_argument (vm->qmp, "block-export-add", "writable"));
  g_assert_false (qmp_client_has_argument (vm->qmp, "no-such-command", "uri"));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/schema/every-command-blkmig-sends", test_schema);
  g_test_add_func ("/schema/has-argument", test_has_argument);
  return g_test_run ();
}
