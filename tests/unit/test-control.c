/* Unit tests of the control socket's guards: operation ids, the socket's path and
 * mode, a stale socket replaced, a live one or a planted file refused. */
#include <sys/stat.h>
#include <unistd.h>

#include <gio/gunixsocketaddress.h>
#include <glib/gstdio.h>

#include "common/error.h"
#include "src/control.h"

#define MIGRATION_ID "0f3c5e2a9b1d4c7e8f60a1b2c3d4e5f6"

static char *
state_dir_new (void)
{
  g_autoptr(GError) error = NULL;
  char *dir = g_dir_make_tmp ("blkmig-control-XXXXXX", &error);

  g_assert_no_error (error);
  g_setenv ("BLKMIG_STATE_DIR", dir, TRUE);
  return dir;
}

static void
state_dir_remove (char *dir)
{
  g_autoptr(GDir) d = g_dir_open (dir, 0, NULL);
  const char *name;

  while (d != NULL && (name = g_dir_read_name (d)) != NULL)
    {
      g_autofree char *path = g_build_filename (dir, name, NULL);
      g_unlink (path);
    }
  g_rmdir (dir);
  g_free (dir);
}

static void
test_ids (void)
{
  static const char *const good[] = { "a", "evac-vm1", "0f3c5e2a9b1d4c7e8f60a1b2c3d4e5f6",
                                      "VM_7.disk-2", "0123456789012345678901234567890123456789",
                                      NULL };
  static const char *const bad[] = { "", ".", "..", "../x", "a/b", "-rf", ".hidden", "a b",
                                     "x\n", "\033[2J", "01234567890123456789012345678901234567890",
                                     "é", NULL };

  for (guint i = 0; good[i] != NULL; i++)
    g_assert_true (control_check_id (good[i], NULL));
  for (guint i = 0; bad[i] != NULL; i++)
    {
      g_autoptr(GError) error = NULL;

      g_assert_false (control_check_id (bad[i], &error));
      g_assert_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE);
      g_assert_null (strchr (error->message, '\033'));  /* escaped */
    }
  g_assert_false (control_check_id (NULL, NULL));
}

static void
test_path_too_long (void)
{
  g_autofree char *longdir = g_strnfill (100, 'd');
  g_autoptr(GError) error = NULL;
  g_autofree char *path = NULL;

  g_setenv ("BLKMIG_STATE_DIR", longdir, TRUE);
  path = control_socket_path ("vm1", &error);
  g_assert_null (path);
  g_assert_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE);
  g_assert_nonnull (strstr (error->message, "the path is too long for a socket"));
}

static void
test_open_mode_and_busy (void)
{
  char *dir = state_dir_new ();
  g_autoptr(GCancellable) cancellable = g_cancellable_new ();
  g_autoptr(GError) error = NULL;
  g_autofree char *path = g_build_filename (dir, "vm1.ctl", NULL);
  Control *first = control_open ("vm1", MIGRATION_ID, "migrate", cancellable, &error);
  Control *second;
  struct stat st;

  g_assert_no_error (error);
  g_assert_cmpint (lstat (path, &st), ==, 0);
  g_assert_true (S_ISSOCK (st.st_mode));
  g_assert_cmpuint (st.st_mode & 0777, ==, 0600);
  second = control_open ("vm1", MIGRATION_ID, "migrate", cancellable, &error);
  g_assert_null (second);
  g_assert_error (error, BLKMIG_ERROR, BLKMIG_ERROR_BUSY);
  g_assert_nonnull (strstr (error->message, "operation vm1 is already running"));
  control_close (first);
  g_assert_cmpint (lstat (path, &st), ==, -1);  /* gone with the operation */
  state_dir_remove (dir);
}

/* A socket nobody listens on any more (a killed blkmig's) is replaced. */
static void
test_stale_replaced (void)
{
  char *dir = state_dir_new ();
  g_autofree char *path = g_build_filename (dir, "vm1.ctl", NULL);
  g_autoptr(GSocket) sock = g_socket_new (G_SOCKET_FAMILY_UNIX, G_SOCKET_TYPE_STREAM,
                                          G_SOCKET_PROTOCOL_DEFAULT, NULL);
  g_autoptr(GSocketAddress) addr = g_unix_socket_address_new (path);
  g_autoptr(GCancellable) cancellable = g_cancellable_new ();
  g_autoptr(GError) error = NULL;
  Control *control;

  g_assert_true (g_socket_bind (sock, addr, FALSE, NULL));
  g_socket_close (sock, NULL);  /* the file stays, nobody answers */
  control = control_open ("vm1", MIGRATION_ID, "move", cancellable, &error);
  g_assert_no_error (error);
  control_close (control);
  state_dir_remove (dir);
}

/* Whatever else sits at the path is not ours to remove. */
static void
test_planted_file_refused (void)
{
  char *dir = state_dir_new ();
  g_autofree char *path = g_build_filename (dir, "vm1.ctl", NULL);
  g_autoptr(GCancellable) cancellable = g_cancellable_new ();
  g_autoptr(GError) error = NULL;

  g_assert_true (g_file_set_contents (path, "not a socket", -1, NULL));
  g_assert_null (control_open ("vm1", MIGRATION_ID, "move", cancellable, &error));
  g_assert_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED);
  g_assert_nonnull (strstr (error->message, "exists and is not a control socket of this user"));
  g_assert_true (g_file_test (path, G_FILE_TEST_IS_REGULAR));
  state_dir_remove (dir);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/control/ids", test_ids);
  g_test_add_func ("/control/path-too-long", test_path_too_long);
  g_test_add_func ("/control/open-mode-and-busy", test_open_mode_and_busy);
  g_test_add_func ("/control/stale-replaced", test_stale_replaced);
  g_test_add_func ("/control/planted-file-refused", test_planted_file_refused);
  return g_test_run ();
}
