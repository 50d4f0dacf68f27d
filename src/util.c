/* Small helpers for commands: private directories, image creation, signals. */
#define _GNU_SOURCE  /* renameat2 */
#include "src/util.h"

#include <fcntl.h>
#include <stdio.h>

#include <dirent.h>
#include <errno.h>
#include <glib/gstdio.h>
#include <gio/gunixsocketaddress.h>
#include <glib-unix.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-glib/json-glib.h>

#include "common/error.h"
#include "qmp/qmp-json.h"

/* Where util_private_dir_new makes its directories. */
static const char *
util_private_parent (void)
{
  const char *runtime = g_getenv ("XDG_RUNTIME_DIR");

  if (runtime != NULL && g_file_test (runtime, G_FILE_TEST_IS_DIR))
    return runtime;
  return g_get_tmp_dir ();
}

char *
util_private_dir_new (GError **error)
{
  g_autofree char *tmpl = g_build_filename (util_private_parent (), "blkmig-XXXXXX", NULL);
  char *dir;

  dir = g_mkdtemp_full (tmpl, 0700);
  if (dir == NULL)
    {
      int saved = errno;
      g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED,
                   "cannot create a private directory %s: %s", tmpl, g_strerror (saved));
      return NULL;
    }
  return g_steal_pointer (&tmpl);
}

/* "PREFIX" followed by the six characters mkdtemp puts in place of XXXXXX. */
static gboolean
util_is_mkdtemp_name (const char *name, const char *prefix)
{
  if (!g_str_has_prefix (name, prefix) || strlen (name) != strlen (prefix) + 6)
    return FALSE;
  for (const char *p = name + strlen (prefix); *p != '\0'; p++)
    if (!g_ascii_isalnum (*p))
      return FALSE;
  return TRUE;
}

gboolean
util_is_private_dir (const char *path)
{
  g_autofree char *base = g_path_get_basename (path);
  g_autofree char *parent = g_path_get_dirname (path);
  g_autofree char *there = g_canonicalize_filename (parent, "/");
  g_autofree char *tmp = g_canonicalize_filename (g_get_tmp_dir (), "/");
  const char *runtime = g_getenv ("XDG_RUNTIME_DIR");
  g_autofree char *run = runtime != NULL ? g_canonicalize_filename (runtime, "/") : NULL;
  struct stat st;

  if (lstat (path, &st) != 0 || !S_ISDIR (st.st_mode) || st.st_uid != geteuid ()
      || (st.st_mode & 077) != 0)
    return FALSE;
  /* either parent: recover may run with another environment than the command */
  return util_is_mkdtemp_name (base, UTIL_STAGING_PREFIX)
         || (util_is_mkdtemp_name (base, "blkmig-")
             && (g_str_equal (there, tmp) || g_strcmp0 (there, run) == 0));
}

void
util_private_dir_remove (const char *dir)
{
  int fd = dir != NULL ? open (dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : -1;
  struct stat st;
  DIR *d;
  struct dirent *entry;

  /* through the directory's own fd: a link swapped in for it is never followed,
   * and only a directory of ours that others cannot enter is emptied */
  if (fd < 0)
    return;
  if (fstat (fd, &st) != 0 || st.st_uid != geteuid () || (st.st_mode & 077) != 0
      || (d = fdopendir (fd)) == NULL)
    {
      close (fd);
      return;
    }
  while ((entry = readdir (d)) != NULL)
    if (!g_str_equal (entry->d_name, ".") && !g_str_equal (entry->d_name, ".."))
      unlinkat (dirfd (d), entry->d_name, 0);
  closedir (d);
  g_rmdir (dir);
}

/* Runs qemu-img @argv; a failure is BLKMIG_ERROR_DISK "cannot @what @path: its words". */
static gboolean
util_qemu_img_run (const char *const *argv, const char *what, const char *path,
                   GCancellable *cancellable, GError **error)
{
  g_autoptr(GSubprocess) proc = NULL;
  g_autofree char *err_text = NULL;

  proc = g_subprocess_newv (argv, G_SUBPROCESS_FLAGS_STDOUT_SILENCE
                                  | G_SUBPROCESS_FLAGS_STDERR_PIPE, error);
  if (proc == NULL)
    return FALSE;
  if (!g_subprocess_communicate_utf8 (proc, NULL, cancellable, NULL, &err_text, error))
    return FALSE;
  if (g_subprocess_get_successful (proc))
    return TRUE;
  g_strstrip (err_text);
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK, "cannot %s %s: %s", what, path, err_text);
  return FALSE;
}

