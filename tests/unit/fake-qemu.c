/* A scripted fake QEMU for tests: the QMP server, the script, and the QEMU 7.2 schema checks. */
#define _GNU_SOURCE
#include "tests/unit/fake-qemu.h"

#include <errno.h>
#include <glib-unix.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define FAKE_GREETING "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, " \
                      "\"major\": 7}, \"package\": \"\"}, \"capabilities\": [\"oob\"]}}"

typedef enum { REPLY_RETURN, REPLY_RAW, REPLY_CLOSE } ReplyKind;

typedef struct {
  char *command;
  JsonNode *args;              /* NULL: no arguments */
  gboolean any_args;
  ReplyKind kind;
  char *members;               /* the reply's members after the id, raw */
  GPtrArray *events;           /* event lines sent after the reply */
  guint group;                 /* 0, or the any-order section it belongs to */
} Entry;

struct _FakeQemu {
  char *dir;
  char *path;
  char *greeting;
  GMainContext *context;
  GMainLoop *loop;             /* threaded only */
  GThread *thread;
  int listen_fd;
  GSource *listen_source;
  int conn_fd;
  GSource *conn_source;
  GString *inbuf;
  GMutex lock;
  GQueue script;               /* of Entry */
  guint groups;                /* any-order sections so far */
  guint group;                 /* the open section, 0 if none */
  GHashTable *always;          /* command → raw members */
  GHashTable *counts;          /* command → count */
  GError *failure;             /* the first one */
  /* interactive mode */
  gboolean manual;             /* unscripted commands wait for fake_qemu_take */
  GQueue pending;              /* of Pending */
  FakeQemuHandler handler;
  gpointer handler_data;
  gboolean keep_fds;
  GArray *fds;                 /* received with SCM_RIGHTS, when kept */
  gboolean client_gone;        /* the client closed its end */
};

typedef struct {
  JsonNode *id;
  char *command;
  JsonNode *args;
} Pending;

static void
pending_free (gpointer data)
{
  Pending *p = data;

  g_clear_pointer (&p->id, json_node_unref);
  g_free (p->command);
  g_clear_pointer (&p->args, json_node_unref);
  g_free (p);
}

/* ---- the schema ------------------------------------------------------------ */

typedef struct {
  JsonNode *root;
  GHashTable *by_name;         /* name → JsonObject (entries of root) */
} Schema;

static const Schema *
schema_get (void)
{
  static Schema schema;
  static gsize done;

  if (g_once_init_enter (&done))
    {
      g_autoptr(GError) error = NULL;
      g_autoptr(JsonParser) parser = json_parser_new ();
      /* meson runs the unit tests once more with QEMU 10.0's schema */
      const char *path = g_getenv ("FAKE_QEMU_SCHEMA") != NULL ? g_getenv ("FAKE_QEMU_SCHEMA")
                                                               : FAKE_QEMU_SCHEMA;
      JsonArray *entries;

      if (!json_parser_load_from_file (parser, path, &error))
        g_error ("fake-qemu: cannot load %s: %s", path, error->message);
      schema.root = json_node_copy (json_parser_get_root (parser));
      schema.by_name = g_hash_table_new (g_str_hash, g_str_equal);
      entries = json_node_get_array (schema.root);
      for (guint i = 0; i < json_array_get_length (entries); i++)
        {
          JsonObject *e = json_array_get_object_element (entries, i);
          g_hash_table_insert (schema.by_name,
                               (gpointer) json_object_get_string_member (e, "name"), e);
        }
      g_once_init_leave (&done, 1);
    }
  return &schema;
}

static JsonObject *
schema_find (const char *name)
{
  return g_hash_table_lookup (schema_get ()->by_name, name);
}

static const char *
meta_type (JsonObject *entry)
{
  return json_object_get_string_member_with_default (entry, "meta-type", "");
}

static gboolean check_value (JsonNode *value, const char *type, const char *path,
                             GError **error);

static gboolean
check_fail (GError **error, const char *path, const char *what)
{
  g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "%s: %s", path, what);
  return FALSE;
}

static gboolean
check_builtin (JsonNode *value, const char *json_type, const char *path, GError **error)
{
  GType t = JSON_NODE_HOLDS_VALUE (value) ? json_node_get_value_type (value) : G_TYPE_NONE;
  gboolean ok;

  if (g_str_equal (json_type, "value"))
    ok = TRUE;
  else if (g_str_equal (json_type, "null"))
    ok = JSON_NODE_HOLDS_NULL (value);
  else if (g_str_equal (json_type, "string"))
    ok = t == G_TYPE_STRING;
  else if (g_str_equal (json_type, "int"))
    ok = t == G_TYPE_INT64;
  else if (g_str_equal (json_type, "number"))
    ok = t == G_TYPE_INT64 || t == G_TYPE_DOUBLE;
  else if (g_str_equal (json_type, "boolean"))
    ok = t == G_TYPE_BOOLEAN;
  else
    ok = FALSE;
  if (ok)
    return TRUE;
  g_autofree char *what = g_strdup_printf ("expected %s", json_type);
  return check_fail (error, path, what);
}

