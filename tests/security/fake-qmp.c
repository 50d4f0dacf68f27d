/* A scripted QMP peer on a UNIX socket, for tests that feed blkmig hostile replies. */
#include "tests/security/fake-qmp.h"

#include <gio/gunixsocketaddress.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

#define FAKE_GREETING "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, " \
                      "\"major\": 7}, \"package\": \"\"}, \"capabilities\": []}}"

struct _FakeQmp {
  char *dir;
  char *path;
  char *greeting;
  GSocket *listener;
  GThread *thread;
  gint stop;
  GMutex lock;
  GHashTable *script;          /* command → reply members */
  GHashTable *counts;          /* command → count */
  GHashTable *arguments;       /* command → its last arguments, JSON text */
};

static gboolean
fake_send_all (GSocket *sock, const char *data, gsize len)
{
  while (len > 0)
    {
      gssize n = g_socket_send (sock, data, len, NULL, NULL);
      if (n <= 0)
        return FALSE;
      data += n;
      len -= n;
    }
  return TRUE;
}

static gboolean
fake_send_line (GSocket *sock, const char *a, const char *b, const char *c)
{
  g_autofree char *line = g_strconcat (a, b, c, "\n", NULL);

  return fake_send_all (sock, line, strlen (line));
}

static char *
fake_query_commands (FakeQmp *fake)
{
  static const char *const basics[] = { "qmp_capabilities", "query-commands", "query-block",
                                        "query-named-block-nodes", "query-block-jobs",
                                        "query-status", NULL };
  g_autoptr(GString) list = g_string_new ("\"return\": [");
  GHashTableIter iter;
  gpointer name;

  for (gsize i = 0; basics[i] != NULL; i++)
    g_string_append_printf (list, "%s{\"name\": \"%s\"}", i ? ", " : "", basics[i]);
  g_hash_table_iter_init (&iter, fake->script);
  while (g_hash_table_iter_next (&iter, &name, NULL))
    g_string_append_printf (list, ", {\"name\": \"%s\"}", (char *) name);
  g_string_append (list, "]");
  return g_string_free (g_steal_pointer (&list), FALSE);
}

/* Answers one command line; FALSE when the peer has gone. */
static gboolean
fake_answer (FakeQmp *fake, GSocket *sock, const char *line)
{
  g_autoptr(JsonNode) msg = json_from_string (line, NULL);
  JsonObject *obj = msg != NULL && JSON_NODE_HOLDS_OBJECT (msg) ? json_node_get_object (msg) : NULL;
  const char *command = obj != NULL ? json_object_get_string_member_with_default (obj, "execute", "") : "";
  JsonNode *id = obj != NULL ? json_object_get_member (obj, "id") : NULL;
  JsonNode *args = obj != NULL ? json_object_get_member (obj, "arguments") : NULL;
  g_autofree char *id_text = id != NULL ? json_to_string (id, FALSE) : g_strdup ("null");
  g_autofree char *head = g_strdup_printf ("{\"id\": %s, ", id_text);
  g_autofree char *members = NULL;

  g_mutex_lock (&fake->lock);
  g_hash_table_replace (fake->counts, g_strdup (command),
                        GUINT_TO_POINTER (GPOINTER_TO_UINT (g_hash_table_lookup (fake->counts,
                                                                                 command)) + 1));
  g_hash_table_replace (fake->arguments, g_strdup (command),
                        args != NULL ? json_to_string (args, FALSE) : g_strdup ("{}"));
  members = g_strdup (g_hash_table_lookup (fake->script, command));
  if (members == NULL && g_str_equal (command, "query-commands"))
    members = fake_query_commands (fake);
  g_mutex_unlock (&fake->lock);
  return fake_send_line (sock, head, members != NULL ? members : "\"return\": {}", "}");
}