/* qemu-img create, with a backing file (-u: not opened, the VM holds its lock) when
 * @backing is not NULL. */
static gboolean
util_qemu_img_create (const char *path, const char *format, gint64 size, const char *backing,
                      const char *backing_format, GCancellable *cancellable, GError **error)
{
  g_autofree char *size_str = g_strdup_printf ("%" G_GINT64_FORMAT, size);
  const char *argv[] = { "qemu-img", "create", "-q", "-f", format, path, size_str,
                         "-u", "-b", backing, "-F", backing_format, NULL };

  if (backing == NULL)
    argv[7] = NULL;
  return util_qemu_img_run (argv, "create", path, cancellable, error);
}

gboolean
util_rebase_unsafe (const char *path, const char *backing, const char *backing_format,
                    GCancellable *cancellable, GError **error)
{
  const char *argv[] = { "qemu-img", "rebase", "-q", "-u", "-f", "qcow2", "-b", backing,
                         "-F", backing_format, path, NULL };

  return util_qemu_img_run (argv, "rebase", path, cancellable, error);
}

gboolean
util_commit_into (const char *top, const char *base, GCancellable *cancellable, GError **error)
{
  const char *argv[] = { "qemu-img", "commit", "-q", "-f", "qcow2", "-b", base, top, NULL };

  return util_qemu_img_run (argv, "commit", top, cancellable, error);
}

gboolean
util_image_create (const char *path, const char *format, gint64 size,
                   GCancellable *cancellable, GError **error)
{
  return util_qemu_img_create (path, format, size, NULL, NULL, cancellable, error);
}

char *
util_staging_dir_new (const char *parent, GError **error)
{
  g_autofree char *tmpl = g_build_filename (parent, UTIL_STAGING_PREFIX "XXXXXX", NULL);

  if (g_mkdtemp_full (tmpl, 0700) != NULL)
    return g_steal_pointer (&tmpl);
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK, "cannot create a directory in %s: %s",
               parent, g_strerror (errno));
  return NULL;
}

/* rename that fails rather than replace anything at @to (a file, a link, a socket);
 * link + unlink where the filesystem has no RENAME_NOREPLACE. */