static gboolean
check_enum (JsonNode *value, JsonObject *entry, const char *path, GError **error)
{
  JsonArray *values = json_object_get_array_member (entry, "values");

  if (JSON_NODE_HOLDS_VALUE (value) && json_node_get_value_type (value) == G_TYPE_STRING)
    for (guint i = 0; i < json_array_get_length (values); i++)
      if (g_str_equal (json_array_get_string_element (values, i), json_node_get_string (value)))
        return TRUE;
  return check_fail (error, path, "not a value of its enum");
}

static gboolean
check_array (JsonNode *value, JsonObject *entry, const char *path, GError **error)
{
  const char *element = json_object_get_string_member (entry, "element-type");
  JsonArray *array;

  if (!JSON_NODE_HOLDS_ARRAY (value))
    return check_fail (error, path, "expected an array");
  array = json_node_get_array (value);
  for (guint i = 0; i < json_array_get_length (array); i++)
    {
      g_autofree char *sub = g_strdup_printf ("%s[%u]", path, i);
      if (!check_value (json_array_get_element (array, i), element, sub, error))
        return FALSE;
    }
  return TRUE;
}

static gboolean
check_alternate (JsonNode *value, JsonObject *entry, const char *path, GError **error)
{
  JsonArray *members = json_object_get_array_member (entry, "members");

  for (guint i = 0; i < json_array_get_length (members); i++)
    {
      JsonObject *m = json_array_get_object_element (members, i);
      if (check_value (value, json_object_get_string_member (m, "type"), path, NULL))
        return TRUE;
    }
  return check_fail (error, path, "matches no branch of its alternate");
}

/* Checks the members @entry (and the variant its tag selects) declares; adds
 * their names to @known. */
static gboolean
check_members (JsonObject *obj, JsonObject *entry, const char *path, GHashTable *known,
               GError **error)
{
  JsonArray *members = json_object_get_array_member (entry, "members");
  const char *tag = json_object_get_string_member_with_default (entry, "tag", NULL);
  JsonArray *variants;

  for (guint i = 0; i < json_array_get_length (members); i++)
    {
      JsonObject *m = json_array_get_object_element (members, i);
      const char *name = json_object_get_string_member (m, "name");
      g_autofree char *sub = *path ? g_strdup_printf ("%s.%s", path, name) : g_strdup (name);

      g_hash_table_add (known, (gpointer) name);
      if (!json_object_has_member (obj, name))
        {
          if (!json_object_has_member (m, "default"))
            return check_fail (error, sub, "required, missing");
          continue;
        }
      if (!check_value (json_object_get_member (obj, name),
                        json_object_get_string_member (m, "type"), sub, error))
        return FALSE;
    }
  if (tag == NULL || !json_object_has_member (obj, tag))
    return TRUE;
  variants = json_object_get_array_member (entry, "variants");
  for (guint i = 0; i < json_array_get_length (variants); i++)
    {
      JsonObject *v = json_array_get_object_element (variants, i);
      if (g_strcmp0 (json_object_get_string_member (v, "case"),
                     json_object_get_string_member_with_default (obj, tag, "")) == 0)
        return check_members (obj, schema_find (json_object_get_string_member (v, "type")),
                              path, known, error);
    }
  return TRUE;
}

static gboolean
check_object (JsonNode *value, JsonObject *entry, const char *path, GError **error)
{
  g_autoptr(GHashTable) known = g_hash_table_new (g_str_hash, g_str_equal);
  g_autoptr(GList) names = NULL;
  JsonObject *obj;

  if (!JSON_NODE_HOLDS_OBJECT (value))
    return check_fail (error, *path ? path : "arguments", "expected an object");
  obj = json_node_get_object (value);
  if (!check_members (obj, entry, path, known, error))
    return FALSE;
  names = json_object_get_members (obj);
  for (GList *l = names; l != NULL; l = l->next)
    if (!g_hash_table_contains (known, l->data))
      {
        g_autofree char *sub = *path ? g_strdup_printf ("%s.%s", path, (char *) l->data)
                                     : g_strdup (l->data);
        return check_fail (error, sub, "unknown argument");
      }
  return TRUE;
}

