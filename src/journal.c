/* The crash-safe journal: what a command is about to do, written before it does it. */
#include "src/journal.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error.h"
#include "common/escape.h"
#include "common/json.h"
#include "qmp/qmp-json.h"
#include "src/util.h"

#define JOURNAL_VERSION 1
#define JOURNAL_MAX_BYTES (4 * 1024 * 1024)

void
journal_free (Journal *journal)
{
  if (journal == NULL)
    return;
  g_free (journal->path);
  g_free (journal->id);
  g_free (journal->command);
  g_free (journal->source_qmp);
  g_free (journal->dest_qmp);
  g_clear_pointer (&journal->cookie, cookie_free);
  g_clear_pointer (&journal->created, g_ptr_array_unref);
  g_free (journal->disk);
  g_free (journal->old_image);
  g_free (journal->new_image);
  g_free (journal->new_node);
  g_free (journal->job);
  g_free (journal->top_node);
  g_strfreev (journal->chain);
  g_strfreev (journal->disks);
  g_strfreev (journal->nodes);
  g_free (journal->op_id);
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

static void
journal_add_strv (JsonBuilder *b, const char *key, GStrv value)
{
  if (value != NULL)
    blkmig_json_add_strv (b, key, (const char *const *) value);
}

static const char *const step_names[JOURNAL_STEP_LAST] = {
  [JOURNAL_STEP_NONE] = NULL,
  [JOURNAL_STEP_BEGIN] = "begin",
  [JOURNAL_STEP_OFFERED] = "offered",
  [JOURNAL_STEP_PREPARE] = "prepare",
  [JOURNAL_STEP_PREPARED] = "prepared",
  [JOURNAL_STEP_MIRROR] = "mirror",
  [JOURNAL_STEP_SWITCH] = "switch",
  [JOURNAL_STEP_PRE_SWITCHOVER] = "pre-switchover",
  [JOURNAL_STEP_COMPLETED] = "completed",
  [JOURNAL_STEP_COPIED] = "copied",
  [JOURNAL_STEP_MOVED] = "moved",
  [JOURNAL_STEP_SUPERSEDED] = "superseded",
  [JOURNAL_STEP_PIVOTED] = "pivoted",
  [JOURNAL_STEP_SNAPSHOT] = "snapshot",
  [JOURNAL_STEP_TRANSACTION] = "transaction",
  [JOURNAL_STEP_COMMIT] = "commit",
  [JOURNAL_STEP_COMMITTED] = "committed",
  [JOURNAL_STEP_READY] = "ready",
};

const char *
journal_step_to_string (JournalStep step)
{
  return (guint) step < JOURNAL_STEP_LAST ? step_names[step] : NULL;
}

gboolean
journal_step_from_string (const char *str, JournalStep *step)
{
  for (guint i = 0; str != NULL && i < JOURNAL_STEP_LAST; i++)
    if (step_names[i] != NULL && strcmp (str, step_names[i]) == 0)
      return *step = (JournalStep) i, TRUE;
  return FALSE;
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
  journal_add_string (b, "op-id", journal->op_id);
  if (journal->keep_targets)
    {
      json_builder_set_member_name (b, "keep-targets");
      json_builder_add_boolean_value (b, TRUE);
    }
  journal_add_string (b, "step", journal_step_to_string (journal->step));
  journal_add_string (b, "source-qmp", journal->source_qmp);
  journal_add_string (b, "dest-qmp", journal->dest_qmp);
  journal_add_string (b, "disk", journal->disk);
  journal_add_string (b, "old-image", journal->old_image);
  journal_add_string (b, "new-image", journal->new_image);
  journal_add_string (b, "new-node", journal->new_node);
  journal_add_string (b, "job", journal->job);
  journal_add_string (b, "top-node", journal->top_node);
  journal_add_strv (b, "chain", journal->chain);
  journal_add_strv (b, "disks", journal->disks);
  journal_add_strv (b, "nodes", journal->nodes);
  if (g_str_equal (journal->command, "merge"))
    {
      blkmig_json_add_bool (b, "active", journal->active);
      blkmig_json_add_bool (b, "paused-guest", journal->paused_guest);
      blkmig_json_add_bool (b, "delete-merged", journal->delete_merged);
    }
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

gboolean
journal_dir_check (const char *dir, gboolean create, GError **error)
{
  struct stat st;

  if (create && g_mkdir_with_parents (dir, 0700) != 0)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED,
                        "state directory %s: cannot create it: %s", dir, g_strerror (errno)), FALSE;
  if (stat (dir, &st) != 0)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED, "state directory %s: %s", dir,
                        g_strerror (errno)), FALSE;
  if (S_ISDIR (st.st_mode) && st.st_uid == geteuid () && (st.st_mode & 077) == 0)
    return TRUE;
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED,
               "state directory %s has mode %04o and owner uid %u: it must be a directory "
               "owned by uid %u with no access for others (chmod 700)",
               dir, (guint) (st.st_mode & 07777), (guint) st.st_uid, (guint) geteuid ());
  return FALSE;
}