static void
fake_serve (FakeQmp *fake, GSocket *sock)
{
  g_autoptr(GString) in = g_string_new (NULL);
  char buf[65536];
  gssize n;

  if (!fake_send_line (sock, fake->greeting, "", ""))
    return;
  while ((n = g_socket_receive (sock, buf, sizeof buf, NULL, NULL)) > 0)
    {
      char *nl;

      g_string_append_len (in, buf, n);
      while ((nl = memchr (in->str, '\n', in->len)) != NULL)
        {
          g_autofree char *line = g_strndup (in->str, nl - in->str);

          g_string_erase (in, 0, nl - in->str + 1);
          if (!fake_answer (fake, sock, line))
            return;
        }
    }
}

static gpointer
fake_thread (gpointer data)
{
  FakeQmp *fake = data;

  while (!g_atomic_int_get (&fake->stop))
    {
      g_autoptr(GSocket) sock = NULL;

      if (!g_socket_condition_timed_wait (fake->listener, G_IO_IN, 100 * 1000, NULL, NULL))
        continue;
      sock = g_socket_accept (fake->listener, NULL, NULL);
      if (sock != NULL)
        fake_serve (fake, sock);
    }
  return NULL;
}

FakeQmp *
fake_qmp_new (void)
{
  FakeQmp *fake = g_new0 (FakeQmp, 1);
  g_autoptr(GSocketAddress) addr = NULL;

  fake->dir = g_dir_make_tmp ("blkmig-fake-qmp-XXXXXX", NULL);
  g_assert_nonnull (fake->dir);
  fake->path = g_build_filename (fake->dir, "qmp.sock", NULL);
  fake->greeting = g_strdup (FAKE_GREETING);
  fake->script = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  fake->counts = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  fake->arguments = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  g_mutex_init (&fake->lock);
  fake->listener = g_socket_new (G_SOCKET_FAMILY_UNIX, G_SOCKET_TYPE_STREAM,
                                 G_SOCKET_PROTOCOL_DEFAULT, NULL);
  addr = g_unix_socket_address_new (fake->path);
  g_assert_true (g_socket_bind (fake->listener, addr, TRUE, NULL));
  g_assert_true (g_socket_listen (fake->listener, NULL));
  fake->thread = g_thread_new ("fake-qmp", fake_thread, fake);
  return fake;
}

void
fake_qmp_free (FakeQmp *fake)
{
  g_atomic_int_set (&fake->stop, 1);
  g_thread_join (fake->thread);
  g_object_unref (fake->listener);
  g_unlink (fake->path);
  g_rmdir (fake->dir);
  g_hash_table_unref (fake->script);
  g_hash_table_unref (fake->counts);
  g_hash_table_unref (fake->arguments);
  g_mutex_clear (&fake->lock);
  g_free (fake->greeting);
  g_free (fake->path);
  g_free (fake->dir);
  g_free (fake);
}

const char *
fake_qmp_path (FakeQmp *fake)
{
  return fake->path;
}

void
fake_qmp_script (FakeQmp *fake, const char *command, const char *reply_members)
{
  g_mutex_lock (&fake->lock);
  g_hash_table_replace (fake->script, g_strdup (command), g_strdup (reply_members));
  g_mutex_unlock (&fake->lock);
}

void
fake_qmp_set_greeting (FakeQmp *fake, const char *line)
{
  g_mutex_lock (&fake->lock);
  g_free (fake->greeting);
  fake->greeting = g_strdup (line);
  g_mutex_unlock (&fake->lock);
}

guint
fake_qmp_count (FakeQmp *fake, const char *command)
{
  guint n;

  g_mutex_lock (&fake->lock);
  n = GPOINTER_TO_UINT (g_hash_table_lookup (fake->counts, command));
  g_mutex_unlock (&fake->lock);
  return n;
}

char *
fake_qmp_last_arguments (FakeQmp *fake, const char *command)
{
  char *text;

  g_mutex_lock (&fake->lock);
  text = g_strdup (g_hash_table_lookup (fake->arguments, command));
  g_mutex_unlock (&fake->lock);
  return text;
}