static gboolean
check_value (JsonNode *value, const char *type, const char *path, GError **error)
{
  JsonObject *entry = schema_find (type);
  const char *meta = entry != NULL ? meta_type (entry) : "";

  if (g_str_equal (meta, "builtin"))
    return check_builtin (value, json_object_get_string_member (entry, "json-type"), path,
                          error);
  if (g_str_equal (meta, "enum"))
    return check_enum (value, entry, path, error);
  if (g_str_equal (meta, "array"))
    return check_array (value, entry, path, error);
  if (g_str_equal (meta, "alternate"))
    return check_alternate (value, entry, path, error);
  if (g_str_equal (meta, "object"))
    return check_object (value, entry, path, error);
  return check_fail (error, path, "type missing from the schema");
}

gboolean
fake_qemu_schema_has (const char *command, const char *argument)
{
  JsonObject *entry = schema_find (command);
  JsonObject *type;
  JsonArray *members;

  if (entry == NULL || !g_str_equal (meta_type (entry), "command"))
    return FALSE;
  if (argument == NULL)
    return TRUE;
  type = schema_find (json_object_get_string_member (entry, "arg-type"));
  members = type != NULL ? json_object_get_array_member (type, "members") : NULL;
  for (guint i = 0; members != NULL && i < json_array_get_length (members); i++)
    if (g_str_equal (json_object_get_string_member (json_array_get_object_element (members, i),
                                                    "name"), argument))
      return TRUE;
  return FALSE;
}

gboolean
fake_qemu_validate (const char *command, JsonNode *args, GError **error)
{
  JsonObject *entry = schema_find (command);
  g_autoptr(JsonNode) empty = NULL;

  if (entry == NULL || !g_str_equal (meta_type (entry), "command"))
    return g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                        "%s: not a command of the saved schema", command), FALSE;
  if (args == NULL)
    args = empty = json_node_init_object (json_node_alloc (), json_object_new ());
  if (check_value (args, json_object_get_string_member (entry, "arg-type"), "", error))
    return TRUE;
  g_prefix_error (error, "%s: arguments: ", command);
  return FALSE;
}

static char *
schema_command_list (void)
{
  JsonArray *entries = json_node_get_array (schema_get ()->root);
  GString *list = g_string_new ("[");

  for (guint i = 0; i < json_array_get_length (entries); i++)
    {
      JsonObject *e = json_array_get_object_element (entries, i);
      if (g_str_equal (meta_type (e), "command"))
        g_string_append_printf (list, "%s{\"name\": \"%s\"}", list->len > 1 ? ", " : "",
                                json_object_get_string_member (e, "name"));
    }
  g_string_append_c (list, ']');
  return g_string_free (list, FALSE);
}

/* ---- the script ------------------------------------------------------------ */

static void
entry_free (gpointer data)
{
  Entry *e = data;

  g_free (e->command);
  g_clear_pointer (&e->args, json_node_unref);
  g_free (e->members);
  g_ptr_array_unref (e->events);
  g_free (e);
}

static void
fake_add (FakeQemu *fake, const char *command, const char *args, ReplyKind kind,
          char *members)
{
  Entry *e = g_new0 (Entry, 1);

  e->command = g_strdup (command);
  e->any_args = g_strcmp0 (args, "*") == 0;
  if (args != NULL && !e->any_args)
    {
      e->args = json_from_string (args, NULL);
      g_assert_nonnull (e->args);
    }
  e->kind = kind;
  e->members = members;
  e->events = g_ptr_array_new_with_free_func (g_free);
  e->group = fake->group;
  g_mutex_lock (&fake->lock);
  g_queue_push_tail (&fake->script, e);
  g_mutex_unlock (&fake->lock);
}

void
fake_qemu_expect (FakeQemu *fake, const char *command, const char *args, const char *ret_json)
{
  fake_add (fake, command, args, REPLY_RETURN, g_strdup_printf ("\"return\": %s", ret_json));
}

void
fake_qemu_expect_error (FakeQemu *fake, const char *command, const char *args,
                        const char *klass, const char *desc)
{
  g_autoptr(JsonNode) d = json_node_init_string (json_node_alloc (), desc);
  g_autofree char *text = json_to_string (d, FALSE);

  fake_add (fake, command, args, REPLY_RETURN,
            g_strdup_printf ("\"error\": {\"class\": \"%s\", \"desc\": %s}", klass, text));
}

void
fake_qemu_expect_raw (FakeQemu *fake, const char *command, const char *args,
                      const char *members)
{
  fake_add (fake, command, args, REPLY_RAW, g_strdup (members));
}