/* The temp file is ours alone: never a link someone planted, never an old file.  A
 * stale one (a crash between open and rename) is removed, not reused. */
static int
journal_open_tmp (const char *tmp)
{
  int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
  int fd = open (tmp, flags, 0600);

  if (fd < 0 && errno == EEXIST && unlink (tmp) == 0)
    fd = open (tmp, flags, 0600);
  return fd;
}

/* temp file, fsync, rename, fsync of the directory */
gboolean
journal_store (const char *path, const char *text, GError **error)
{
  g_autofree char *dir = g_path_get_dirname (path);
  g_autofree char *tmp = g_strdup_printf ("%s.tmp", path);
  int fd;

  if (!journal_dir_check (dir, TRUE, error))
    return FALSE;
  fd = journal_open_tmp (tmp);
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
journal_write (Journal *journal, JournalStep step, GError **error)
{
  const char *name = journal_step_to_string (step);
  g_autofree char *text = NULL;

  g_return_val_if_fail (name != NULL, FALSE);
  journal->step = step;
  text = journal_to_string (journal);
  if (!journal_store (journal->path, text, error))
    return FALSE;
  if (g_strcmp0 (g_getenv ("BLKMIG_TEST_KILL_AT"), name) == 0)
    raise (SIGKILL);
  if (g_strcmp0 (g_getenv ("BLKMIG_TEST_PAUSE_AT"), name) == 0)
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

/* Only what looks like blkmig's own: a private directory (util_is_private_dir), a
 * socket, or (@targets) a regular file of the effective user.  Never through a
 * symbolic link, never another kind of directory, never a relative path. */
static gboolean
journal_remove_one (const char *path, gboolean targets)
{
  struct stat st;

  if (!g_path_is_absolute (path) || lstat (path, &st) != 0)
    return FALSE;
  if (S_ISDIR (st.st_mode) && util_is_private_dir (path))
    util_private_dir_remove (path);
  else if (S_ISSOCK (st.st_mode))
    g_unlink (path);
  else if (S_ISREG (st.st_mode) && st.st_uid == geteuid ())
    return targets ? g_unlink (path), FALSE : TRUE;
  return FALSE;
}

/* --keep-target: the targets a rollback keeps, in STATE_DIR/ID.kept. */
static void
journal_record_kept (const Journal *journal, const char *const *kept)
{
  g_autoptr(JsonBuilder) b = json_builder_new ();
  g_autoptr(JsonNode) root = NULL;
  g_autofree char *dir = journal_dir ();
  g_autofree char *name = g_strdup_printf ("%s.kept", journal->id);
  g_autofree char *path = g_build_filename (dir, name, NULL);
  g_autofree char *text = NULL;
  g_autoptr(GError) error = NULL;

  json_builder_begin_object (b);
  journal_add_string (b, "id", journal->id);
  journal_add_string (b, "op-id", journal->op_id);
  journal_add_string (b, "command", journal->command);
  journal_add_strv (b, "targets", (GStrv) kept);
  json_builder_end_object (b);
  root = json_builder_get_root (b);
  text = json_to_string (root, TRUE);
  if (!journal_store (path, text, &error))
    g_printerr ("blkmig: warning: %s\n", error->message);
  else  /* like a warning: a file stays that a rollback would have removed */
    for (guint i = 0; kept[i] != NULL; i++)
      {
        g_autofree char *quoted = blkmig_escape (kept[i]);
        g_printerr ("blkmig: kept the partly copied target %s (listed in %s)\n", quoted, path);
      }
}

void
journal_remove_created (const Journal *journal, gboolean targets)
{
  g_autoptr(GStrvBuilder) kept = g_strv_builder_new ();
  g_auto(GStrv) list = NULL;
  gboolean keep = targets && journal->keep_targets;

  for (guint i = 0; journal->created != NULL && i < journal->created->len; i++)
    if (journal_remove_one (journal->created->pdata[i], targets && !keep) && keep)
      g_strv_builder_add (kept, journal->created->pdata[i]);
  list = g_strv_builder_end (kept);
  if (list[0] != NULL)
    journal_record_kept (journal, (const char *const *) list);
}

static char *
journal_get (JsonObject *obj, const char *key)
{
  return g_strdup (qmp_member_string (obj, key));
}

/* Member @key: an array of strings (into @out, NULL when absent), or an error. */
static gboolean
journal_parse_strv (const Journal *journal, JsonObject *obj, const char *key, GStrv *out,
                    GError **error)
{
  JsonNode *node = json_object_get_member (obj, key);
  JsonArray *list = node != NULL && JSON_NODE_HOLDS_ARRAY (node) ? json_node_get_array (node) : NULL;
  g_autoptr(GStrvBuilder) items = g_strv_builder_new ();

  for (guint i = 0; list != NULL && i < json_array_get_length (list); i++)
    {
      JsonNode *item = json_array_get_element (list, i);
      if (!JSON_NODE_HOLDS_VALUE (item) || json_node_get_value_type (item) != G_TYPE_STRING)
        list = NULL;
      else
        g_strv_builder_add (items, json_node_get_string (item));
    }
  if (list != NULL)
    *out = g_strv_builder_end (items);
  if (node == NULL || list != NULL)
    return TRUE;
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED,
               "journal %s: %s must be an array of strings", journal->path, key);
  return FALSE;
}

/* "created": an array of strings, or absent. */
static gboolean
journal_parse_created (Journal *journal, JsonObject *obj, GError **error)
{
  g_auto(GStrv) created = NULL;

  if (!journal_parse_strv (journal, obj, "created", &created, error))
    return FALSE;
  for (guint i = 0; created != NULL && created[i] != NULL; i++)
    journal_add_created (journal, created[i]);
  return TRUE;
}

static gboolean
journal_parse (Journal *journal, JsonObject *obj, GError **error)
{
  const char *step = qmp_member_string (obj, "step");

  journal->id = journal_get (obj, "id");
  journal->command = journal_get (obj, "command");
  journal->op_id = journal_get (obj, "op-id");
  journal->keep_targets = qmp_member_bool (obj, "keep-targets", FALSE);
  journal->source_qmp = journal_get (obj, "source-qmp");
  journal->dest_qmp = journal_get (obj, "dest-qmp");
  journal->disk = journal_get (obj, "disk");
  journal->old_image = journal_get (obj, "old-image");
  journal->new_image = journal_get (obj, "new-image");
  journal->new_node = journal_get (obj, "new-node");
  journal->job = journal_get (obj, "job");
  journal->top_node = journal_get (obj, "top-node");
  journal->active = qmp_member_bool (obj, "active", FALSE);
  journal->paused_guest = qmp_member_bool (obj, "paused-guest", FALSE);
  journal->delete_merged = qmp_member_bool (obj, "delete-merged", FALSE);
  journal->created = g_ptr_array_new_with_free_func (g_free);
  if (!journal_parse_created (journal, obj, error)
      || !journal_parse_strv (journal, obj, "chain", &journal->chain, error)
      || !journal_parse_strv (journal, obj, "disks", &journal->disks, error)
      || !journal_parse_strv (journal, obj, "nodes", &journal->nodes, error))
    return FALSE;
  if (journal->id == NULL || journal->command == NULL || step == NULL)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED,
                        "journal %s: id, command or step is missing", journal->path), FALSE;
  if (!journal_step_from_string (step, &journal->step))
    {
      g_autofree char *shown = blkmig_escape (step);

      return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED,
                          "journal %s: unknown step '%s'", journal->path, shown), FALSE;
    }
  if (json_object_has_member (obj, "cookie"))
    {
      g_autofree char *text = json_to_string (json_object_get_member (obj, "cookie"), FALSE);
      journal->cookie = cookie_parse (text, -1, COOKIE_KIND_SOURCE, error);
      if (journal->cookie == NULL)
        return g_prefix_error (error, "journal %s: ", journal->path), FALSE;
    }
  return TRUE;
}

