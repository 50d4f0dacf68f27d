/* Unit tests of what operations on one host share: run slots (flock, freed by a
 * dying holder) and the bandwidth budget (live members counted, dead ones not). */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "src/host-share.h"

static char *
state_dir_new (void)
{
  char *dir = g_dir_make_tmp ("blkmig-share-XXXXXX", NULL);

  g_assert_nonnull (dir);
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

static gboolean
cancel_cb (gpointer data)
{
  g_cancellable_cancel (data);
  return G_SOURCE_REMOVE;
}

/* Two slots of two are taken: a third waits until cancelled; one freed is taken. */
static void
test_slots (void)
{
  char *dir = state_dir_new ();
  g_autoptr(GCancellable) cancellable = g_cancellable_new ();
  g_autoptr(GError) error = NULL;
  HostSlot *a = host_slot_acquire (2, cancellable, &error);
  HostSlot *b = host_slot_acquire (2, cancellable, &error);
  HostSlot *c;

  g_assert_no_error (error);
  g_assert_nonnull (a);
  g_assert_nonnull (b);
  g_timeout_add (300, cancel_cb, cancellable);
  c = host_slot_acquire (2, cancellable, &error);
  g_assert_null (c);
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_clear_error (&error);
  host_slot_release (a);
  g_cancellable_reset (cancellable);
  c = host_slot_acquire (2, cancellable, &error);
  g_assert_no_error (error);
  host_slot_release (b);
  host_slot_release (c);
  state_dir_remove (dir);
}

/* A holder that dies (SIGKILL) leaves the lock file, not the lock. */
static void
test_slot_freed_by_death (void)
{
  char *dir = state_dir_new ();
  g_autoptr(GCancellable) cancellable = g_cancellable_new ();
  g_autoptr(GError) error = NULL;
  HostSlot *slot;
  pid_t child = fork ();

  if (child == 0)
    {
      host_slot_acquire (1, NULL, NULL);
      pause ();
      _exit (0);
    }
  g_usleep (300 * 1000);
  g_timeout_add (300, cancel_cb, cancellable);
  g_assert_null (host_slot_acquire (1, cancellable, &error));  /* the child's */
  g_clear_error (&error);
  kill (child, SIGKILL);
  waitpid (child, NULL, 0);
  g_cancellable_reset (cancellable);
  slot = host_slot_acquire (1, cancellable, &error);
  g_assert_no_error (error);
  host_slot_release (slot);
  state_dir_remove (dir);
}

/* Members count each other's copying disks; a dead member's file counts nothing. */
static void
test_budget (void)
{
  char *dir = state_dir_new ();
  g_autoptr(GError) error = NULL;
  HostBudget *a = host_budget_join ("op-a", &error);
  HostBudget *b = host_budget_join ("op-b", &error);
  g_autofree char *dead = g_build_filename (dir, "op-dead.bw", NULL);

  g_assert_no_error (error);
  g_assert_true (g_file_set_contents (dead, "7\n", -1, NULL));  /* nobody holds it */
  g_assert_cmpuint (host_budget_share (a, 2), ==, 2);
  g_assert_cmpuint (host_budget_share (b, 3), ==, 5);
  g_assert_cmpuint (host_budget_share (a, 1), ==, 4);
  host_budget_leave (b);
  g_assert_cmpuint (host_budget_share (a, 1), ==, 1);
  host_budget_leave (a);
  state_dir_remove (dir);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/host-share/slots", test_slots);
  g_test_add_func ("/host-share/slot-freed-by-death", test_slot_freed_by_death);
  g_test_add_func ("/host-share/budget", test_budget);
  return g_test_run ();
}