void
fake_qemu_expect_close (FakeQemu *fake, const char *command, const char *args)
{
  fake_add (fake, command, args, REPLY_CLOSE, NULL);
}

void
fake_qemu_event (FakeQemu *fake, const char *name, const char *data_json)
{
  Entry *e;

  g_mutex_lock (&fake->lock);
  e = g_queue_peek_tail (&fake->script);
  g_assert_nonnull (e);
  g_ptr_array_add (e->events,
                   g_strdup_printf ("{\"event\": \"%s\", \"data\": %s, \"timestamp\": "
                                    "{\"seconds\": 1, \"microseconds\": 0}}\n",
                                    name, data_json != NULL ? data_json : "{}"));
  g_mutex_unlock (&fake->lock);
}

void
fake_qemu_any_order_begin (FakeQemu *fake)
{
  g_assert_cmpuint (fake->group, ==, 0);
  fake->group = ++fake->groups;
}

void
fake_qemu_any_order_end (FakeQemu *fake)
{
  g_assert_cmpuint (fake->group, !=, 0);
  fake->group = 0;
}

void
fake_qemu_answer_always (FakeQemu *fake, const char *command, const char *members)
{
  g_mutex_lock (&fake->lock);
  g_hash_table_replace (fake->always, g_strdup (command),
                        g_strdup (members != NULL ? members : "\"return\": {}"));
  g_mutex_unlock (&fake->lock);
}

guint
fake_qemu_count (FakeQemu *fake, const char *command)
{
  guint n;

  g_mutex_lock (&fake->lock);
  n = GPOINTER_TO_UINT (g_hash_table_lookup (fake->counts, command));
  g_mutex_unlock (&fake->lock);
  return n;
}

static gboolean
entry_matches (Entry *e, const char *command, JsonNode *args)
{
  if (!g_str_equal (e->command, command))
    return FALSE;
  if (e->any_args)
    return TRUE;
  if (e->args == NULL || args == NULL)
    return e->args == args;
  return json_node_equal (e->args, args);
}

/* The script's entry for this command, taken off the queue; NULL if it is not next. */
static Entry *
script_take (FakeQemu *fake, const char *command, JsonNode *args)
{
  Entry *head = g_queue_peek_head (&fake->script);

  if (head == NULL)
    return NULL;
  if (head->group == 0)
    return entry_matches (head, command, args) ? g_queue_pop_head (&fake->script) : NULL;
  for (GList *l = fake->script.head; l != NULL; l = l->next)
    {
      Entry *e = l->data;
      if (e->group != head->group)
        break;
      if (entry_matches (e, command, args))
        {
          g_queue_delete_link (&fake->script, l);
          return e;
        }
    }
  return NULL;
}

static char *
describe (const char *command, JsonNode *args)
{
  g_autofree char *text = args != NULL ? json_to_string (args, FALSE) : NULL;

  return text != NULL ? g_strdup_printf ("%s %s", command, text) : g_strdup (command);
}

static char *
describe_next (FakeQemu *fake)
{
  Entry *head = g_queue_peek_head (&fake->script);

  if (head == NULL)
    return g_strdup ("nothing (the script is done)");
  return head->any_args ? g_strdup_printf ("%s *", head->command)
                        : describe (head->command, head->args);
}

/* Records the first failure; returns the reply members that report it. */
static char *
fake_fail (FakeQemu *fake, char *message)
{
  g_autofree char *full = g_strconcat ("fake-qemu: ", message, NULL);
  g_autoptr(JsonNode) d = json_node_init_string (json_node_alloc (), full);
  g_autofree char *text = json_to_string (d, FALSE);

  g_test_message ("%s", full);
  if (fake->failure == NULL)
    fake->failure = g_error_new_literal (G_IO_ERROR, G_IO_ERROR_FAILED, full);
  g_free (message);
  return g_strdup_printf ("\"error\": {\"class\": \"GenericError\", \"desc\": %s}", text);
}

gboolean
fake_qemu_check (FakeQemu *fake, GError **error)
{
  gboolean ok = TRUE;

  g_mutex_lock (&fake->lock);
  if (fake->failure != NULL)
    ok = (g_propagate_error (error, g_error_copy (fake->failure)), FALSE);
  else if (!g_queue_is_empty (&fake->pending))
    ok = (g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED,
                       "fake-qemu: %s was received and never taken",
                       ((Pending *) g_queue_peek_head (&fake->pending))->command), FALSE);
  else if (!g_queue_is_empty (&fake->script))
    {
      g_autofree char *next = describe_next (fake);
      ok = (g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED,
                         "fake-qemu: expected %s, never received (%u scripted left)", next,
                         g_queue_get_length (&fake->script)), FALSE);
    }
  g_mutex_unlock (&fake->lock);
  return ok;
}