/* The journal's text, from a regular file of the effective user (not a link; a FIFO
 * planted there does not block the open). */
char *
journal_read (const char *path, GError **error)
{
  int fd = open (path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  struct stat st;
  g_autoptr(GIOChannel) channel = NULL;
  char *text = NULL;
  gsize len = 0;

  if (fd < 0 || fstat (fd, &st) != 0)
    {
      int saved = errno;
      if (fd >= 0)
        close (fd);
      return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED, "journal %s: %s", path,
                          g_strerror (saved)), NULL;
    }
  channel = g_io_channel_unix_new (fd);
  g_io_channel_set_close_on_unref (channel, TRUE);
  if (!S_ISREG (st.st_mode) || st.st_uid != geteuid () || st.st_size > JOURNAL_MAX_BYTES)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED,
                        "journal %s: not a regular file of uid %u under %d bytes", path,
                        (guint) geteuid (), JOURNAL_MAX_BYTES), NULL;
  if (g_io_channel_set_encoding (channel, NULL, error) != G_IO_STATUS_NORMAL
      || g_io_channel_read_to_end (channel, &text, &len, error) != G_IO_STATUS_NORMAL)
    return g_prefix_error (error, "journal %s: ", path), NULL;
  return text;
}

Journal *
journal_load (const char *path, GError **error)
{
  static const BlkmigJsonLimits limits = { JOURNAL_MAX_BYTES, 32, 1 << 20 };
  g_autoptr(Journal) journal = g_new0 (Journal, 1);
  g_autofree char *text = journal_read (path, error);
  g_autoptr(JsonNode) root = NULL;

  journal->path = g_strdup (path);
  if (text == NULL)
    return NULL;
  root = blkmig_json_parse (text, -1, &limits, error);
  if (root == NULL)
    return g_prefix_error (error, "journal %s: ", path), NULL;
  if (!JSON_NODE_HOLDS_OBJECT (root))
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED,
                        "journal %s: not a JSON object", path), NULL;
  if (!journal_parse (journal, json_node_get_object (root), error))
    return NULL;
  return g_steal_pointer (&journal);
}

Journal *
journal_find (const char *id, const char *command, GError **error)
{
  g_autoptr(Journal) name = journal_new (id, command);
  g_autofree char *dir = journal_dir ();
  struct stat st;

  if (lstat (name->path, &st) != 0)
    return NULL;
  if (!journal_dir_check (dir, FALSE, error))
    return NULL;
  return journal_load (name->path, error);
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
  g_autoptr(GDir) d = NULL;
  g_autoptr(GPtrArray) all = g_ptr_array_new_with_free_func ((GDestroyNotify) journal_free);
  const char *name;

  if (g_file_test (dir, G_FILE_TEST_EXISTS) && !journal_dir_check (dir, FALSE, error))
    return NULL;
  d = g_dir_open (dir, 0, NULL);

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
