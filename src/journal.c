/* The crash-safe journal: what a command is about to do, written before it does it. */
#include "src/journal.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <unistd.h>

#include "common/error.h"
#include "src/util.h"

#define JOURNAL_VERSION 1

void
journal_free (Journal *journal)
{
  if (journal == NULL)
    return;
  g_free (journal->path);
  g_free (journal->id);
  g_free (journal->command);
  g_free (journal->step);
  g_free (journal->source_qmp);
  g_free (journal->dest_qmp);
  g_clear_pointer (&journal->cookie, cookie_free);
  g_clear_pointer (&journal->created, g_ptr_array_unref);
  g_free (journal->disk);
  g_free (journal->old_image);
  g_free (journal->new_image);
  g_free (journal->new_node);
  g_free (journal->job);
  g_free (journal);
}

char *
journal_dir (void)
{
  const char *dir = g_getenv ("BLKMIG_STATE_DIR");

  if (dir != NULL && *dir != '\0')
    return g_strdup (dir);
  if (geteuid () == 0)
    return g_strdup ("/var/lib/blkmig");
  return g_build_filename (g_get_user_state_dir (), "blkmig", NULL);
}

Journal *
journal_new (const char *id, const char *command)
{
  Journal *journal = g_new0 (Journal, 1);
  g_autofree char *dir = journal_dir ();
  g_autofree char *name = g_strdup_printf ("%s-%s.json", id, command);

  journal->path = g_build_filename (dir, name, NULL);
  journal->id = g_strdup (id);
  journal->command = g_strdup (command);
  journal->created = g_ptr_array_new_with_free_func (g_free);
  return journal;
}

void
journal_add_created (Journal *journal, const char *path)
{
  if (journal != NULL)
    g_ptr_array_add (journal->created, g_strdup (path));
}

static void
journal_add_string (JsonBuilder *b, const char *key, const char *value)
{
  if (value == NULL)
    return;
  json_builder_set_member_name (b, key);
  json_builder_add_string_value (b, value);
}

static char *
journal_to_string (const Journal *journal)
{
  g_autoptr(JsonBuilder) b = json_builder_new ();
  g_autoptr(JsonNode) root = NULL;

  json_builder_begin_object (b);
  json_builder_set_member_name (b, "version");
  json_builder_add_int_value (b, JOURNAL_VERSION);
  journal_add_string (b, "id", journal->id);
  journal_add_string (b, "command", journal->command);
  journal_add_string (b, "step", journal->step);
  journal_add_string (b, "source-qmp", journal->source_qmp);
  journal_add_string (b, "dest-qmp", journal->dest_qmp);
  journal_add_string (b, "disk", journal->disk);
  journal_add_string (b, "old-image", journal->old_image);
  journal_add_string (b, "new-image", journal->new_image);
  journal_add_string (b, "new-node", journal->new_node);
  journal_add_string (b, "job", journal->job);
  json_builder_set_member_name (b, "created");
  json_builder_begin_array (b);
  for (guint i = 0; journal->created != NULL && i < journal->created->len; i++)
    json_builder_add_string_value (b, journal->created->pdata[i]);
  json_builder_end_array (b);
  if (journal->cookie != NULL)
    {
      g_autofree char *text = cookie_to_string (journal->cookie);
      json_builder_set_member_name (b, "cookie");
      json_builder_add_value (b, json_from_string (text, NULL));
    }
  json_builder_end_object (b);
  root = json_builder_get_root (b);
  return json_to_string (root, TRUE);
}

static gboolean
journal_fsync_dir (const char *dir, GError **error)
{
  int fd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int saved;

  if (fd >= 0 && fsync (fd) == 0)
    return close (fd), TRUE;
  saved = errno;
  if (fd >= 0)
    close (fd);
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED, "journal: cannot sync %s: %s", dir,
               g_strerror (saved));
  return FALSE;
}

/* temp file, fsync, rename, fsync of the directory */
static gboolean
journal_store (const char *path, const char *text, GError **error)
{
  g_autofree char *dir = g_path_get_dirname (path);
  g_autofree char *tmp = g_strdup_printf ("%s.tmp", path);
  int fd;

  if (g_mkdir_with_parents (dir, 0700) != 0)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED, "journal: cannot create %s: %s",
                        dir, g_strerror (errno)), FALSE;
  fd = open (tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0 || write (fd, text, strlen (text)) != (gssize) strlen (text) || fsync (fd) != 0
      || close (fd) != 0 || rename (tmp, path) != 0)
    {
      int saved = errno;
      g_unlink (tmp);
      return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED, "journal: cannot write %s: %s",
                          path, g_strerror (saved)), FALSE;
    }
  return journal_fsync_dir (dir, error);
}