void
fake_qemu_verify (FakeQemu *fake)
{
  g_autoptr(GError) error = NULL;

  fake_qemu_check (fake, &error);
  g_assert_no_error (error);
}

/* ---- the wire ---------------------------------------------------------------- */

static void fake_listen_watch (FakeQemu *fake);

static void
fake_write (FakeQemu *fake, const char *text)
{
  gsize len = strlen (text);

  while (len > 0 && fake->conn_fd >= 0)
    {
      gssize n = send (fake->conn_fd, text, len, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return;  /* the client went away; its reading side notices */
      text += n;
      len -= n;
    }
}

static void
fake_conn_close (FakeQemu *fake)
{
  if (fake->conn_source != NULL)
    {
      g_source_destroy (fake->conn_source);
      g_clear_pointer (&fake->conn_source, g_source_unref);
    }
  if (fake->conn_fd >= 0)
    close (fake->conn_fd);
  fake->conn_fd = -1;
  g_string_truncate (fake->inbuf, 0);
  fake_listen_watch (fake);
}

/* The reply members for a handshake command, or NULL if @command is not one. */
static char *
fake_handshake (FakeQemu *fake, const char *command)
{
  g_autofree char *list = NULL;
  g_autofree char *text = NULL;

  if (g_str_equal (command, "qmp_capabilities"))
    return g_strdup ("\"return\": {}");
  if (g_str_equal (command, "query-commands"))
    return list = schema_command_list (), g_strdup_printf ("\"return\": %s", list);
  if (!g_str_equal (command, "query-qmp-schema"))
    return NULL;
  text = json_to_string (schema_get ()->root, FALSE);
  return g_strdup_printf ("\"return\": %s", text);
}

/* Decides the answer to one command: reply members (NULL: close, or with *@hold
 * left for the test in manual mode), events to follow. */
static char *
fake_decide (FakeQemu *fake, const char *command, JsonNode *args, GPtrArray **events,
             gboolean *hold)
{
  g_autoptr(GError) error = NULL;
  Entry *e;
  char *members;

  if (!fake_qemu_validate (command, args, &error))
    return fake_fail (fake, g_strdup (error->message));
  /* a scripted handshake command (a QEMU without a schema) wins over the default */
  if ((e = script_take (fake, command, args)) == NULL
      && (members = fake_handshake (fake, command)) != NULL)
    return members;
  if (e == NULL)
    {
      const char *always = g_hash_table_lookup (fake->always, command);

      if (always != NULL || (always = g_hash_table_lookup (fake->always, "*")) != NULL)
        return g_strdup (always);
      if (fake->manual)
        return *hold = TRUE, NULL;
      g_autofree char *got = describe (command, args);
      g_autofree char *want = describe_next (fake);
      return fake_fail (fake, g_strdup_printf ("unexpected %s, expected %s", got, want));
    }
  *events = g_ptr_array_ref (e->events);
  members = e->kind == REPLY_CLOSE ? NULL : g_strdup (e->members);
  entry_free (e);
  return members;
}

static void
fake_count (FakeQemu *fake, const char *command)
{
  guint n = GPOINTER_TO_UINT (g_hash_table_lookup (fake->counts, command));

  g_hash_table_replace (fake->counts, g_strdup (command), GUINT_TO_POINTER (n + 1));
}

/* Manual mode: the handler's, or left for fake_qemu_take. */
static void
fake_hold (FakeQemu *fake, const char *line, JsonNode *id, const char *command, JsonNode *args)
{
  g_autofree char *id_text = id != NULL && JSON_NODE_HOLDS_VALUE (id)
                             && json_node_get_value_type (id) == G_TYPE_STRING
                             ? g_strdup (json_node_get_string (id)) : NULL;
  Pending *p;

  if (fake->handler != NULL && id_text != NULL
      && fake->handler (fake, line, id_text, command, args, fake->handler_data))
    return;
  p = g_new0 (Pending, 1);
  p->id = id != NULL ? json_node_copy (id) : NULL;
  p->command = g_strdup (command);
  p->args = args != NULL ? json_node_copy (args) : NULL;
  g_mutex_lock (&fake->lock);
  g_queue_push_tail (&fake->pending, p);
  g_mutex_unlock (&fake->lock);
}

static void
fake_handle_line (FakeQemu *fake, const char *line)
{
  g_autoptr(JsonNode) msg = json_from_string (line, NULL);
  JsonObject *obj = msg != NULL && JSON_NODE_HOLDS_OBJECT (msg) ? json_node_get_object (msg) : NULL;
  const char *command = obj != NULL ? json_object_get_string_member_with_default (obj, "execute", NULL) : NULL;
  JsonNode *id = obj != NULL ? json_object_get_member (obj, "id") : NULL;
  g_autofree char *id_text = id != NULL ? json_to_string (id, FALSE) : NULL;
  JsonNode *args = obj != NULL ? json_object_get_member (obj, "arguments") : NULL;
  g_autoptr(GPtrArray) events = NULL;
  g_autofree char *members = NULL;
  g_autofree char *reply = NULL;
  gboolean hold = FALSE;

  g_mutex_lock (&fake->lock);
  if (command == NULL)
    members = fake_fail (fake, g_strdup_printf ("not a QMP command: %s", line));
  else
    {
      fake_count (fake, command);
      members = fake_decide (fake, command, args, &events, &hold);
    }
  g_mutex_unlock (&fake->lock);
  if (hold)
    return fake_hold (fake, line, id, command, args);
  if (members == NULL)
    return fake_conn_close (fake);
  reply = id_text != NULL ? g_strdup_printf ("{\"id\": %s, %s}\n", id_text, members)
                          : g_strdup_printf ("{%s}\n", members);
  fake_write (fake, reply);
  for (guint i = 0; events != NULL && i < events->len; i++)
    fake_write (fake, events->pdata[i]);
}

/* Received fds are closed, or kept for fake_qemu_steal_fd. */
static void
fake_take_fds (FakeQemu *fake, struct msghdr *msg)
{
  for (struct cmsghdr *c = CMSG_FIRSTHDR (msg); c != NULL; c = CMSG_NXTHDR (msg, c))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
      for (gsize i = 0; i < (c->cmsg_len - CMSG_LEN (0)) / sizeof (int); i++)
        {
          int fd;
          memcpy (&fd, CMSG_DATA (c) + i * sizeof (int), sizeof fd);
          if (fake->keep_fds)
            g_array_append_val (fake->fds, fd);
          else
            close (fd);
        }
}

static gboolean
fake_conn_readable (int fd, GIOCondition condition, gpointer user_data)
{
  FakeQemu *fake = user_data;
  char buf[65536];
  union { struct cmsghdr hdr; char space[CMSG_SPACE (8 * sizeof (int))]; } control;
  struct iovec iov = { buf, sizeof buf };
  struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
                        .msg_control = &control, .msg_controllen = sizeof control };
  gssize n = recvmsg (fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  char *nl;

  if (n < 0 && (errno == EAGAIN || errno == EINTR))
    return G_SOURCE_CONTINUE;
  if (n <= 0)
    {
      fake->client_gone = TRUE;
      fake_conn_close (fake);
      return G_SOURCE_REMOVE;
    }
  fake_take_fds (fake, &msg);
  g_string_append_len (fake->inbuf, buf, n);
  while (fake->conn_fd == fd && (nl = memchr (fake->inbuf->str, '\n', fake->inbuf->len)))
    {
      g_autofree char *line = g_strndup (fake->inbuf->str, nl - fake->inbuf->str);
      g_string_erase (fake->inbuf, 0, nl - fake->inbuf->str + 1);
      fake_handle_line (fake, line);
    }
  return fake->conn_fd == fd ? G_SOURCE_CONTINUE : G_SOURCE_REMOVE;
}

static void
fake_serve (FakeQemu *fake, int conn)
{
  fake->conn_fd = conn;
  fake->client_gone = FALSE;
  fake->conn_source = g_unix_fd_source_new (fake->conn_fd, G_IO_IN | G_IO_HUP | G_IO_ERR);
  g_source_set_callback (fake->conn_source, G_SOURCE_FUNC (fake_conn_readable), fake, NULL);
  g_source_attach (fake->conn_source, fake->context);
}

static gboolean
fake_accept (int fd, GIOCondition condition, gpointer user_data)
{
  FakeQemu *fake = user_data;
  g_autofree char *greeting = NULL;

  int conn = accept4 (fd, NULL, NULL, SOCK_CLOEXEC);

  if (conn < 0)
    return G_SOURCE_CONTINUE;
  g_clear_pointer (&fake->listen_source, g_source_unref);
  fake_serve (fake, conn);
  g_mutex_lock (&fake->lock);
  greeting = g_strconcat (fake->greeting, "\n", NULL);
  g_mutex_unlock (&fake->lock);
  fake_write (fake, greeting);
  return G_SOURCE_REMOVE;  /* one connection at a time */
}

static void
fake_listen_watch (FakeQemu *fake)
{
  if (fake->listen_fd < 0 || fake->listen_source != NULL)
    return;
  fake->listen_source = g_unix_fd_source_new (fake->listen_fd, G_IO_IN);
  g_source_set_callback (fake->listen_source, G_SOURCE_FUNC (fake_accept), fake, NULL);
  g_source_attach (fake->listen_source, fake->context);
}

static void
fake_listen (FakeQemu *fake)
{
  struct sockaddr_un addr = { .sun_family = AF_UNIX };

  fake->dir = g_dir_make_tmp ("fake-qemu-XXXXXX", NULL);
  g_assert_nonnull (fake->dir);
  fake->path = g_build_filename (fake->dir, "qmp.sock", NULL);
  g_assert_cmpuint (strlen (fake->path), <, sizeof addr.sun_path);
  strcpy (addr.sun_path, fake->path);
  fake->listen_fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  g_assert_cmpint (fake->listen_fd, >=, 0);
  g_assert_cmpint (bind (fake->listen_fd, (struct sockaddr *) &addr, sizeof addr), ==, 0);
  g_assert_cmpint (listen (fake->listen_fd, 8), ==, 0);
  fake_listen_watch (fake);
}

static FakeQemu *
fake_new (GMainContext *context)
{
  FakeQemu *fake = g_new0 (FakeQemu, 1);

  schema_get ();
  fake->greeting = g_strdup (FAKE_GREETING);
  fake->context = context;
  fake->conn_fd = -1;
  fake->inbuf = g_string_new (NULL);
  g_mutex_init (&fake->lock);
  g_queue_init (&fake->script);
  fake->always = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  fake->counts = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  g_queue_init (&fake->pending);
  fake->fds = g_array_new (FALSE, FALSE, sizeof (int));
  fake_listen (fake);
  return fake;
}

FakeQemu *
fake_qemu_new (void)
{
  return fake_new (g_main_context_ref_thread_default ());
}

static gpointer
fake_thread (gpointer data)
{
  FakeQemu *fake = data;

  g_main_context_push_thread_default (fake->context);
  g_main_loop_run (fake->loop);
  g_main_context_pop_thread_default (fake->context);
  return NULL;
}

FakeQemu *
fake_qemu_new_threaded (void)
{
  FakeQemu *fake = fake_new (g_main_context_new ());

  fake->loop = g_main_loop_new (fake->context, FALSE);
  fake->thread = g_thread_new ("fake-qemu", fake_thread, fake);
  return fake;
}

static gboolean
fake_quit (gpointer data)
{
  g_main_loop_quit (data);
  return G_SOURCE_REMOVE;
}

void
fake_qemu_free (FakeQemu *fake)
{
  if (fake->thread != NULL)
    {
      g_main_context_invoke (fake->context, fake_quit, fake->loop);
      g_thread_join (fake->thread);
      g_main_loop_unref (fake->loop);
    }
  close (fake->listen_fd);
  fake->listen_fd = -1;
  fake_conn_close (fake);
  if (fake->listen_source != NULL)
    g_source_destroy (fake->listen_source);
  g_clear_pointer (&fake->listen_source, g_source_unref);
  g_unlink (fake->path);
  g_rmdir (fake->dir);
  g_main_context_unref (fake->context);
  g_queue_clear_full (&fake->script, entry_free);
  g_queue_clear_full (&fake->pending, pending_free);
  for (guint i = 0; i < fake->fds->len; i++)
    close (g_array_index (fake->fds, int, i));
  g_array_unref (fake->fds);
  g_hash_table_unref (fake->always);
  g_hash_table_unref (fake->counts);
  g_clear_error (&fake->failure);
  g_string_free (fake->inbuf, TRUE);
  g_mutex_clear (&fake->lock);
  g_free (fake->greeting);
  g_free (fake->path);
  g_free (fake->dir);
  g_free (fake);
}

const char *
fake_qemu_path (FakeQemu *fake)
{
  return fake->path;
}

void
fake_qemu_set_greeting (FakeQemu *fake, const char *line)
{
  g_mutex_lock (&fake->lock);
  g_free (fake->greeting);
  fake->greeting = g_strdup (line);
  g_mutex_unlock (&fake->lock);
}

QmpClient *
fake_qemu_connect (FakeQemu *fake, const char *label)
{
  g_autoptr(GError) error = NULL;
  QmpClient *client = qmp_client_connect_sync (fake->path, label, NULL, &error);

  g_assert_no_error (error);
  return client;
}

/* ---- interactive mode ------------------------------------------------------ */

void
fake_qemu_set_manual (FakeQemu *fake, FakeQemuHandler handler, gpointer data)
{
  g_assert_null (fake->thread);
  fake->manual = TRUE;
  fake->handler = handler;
  fake->handler_data = data;
}

int
fake_qemu_socketpair (FakeQemu *fake, gboolean greet)
{
  int sv[2];

  g_assert_null (fake->thread);
  g_assert_cmpint (fake->conn_fd, <, 0);
  g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), ==, 0);
  if (fake->listen_source != NULL)
    g_source_destroy (fake->listen_source);
  g_clear_pointer (&fake->listen_source, g_source_unref);
  close (fake->listen_fd);
  fake->listen_fd = -1;       /* no other connection after this one */
  fake_serve (fake, sv[1]);
  if (greet)
    {
      g_autofree char *greeting = g_strconcat (fake->greeting, "\n", NULL);
      fake_write (fake, greeting);
    }
  return sv[0];
}