static int
util_rename_noreplace (const char *from, const char *to)
{
  if (renameat2 (AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
    return 0;
  if (errno != EINVAL && errno != ENOSYS)
    return -1;
  if (link (from, to) != 0)
    return -1;
  return unlink (from);
}

/* Renames @made (in a staging directory) to @path, never replacing anything. */
static gboolean
util_place_new (const char *made, const char *path, GError **error)
{
  if (util_rename_noreplace (made, path) == 0)
    return TRUE;
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK, "cannot create %s: %s", path,
               g_strerror (errno));
  g_unlink (made);
  return FALSE;
}

gboolean
util_image_create_new (const char *path, const char *staging, const char *format, gint64 size,
                       GCancellable *cancellable, GError **error)
{
  g_autofree char *base = g_path_get_basename (path);
  g_autofree char *made = g_build_filename (staging, base, NULL);

  return util_image_create (made, format, size, cancellable, error)
         && util_place_new (made, path, error);
}

gboolean
util_overlay_create_new (const char *path, const char *staging, const char *backing,
                         const char *backing_format, gint64 size, GCancellable *cancellable,
                         GError **error)
{
  g_autofree char *base = g_path_get_basename (path);
  g_autofree char *made = g_build_filename (staging, base, NULL);

  return util_qemu_img_create (made, "qcow2", size, backing, backing_format, cancellable, error)
         && util_place_new (made, path, error);
}

char *
util_sanitize_name (const char *name)
{
  char *out = g_strdup (name);

  for (char *p = out; *p != '\0'; p++)
    if (!g_ascii_isalnum (*p) && *p != '-' && *p != '_' && *p != '.')
      *p = '_';
  return out;
}

static gboolean
util_signal_cb (gpointer user_data)
{
  g_cancellable_cancel (user_data);
  return G_SOURCE_CONTINUE;
}

void
util_cancel_on_signals (GCancellable *cancellable)
{
  g_unix_signal_add_full (G_PRIORITY_HIGH, SIGINT, util_signal_cb,
                          g_object_ref (cancellable), g_object_unref);
  g_unix_signal_add_full (G_PRIORITY_HIGH, SIGTERM, util_signal_cb,
                          g_object_ref (cancellable), g_object_unref);
}

char *
util_human_size (gint64 bytes)
{
  static const char *const units[] = { "bytes", "KiB", "MiB", "GiB", "TiB", "PiB" };
  double value = bytes;
  guint unit = 0;

  while (value >= 1024 && unit + 1 < G_N_ELEMENTS (units))
    {
      value /= 1024;
      unit++;
    }
  if (value == (gint64) value)
    return g_strdup_printf ("%" G_GINT64_FORMAT " %s", (gint64) value, units[unit]);
  return g_strdup_printf ("%.1f %s", value, units[unit]);
}

char *
util_format_bytes (gint64 bytes)
{
  g_autofree char *human = util_human_size (bytes);

  return g_strdup_printf ("%s (%" G_GINT64_FORMAT " bytes)", human, bytes);
}

JsonNode *
util_qemu_img_info (const char *path, const char *format, gboolean chain, gboolean force_share,
                    GCancellable *cancellable, GError **error)
{
  g_autoptr(GPtrArray) argv = g_ptr_array_new ();
  g_autoptr(GSubprocess) proc = NULL;
  g_autofree char *out = NULL;
  g_autofree char *err_text = NULL;
  JsonNode *info;

  g_ptr_array_add (argv, "qemu-img");
  g_ptr_array_add (argv, "info");
  g_ptr_array_add (argv, "--output=json");
  if (force_share)
    g_ptr_array_add (argv, "-U");
  if (chain)
    g_ptr_array_add (argv, "--backing-chain");
  if (format != NULL)
    {
      g_ptr_array_add (argv, "-f");
      g_ptr_array_add (argv, (char *) format);
    }
  g_ptr_array_add (argv, (char *) path);
  g_ptr_array_add (argv, NULL);
  proc = g_subprocess_newv ((const char *const *) argv->pdata,
                            G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_PIPE, error);
  if (proc == NULL
      || !g_subprocess_communicate_utf8 (proc, NULL, cancellable, &out, &err_text, error))
    return NULL;
  info = g_subprocess_get_successful (proc) ? json_from_string (out, NULL) : NULL;
  if (info != NULL && JSON_NODE_HOLDS (info, chain ? JSON_NODE_ARRAY : JSON_NODE_OBJECT))
    return info;
  if (info != NULL)
    json_node_unref (info);
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK, "cannot read %s: %s", path,
               g_strstrip (err_text));
  return NULL;
}

gboolean
util_image_size (const char *path, const char *format, gint64 *size, GCancellable *cancellable,
                 GError **error)
{
  g_autoptr(JsonNode) info = util_qemu_img_info (path, format, FALSE, TRUE, cancellable, error);

  if (info == NULL)
    return FALSE;
  *size = qmp_member_int (json_node_get_object (info), "virtual-size", 0);
  return TRUE;
}

gboolean
util_qmp_gone (const char *path)
{
  g_autoptr(GSocketClient) client = g_socket_client_new ();
  g_autoptr(GSocketAddress) addr = g_unix_socket_address_new (path);
  g_autoptr(GSocketConnection) conn = NULL;
  g_autoptr(GError) error = NULL;

  conn = g_socket_client_connect (client, G_SOCKET_CONNECTABLE (addr), NULL, &error);
  return conn == NULL && (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CONNECTION_REFUSED)
                          || g_error_matches (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND));
}