gboolean
journal_write (Journal *journal, const char *step, GError **error)
{
  g_autofree char *text = NULL;

  g_free (journal->step);
  journal->step = g_strdup (step);
  text = journal_to_string (journal);
  if (!journal_store (journal->path, text, error))
    return FALSE;
  if (g_strcmp0 (g_getenv ("BLKMIG_TEST_KILL_AT"), step) == 0)
    raise (SIGKILL);
  if (g_strcmp0 (g_getenv ("BLKMIG_TEST_PAUSE_AT"), step) == 0)
    raise (SIGSTOP);  /* a test injects its fault, then sends SIGCONT */
  return TRUE;
}

void
journal_remove (Journal *journal)
{
  g_autofree char *dir = g_path_get_dirname (journal->path);

  if (g_unlink (journal->path) == 0)
    journal_fsync_dir (dir, NULL);
}

void
journal_forget (const char *id, const char *command)
{
  g_autoptr(Journal) journal = journal_new (id, command);

  journal_remove (journal);
}

void
journal_remove_created (const Journal *journal, gboolean targets)
{
  for (guint i = 0; journal->created != NULL && i < journal->created->len; i++)
    {
      const char *path = journal->created->pdata[i];
      if (g_file_test (path, G_FILE_TEST_IS_DIR))
        util_private_dir_remove (path);
      else if (targets)
        g_unlink (path);
    }
}

static char *
journal_get (JsonObject *obj, const char *key)
{
  return g_strdup (json_object_get_string_member_with_default (obj, key, NULL));
}

static gboolean
journal_parse (Journal *journal, JsonObject *obj, GError **error)
{
  journal->id = journal_get (obj, "id");
  journal->command = journal_get (obj, "command");
  journal->step = journal_get (obj, "step");
  journal->source_qmp = journal_get (obj, "source-qmp");
  journal->dest_qmp = journal_get (obj, "dest-qmp");
  journal->disk = journal_get (obj, "disk");
  journal->old_image = journal_get (obj, "old-image");
  journal->new_image = journal_get (obj, "new-image");
  journal->new_node = journal_get (obj, "new-node");
  journal->job = journal_get (obj, "job");
  journal->created = g_ptr_array_new_with_free_func (g_free);
  if (json_object_has_member (obj, "created"))
    {
      JsonArray *list = json_object_get_array_member (obj, "created");
      for (guint i = 0; i < json_array_get_length (list); i++)
        journal_add_created (journal, json_array_get_string_element (list, i));
    }
  if (journal->id == NULL || journal->command == NULL || journal->step == NULL)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED,
                        "journal %s: id, command or step is missing", journal->path), FALSE;
  if (json_object_has_member (obj, "cookie"))
    {
      g_autofree char *text = json_to_string (json_object_get_member (obj, "cookie"), FALSE);
      journal->cookie = cookie_parse (text, -1, COOKIE_KIND_SOURCE, error);
      if (journal->cookie == NULL)
        return g_prefix_error (error, "journal %s: ", journal->path), FALSE;
    }
  return TRUE;
}

Journal *
journal_load (const char *path, GError **error)
{
  g_autoptr(Journal) journal = g_new0 (Journal, 1);
  g_autoptr(JsonParser) parser = json_parser_new ();
  JsonNode *root;

  journal->path = g_strdup (path);
  if (!json_parser_load_from_file (parser, path, error))
    return g_prefix_error (error, "journal %s: ", path), NULL;
  root = json_parser_get_root (parser);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT (root))
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED,
                        "journal %s: not a JSON object", path), NULL;
  if (!journal_parse (journal, json_node_get_object (root), error))
    return NULL;
  return g_steal_pointer (&journal);
}

static gint
journal_compare_mtime (gconstpointer a, gconstpointer b)
{
  GStatBuf sa, sb;
  const Journal *ja = *(Journal **) a;
  const Journal *jb = *(Journal **) b;

  if (g_stat (ja->path, &sa) != 0 || g_stat (jb->path, &sb) != 0)
    return 0;
  return (sa.st_mtime > sb.st_mtime) - (sa.st_mtime < sb.st_mtime);
}

GPtrArray *
journal_load_all (GError **error)
{
  g_autofree char *dir = journal_dir ();
  g_autoptr(GDir) d = g_dir_open (dir, 0, NULL);
  g_autoptr(GPtrArray) all = g_ptr_array_new_with_free_func ((GDestroyNotify) journal_free);
  const char *name;

  while (d != NULL && (name = g_dir_read_name (d)) != NULL)
    {
      g_autofree char *path = NULL;
      Journal *journal;

      if (!g_str_has_suffix (name, ".json"))
        continue;
      path = g_build_filename (dir, name, NULL);
      journal = journal_load (path, error);
      if (journal == NULL)
        return NULL;
      g_ptr_array_add (all, journal);
    }
  g_ptr_array_sort (all, journal_compare_mtime);
  return g_steal_pointer (&all);
}
