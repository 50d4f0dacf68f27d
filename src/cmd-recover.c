/* blkmig recover: finish or roll back what a killed blkmig left, from its journal. */
#include <glib/gstdio.h>
#include <stdio.h>

#include "common/error.h"
#include "qmp/qmp-commands.h"
#include "src/commands.h"
#include "src/control.h"
#include "src/disks.h"
#include "src/replica.h"
#include "src/session.h"
#include "src/util.h"
#include "src/volumes.h"

/* How a recovery that finished the operation (rather than rolling it back) begins. */
#define RECOVER_HAD_COMPLETED "had completed"

typedef struct {
  char *id;
  gboolean all;
  char **qmp;                 /* overrides: source first, then destination */
  FILE *report;               /* where "recover: ID ...: what was done" goes */
} RecoverArgs;

/* Whether the QEMU behind @path is gone, given a moment: one whose connection
 * broke may be exiting (a destination whose incoming migration failed, once the
 * source side was rolled back, exits and closes its socket a little later). */
static gboolean
recover_gone (const char *path)
{
  for (int i = 0; i < 20; i++)
    {
      if (util_qmp_gone (path))
        return TRUE;
      g_usleep (100 * 1000);
    }
  return FALSE;
}

/* The sockets to use: the command line's, else the ones the journal recorded.
 * *gone is set when no QEMU listens there any more: nothing of ours is left in it. */
static QmpClient *
recover_connect (const RecoverArgs *args, guint index, const char *recorded, const char *label,
                 gboolean *gone)
{
  const char *path = args->qmp != NULL && g_strv_length (args->qmp) > index
                     ? args->qmp[index] : recorded;
  g_autoptr(GError) error = NULL;
  QmpClient *qmp;

  *gone = path == NULL;
  if (path == NULL)
    return NULL;
  qmp = qmp_client_connect_sync (path, label, NULL, &error);
  if (qmp != NULL)
    return qmp;
  *gone = recover_gone (path);
  if (!common_options.quiet)
    g_printerr ("blkmig: %s%s\n", error->message, *gone ? " (that QEMU is gone)" : "");
  return NULL;
}

static const char *
recover_migration_status (QmpClient *qmp)
{
  g_autoptr(QmpMigrateInfo) info = qmp != NULL ? qmp_query_migrate (qmp, NULL, NULL) : NULL;
  static char status[32];

  g_strlcpy (status, info != NULL ? info->status ?: "none" : "unknown", sizeof status);
  return status;
}

/* A result cookie for finish, from the newest cookie the journal holds. */
static Cookie *
recover_result (const Journal *journal, const char *status)
{
  return cookie_new_result (journal->cookie, status, NULL);
}

/* Rolls back every side we can reach; FALSE if a side that may hold our state
 * could not be reached (the journal then stays).  A side that is gone is fine. */
static gboolean
recover_rollback (const Journal *journal, QmpClient *src, QmpClient *dst, gboolean unreachable,
                  const char **done)
{
  if (src != NULL)
    session_abort (src, journal->cookie);
  if (dst != NULL)
    session_abort (dst, journal->cookie);
  if (unreachable)
    return *done = "a QEMU could not be reached: nothing removed there", FALSE;
  journal_remove_created (journal, TRUE);
  *done = "rolled back: the source runs on its own disks";
  return TRUE;
}

static gboolean
recover_finish (const Journal *journal, QmpClient *src, QmpClient *dst, const char *status,
                const char **done, GError **error)
{
  g_autoptr(Cookie) result = recover_result (journal, status);

  if (result == NULL || dst == NULL)
    return *done = "completed, but the destination could not be finished", FALSE;
  if (src != NULL)
    session_abort (src, journal->cookie);  /* leftovers only: nothing is running */
  if (!session_finish (dst, result, journal, FALSE, NULL, error))
    return *done = "completed, but finishing the destination failed", FALSE;
  *done = RECOVER_HAD_COMPLETED ": the destination was finished";
  return TRUE;
}

