/* Run slots and the bandwidth budget shared by the operations on one host, through flock'd files in the state directory. */
#include "src/host-share.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/file.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "common/async.h"
#include "common/error.h"
#include "qmp/qmp-client.h"
#include "src/events.h"
#include "src/journal.h"

#define HOST_SLOT_POLL_MS 250
#define HOST_BUDGET_RECORD 32   /* "DISKS\n", space-padded: one pwrite, read whole */

/* A file of ours in the state directory: created 0600, never through a link. */
static int
host_share_open (const char *name, GError **error)
{
  g_autofree char *dir = journal_dir ();
  g_autofree char *path = g_build_filename (dir, name, NULL);
  int fd;

  if (!journal_dir_check (dir, TRUE, error))
    return -1;
  fd = open (path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0)
    g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED, "%s: %s", path, g_strerror (errno));
  return fd;
}

/* ---- run slots ------------------------------------------------------------- */

struct _HostSlot {
  int fd;
};

/* A free slot below @max, held; -1 when every one is taken. */
static int
host_slot_try (guint max, GError **error)
{
  for (guint k = 0; k < max; k++)
    {
      g_autofree char *name = g_strdup_printf ("slot-%u.lock", k);
      int fd = host_share_open (name, error);

      if (fd < 0)
        return -2;
      if (flock (fd, LOCK_EX | LOCK_NB) == 0)
        return fd;
      close (fd);
    }
  return -1;
}

HostSlot *
host_slot_acquire (guint max, GCancellable *cancellable, GError **error)
{
  gboolean announced = FALSE;
  HostSlot *slot;
  int fd;

  while ((fd = host_slot_try (max, error)) == -1)
    {
      if (!announced)
        events_emit ("phase", "phase", qmp_str ("queued"), "max-parallel", qmp_int (max), NULL);
      announced = TRUE;
      blkmig_sleep (HOST_SLOT_POLL_MS, cancellable);
      if (g_cancellable_set_error_if_cancelled (cancellable, error))
        return NULL;
    }
  if (fd < 0)
    return NULL;
  slot = g_new0 (HostSlot, 1);
  slot->fd = fd;
  return slot;
}

void
host_slot_release (HostSlot *slot)
{
  if (slot == NULL)
    return;
  close (slot->fd);  /* the lock goes with it */
  g_free (slot);
}

/* ---- the bandwidth budget ---------------------------------------------------- */

struct _HostBudget {
  char *file;      /* NAME.bw */
  char *path;
  int fd;
};

HostBudget *
host_budget_join (const char *name, GError **error)
{
  g_autofree char *file = g_strdup_printf ("%s.bw", name);
  g_autofree char *dir = journal_dir ();
  int fd = host_share_open (file, error);
  HostBudget *budget;

  if (fd < 0)
    return NULL;
  if (flock (fd, LOCK_SH | LOCK_NB) != 0)
    {
      close (fd);
      return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_BUSY,
                          "%s is held by another operation", file), NULL;
    }
  budget = g_new0 (HostBudget, 1);
  budget->fd = fd;
  budget->path = g_build_filename (dir, file, NULL);
  budget->file = g_steal_pointer (&file);
  host_budget_share (budget, 0);
  return budget;
}

void
host_budget_leave (HostBudget *budget)
{
  if (budget == NULL)
    return;
  g_unlink (budget->path);
  close (budget->fd);
  g_free (budget->path);
  g_free (budget->file);
  g_free (budget);
}

/* The disks a live member copies; 0 for a dead one's file (nobody holds its lock)
 * or one that does not read as ours. */
static guint
host_budget_read_member (const char *dir, const char *file)
{
  g_autofree char *path = g_build_filename (dir, file, NULL);
  char text[HOST_BUDGET_RECORD + 1] = { 0 };
  int fd = open (path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  guint64 disks = 0;
  gboolean alive;

  if (fd < 0)
    return 0;
  alive = flock (fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  if (alive && pread (fd, text, HOST_BUDGET_RECORD, 0) > 0)
    g_ascii_string_to_unsigned (g_strchomp (g_strchug (text)), 10, 0, 1024, &disks, NULL);
  close (fd);
  return alive ? (guint) disks : 0;
}

guint
host_budget_share (HostBudget *budget, guint copying)
{
  g_autofree char *dir = journal_dir ();
  g_autoptr(GDir) d = g_dir_open (dir, 0, NULL);
  char text[HOST_BUDGET_RECORD + 1];
  const char *file;
  guint total = copying;

  g_snprintf (text, sizeof text, "%-*u\n", HOST_BUDGET_RECORD - 1, copying);
  if (pwrite (budget->fd, text, HOST_BUDGET_RECORD, 0) != HOST_BUDGET_RECORD)
    g_debug ("cannot write %s: %s", budget->path, g_strerror (errno));
  while (d != NULL && (file = g_dir_read_name (d)) != NULL)
    if (g_str_has_suffix (file, ".bw") && !g_str_equal (file, budget->file))
      total += host_budget_read_member (dir, file);
  return total;
}

gboolean
host_budget_is_dead (const char *path)
{
  int fd = open (path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  gboolean dead;

  if (fd < 0)
    return FALSE;
  dead = flock (fd, LOCK_EX | LOCK_NB) == 0;
  close (fd);
  return dead;
}