/* Iterates the fake's (the test's) context until @cond holds; fails after 5 s. */
#define FAKE_WAIT(fake, cond)                                                   \
  G_STMT_START {                                                                \
    gint64 deadline_ = g_get_monotonic_time () + 5 * G_USEC_PER_SEC;            \
    while (!(cond))                                                             \
      {                                                                         \
        if (g_get_monotonic_time () >= deadline_)                               \
          g_error ("fake-qemu: timed out waiting for " #cond);                  \
        g_main_context_iteration ((fake)->context, FALSE);                      \
        g_usleep (1000);                                                        \
      }                                                                         \
  } G_STMT_END

char *
fake_qemu_take (FakeQemu *fake, const char *command, const char *args)
{
  g_autoptr(JsonNode) want = args != NULL && !g_str_equal (args, "*")
                             ? json_from_string (args, NULL) : NULL;
  Pending *p;
  char *id;

  FAKE_WAIT (fake, !g_queue_is_empty (&fake->pending) || fake->conn_fd < 0);
  p = g_queue_pop_head (&fake->pending);
  if (p == NULL)
    g_error ("fake-qemu: the connection ended while waiting for %s", command);
  if (command != NULL)
    g_assert_cmpstr (p->command, ==, command);
  if (args == NULL ? p->args != NULL : want != NULL && !json_node_equal (want, p->args))
    {
      g_autofree char *got = describe (p->command, p->args);
      g_error ("fake-qemu: got %s, expected arguments %s", got, args);
    }
  g_assert_true (p->id != NULL && JSON_NODE_HOLDS_VALUE (p->id)
                 && json_node_get_value_type (p->id) == G_TYPE_STRING);
  id = g_strdup (json_node_get_string (p->id));
  pending_free (p);
  return id;
}

static char *
json_string_text (const char *text)
{
  g_autoptr(JsonNode) node = json_node_init_string (json_node_alloc (), text);

  return json_to_string (node, FALSE);
}

void
fake_qemu_reply (FakeQemu *fake, const char *id, const char *ret_json)
{
  g_autofree char *quoted = json_string_text (id);
  g_autofree char *line = g_strdup_printf ("{\"return\": %s, \"id\": %s}\n", ret_json, quoted);

  fake_write (fake, line);
}

void
fake_qemu_send_raw (FakeQemu *fake, const char *text)
{
  fake_write (fake, text);
}

void
fake_qemu_send_event (FakeQemu *fake, const char *name, const char *data_json)
{
  g_autofree char *line = g_strdup_printf ("{\"event\": \"%s\", \"data\": %s, \"timestamp\": "
                                           "{\"seconds\": 1, \"microseconds\": 2}}\n",
                                           name, data_json != NULL ? data_json : "{}");

  fake_write (fake, line);
}

void
fake_qemu_close (FakeQemu *fake)
{
  fake_conn_close (fake);
}

gboolean
fake_qemu_client_gone (FakeQemu *fake)
{
  return fake->client_gone;
}

void
fake_qemu_assert_quiet (FakeQemu *fake)
{
  while (g_main_context_iteration (fake->context, FALSE))
    ;
  if (!g_queue_is_empty (&fake->pending))
    {
      Pending *p = g_queue_peek_head (&fake->pending);
      g_autofree char *got = describe (p->command, p->args);
      g_error ("fake-qemu: unexpected %s", got);
    }
  fake_qemu_verify (fake);
}

void
fake_qemu_keep_fds (FakeQemu *fake)
{
  fake->keep_fds = TRUE;
}

guint
fake_qemu_fd_count (FakeQemu *fake)
{
  return fake->fds->len;
}

int
fake_qemu_steal_fd (FakeQemu *fake)
{
  int fd;

  g_assert_cmpuint (fake->fds->len, >, 0);
  fd = g_array_index (fake->fds, int, 0);
  g_array_remove_index (fake->fds, 0);
  return fd;
}