static gboolean
recover_migration (const RecoverArgs *args, const Journal *journal, const char **done,
                   GError **error)
{
  gboolean src_gone, dst_gone;
  g_autoptr(QmpClient) src = recover_connect (args, 0, journal->source_qmp, "source", &src_gone);
  g_autoptr(QmpClient) dst = recover_connect (args, 1, journal->dest_qmp, "destination", &dst_gone);
  gboolean unreachable = (src == NULL && !src_gone) || (dst == NULL && !dst_gone);
  const char *status = recover_migration_status (src);

  if (g_str_equal (status, "completed") || journal->step == JOURNAL_STEP_COMPLETED)
    return recover_finish (journal, src, dst, "completed", done, error);
  if (journal->step == JOURNAL_STEP_COPIED || journal->step == JOURNAL_STEP_MOVED)
    return recover_finish (journal, src, dst, journal_step_to_string (journal->step), done,
                           error);
  return recover_rollback (journal, src, dst, unreachable, done);
}

/* perform's journal: the source only. */
static gboolean
recover_source (const RecoverArgs *args, const Journal *journal, const char **done)
{
  gboolean gone;
  g_autoptr(QmpClient) src = recover_connect (args, 0, journal->source_qmp, "source", &gone);

  if (src == NULL && gone)
    return *done = "the source QEMU is gone: nothing of ours is left in it", TRUE;
  if (src == NULL)
    return *done = "the source could not be reached", FALSE;
  session_abort (src, journal->cookie);
  *done = g_str_equal (recover_migration_status (src), "completed")
          ? RECOVER_HAD_COMPLETED ": leftovers removed from the source"
          : "rolled back: the source runs on its own disks";
  return TRUE;
}

/* prepare's journal: the destination only. */
static gboolean
recover_destination (const RecoverArgs *args, const Journal *journal, const char **done,
                     GError **error)
{
  gboolean gone;
  g_autoptr(QmpClient) dst = recover_connect (args, 0, journal->dest_qmp, "destination", &gone);

  if (dst == NULL && gone)
    {
      journal_remove_created (journal, TRUE);
      return *done = "rolled back: the destination QEMU is gone, created targets removed", TRUE;
    }
  if (dst == NULL)
    return *done = "the destination could not be reached", FALSE;
  if (g_str_equal (recover_migration_status (dst), "completed")
      && journal->cookie->kind >= COOKIE_KIND_DESTINATION)
    return recover_finish (journal, NULL, dst, "completed", done, error);
  session_abort (dst, journal->cookie);
  journal_remove_created (journal, TRUE);
  *done = "rolled back: exports, NBD server and created targets removed";
  return TRUE;
}

static gboolean
recover_move (const RecoverArgs *args, const Journal *journal, const char **done,
              GError **error)
{
  gboolean gone;
  g_autoptr(QmpClient) qmp = recover_connect (args, 0, journal->source_qmp, "qemu", &gone);
  g_autoptr(GPtrArray) disks = NULL;
  DiskInfo *disk;

  if (qmp == NULL)
    return *done = "the VM's QEMU could not be reached (offline: use blkmig reconcile)", FALSE;
  disks = disks_query (qmp, TRUE, NULL, error);
  if (disks == NULL)
    return FALSE;
  disk = disks_find (disks, journal->disk);
  if (disk != NULL && g_strcmp0 (disk->file, journal->new_image) == 0)
    return *done = RECOVER_HAD_COMPLETED ": the guest runs on the new image", TRUE;
  session_abort_blockdevs (qmp, journal->id);
  journal_remove_created (journal, TRUE);
  *done = "rolled back: the guest runs on its old image, the new one is removed";
  return TRUE;
}

/* snapshot and merge: one QEMU, the VM's own */
static gboolean
recover_chain (const RecoverArgs *args, const Journal *journal, const char **done,
               GError **error)
{
  gboolean gone;
  g_autoptr(QmpClient) qmp = recover_connect (args, 0, journal->source_qmp, "qemu", &gone);

  if (qmp == NULL)
    return *done = "the VM's QEMU could not be reached (offline: use blkmig reconcile)", FALSE;
  if (g_str_equal (journal->command, "snapshot"))
    return snapshot_recover (qmp, journal, done, error);
  return merge_recover (qmp, journal, done, error);
}

static gboolean
recover_one (const RecoverArgs *args, Journal *journal, gboolean *completed, GError **error)
{
  const char *done = "unknown journal";
  gboolean ok;

  if (g_str_equal (journal->command, "snapshot") || g_str_equal (journal->command, "merge"))
    ok = recover_chain (args, journal, &done, error);
  else if (journal->cookie == NULL && !g_str_equal (journal->command, "move"))
    ok = (done = "nothing had been started", TRUE);
  else if (g_str_equal (journal->command, "begin"))
    ok = (done = "an offer no perform finished: withdrawn", TRUE);
  else if (g_str_equal (journal->command, "migrate"))
    ok = recover_migration (args, journal, &done, error);
  else if (g_str_equal (journal->command, "perform"))
    ok = recover_source (args, journal, &done);
  else if (g_str_equal (journal->command, "prepare"))
    ok = recover_destination (args, journal, &done, error);
  else if (g_str_equal (journal->command, "move"))
    ok = recover_move (args, journal, &done, error);
  else
    ok = FALSE;
  if (!common_options.quiet)
    fprintf (args->report, "recover: %s (%s, at step %s): %s\n", journal->id,
             journal->command, journal_step_to_string (journal->step), done);
  if (ok)
    {
      journal_remove_created (journal, FALSE);  /* finished: only our private directories */
      journal_remove (journal);
      control_remove_dead (journal->op_id != NULL ? journal->op_id : journal->id, FALSE);
      *completed = g_str_has_prefix (done, RECOVER_HAD_COMPLETED);
    }
  else if (error != NULL && *error == NULL)
    g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_QMP, "%s: %s; the journal %s stays",
                 journal->id, done, journal->path);
  return ok;
}

gboolean
recover_journal (Journal *journal, FILE *report, gboolean *completed, GError **error)
{
  RecoverArgs args = { .report = report };

  *completed = FALSE;
  return recover_one (&args, journal, completed, error);
}

static void
recover_args_clear (RecoverArgs *args)
{
  g_free (args->id);
  g_strfreev (args->qmp);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (RecoverArgs, recover_args_clear)

/* A replication whose failover was interrupted (the record says "failover")
 * is failed over again: every step of it can run twice. */
static gboolean
recover_replica (const char *id, guint *handled, GError **error)
{
  g_autoptr(Replica) replica = NULL;
  g_autoptr(GError) none = NULL;

  if ((replica = replica_load (id, &none)) == NULL || !g_str_equal (replica->state, "failover"))
    return TRUE;
  (*handled)++;
  if (!replica_failover (replica, NULL, error))
    return FALSE;
  if (!common_options.quiet)
    printf ("recover: replication %s failed over to checkpoint %u\n", id, replica->checkpoint);
  return TRUE;
}

gboolean
cmd_recover (int argc, char **argv, GCancellable *cancellable, GError **error)
{
  g_auto(RecoverArgs) args = { .report = stdout };
  const GOptionEntry entries[] = {
    { "id", 0, 0, G_OPTION_ARG_STRING, &args.id, "Recover the operation with this id", "ID" },
    { "all", 0, 0, G_OPTION_ARG_NONE, &args.all, "Recover every operation with a journal", NULL },
    { "qmp", 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &args.qmp,
      "QMP socket to use instead of the journal's (source first, then destination)", "PATH" },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr(GPtrArray) journals = NULL;
  guint handled = 0;

  if (!command_parse (&argc, &argv, "", "Finish or roll back what an interrupted blkmig left "
                      "behind, as its journal describes.", entries, error))
    return FALSE;
  if ((args.id == NULL) == !args.all)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "give either --id ID or --all"), FALSE;
  if (args.id != NULL && recover_replica (args.id, &handled, error) == FALSE)
    return FALSE;
  journals = journal_load_all (error);
  if (journals == NULL)
    return FALSE;
  for (guint i = 0; i < journals->len; i++)
    {
      Journal *journal = journals->pdata[i];
      if (args.id != NULL && !g_str_equal (journal->id, args.id))
        continue;
      gboolean completed;

      handled++;
      if (control_answers (journal->op_id != NULL ? journal->op_id : journal->id))
        {
          if (!common_options.quiet)
            printf ("recover: %s (%s) is running (its control socket answers): not touched\n",
                    journal->id, journal->command);
          continue;
        }
      if (!recover_one (&args, journal, &completed, error))
        return FALSE;
    }
  if (handled == 0 && !common_options.quiet)
    printf ("recover: nothing to recover%s%s\n", args.id != NULL ? " for " : "",
            args.id != NULL ? args.id : "");
  return TRUE;
}
