/* blkmig move: move one disk of a running VM to new storage on the same host. */
#include <glib/gstdio.h>

#include "common/error.h"
#include "jobs/job-group.h"
#include "qmp/qmp-commands.h"
#include "src/commands.h"
#include "src/control.h"
#include "src/disks.h"
#include "src/events.h"
#include "src/journal.h"
#include "src/move-verify.h"
#include "src/names.h"
#include "src/op-id.h"
#include "src/options.h"
#include "src/progress.h"
#include "src/util.h"

#define MOVE_ABORT_TIMEOUT_MS (30 * 1000)

typedef struct {
  char *qmp;
  char *disk;
  char *to;
  char *format;
  gboolean delete_source;
  gboolean verify;
  MirrorTuning mirror;
  gboolean hold;
  char *op_id;
  ControlHostOptions host;
  gboolean keep_target;
} MoveArgs;

static void
move_args_clear (MoveArgs *args)
{
  g_free (args->qmp);
  g_free (args->disk);
  g_free (args->to);
  g_free (args->format);
  g_free (args->op_id);
  mirror_tuning_clear (&args->mirror);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (MoveArgs, move_args_clear)

typedef struct {
  QmpClient *qmp;
  DiskInfo *disk;             /* borrowed from the query */
  char *node;                 /* our node for the new image */
  char *job_id;
  gboolean created;
  gboolean was_running;     /* --verify paused it */
  const char *tag;          /* the move's random id; names derive from it */
  Journal *journal;
  QmpBlockdevImage target;  /* how our node for the new image was opened */
} MoveRun;

/* The guest keeps its cache mode: with cache=none the new image is O_DIRECT too.
 * While the mirror copies, zeros it reads (a thick source) become unmapping zero
 * writes, so the new image stays thin; move_restore_zeroes undoes that for the guest. */
static gboolean
move_open_target (MoveRun *run, const MoveArgs *args, const char *format,
                  GCancellable *cancellable, GError **error)
{
  run->target = (QmpBlockdevImage) {
    .node_name = run->node,
    .format = format,
    .filename = args->to,
    .set_cache = TRUE,
    .cache_direct = run->disk->cache_direct,
    .cache_no_flush = run->disk->cache_no_flush,
    .discard = "unmap",
    .detect_zeroes = "unmap",
  };

  if (g_file_test (args->to, G_FILE_TEST_EXISTS))
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                        "%s: %s already exists; move creates its target",
                        run->disk->name, args->to), FALSE;
  journal_add_created (run->journal, args->to);
  if (!journal_write (run->journal, JOURNAL_STEP_MIRROR, error))
    return FALSE;
  if (!util_image_create (args->to, format, run->disk->virtual_size, cancellable, error))
    return FALSE;
  run->created = TRUE;
  return qmp_blockdev_add_image (run->qmp, &run->target, cancellable, error);
}

/* After the pivot the guest runs on our node: its detect-zeroes goes back to what
 * the old disk had (scanning every guest write is not the guest's setting); discard
 * stays unmap.  A failure costs only that scan: the move itself succeeded. */
static void
move_restore_zeroes (MoveRun *run)
{
  g_autoptr(GError) error = NULL;

  run->target.detect_zeroes = run->disk->detect_zeroes != NULL ? run->disk->detect_zeroes : "off";
  if (!qmp_blockdev_reopen_image (run->qmp, &run->target, NULL, &error))
    g_printerr ("blkmig: warning: %s: the new image keeps detect-zeroes=unmap: %s\n",
                run->disk->name, error->message);
}

/* stop / cont around a verified pivot (only a guest that was running is resumed) */
static gboolean
move_guest_run (MoveRun *run, gboolean run_it, GCancellable *cancellable, GError **error)
{
  g_autoptr(QmpStatusInfo) status = NULL;

  if (run_it)
    return !run->was_running || qmp_cont (run->qmp, cancellable, error);
  status = qmp_query_status (run->qmp, 0, cancellable, error);
  if (status == NULL)
    return FALSE;
  run->was_running = status->running;
  return !run->was_running || qmp_stop (run->qmp, cancellable, error);
}

static gboolean
move_mirror (MoveRun *run, JobGroup *group, const MoveArgs *args, GCancellable *cancellable,
             GError **error)
{
  BlkJob *job = job_group_add (group, run->job_id, run->disk->name);
  const char *device = *run->disk->device ? run->disk->device : run->disk->node;
  g_autoptr(Progress) progress = progress_start (group, common_options.quiet, 2000);
  MirrorTuning tuning = args->mirror;

  tuning.speed = control_mirror_speed (tuning.speed);  /* `blkmig ctl ID set-speed` */
  events_emit ("phase", "phase", qmp_str ("mirror"), NULL);
  if (!mirror_start (run->qmp, run->job_id, device, run->node, "full", NULL, &tuning, cancellable,
                     error))
    {
      job_group_forget (group, job);
      return FALSE;
    }
  if (!job_group_wait_ready_sync (group, cancellable, error)
      || !control_hold (NULL, group, cancellable, error))
    return FALSE;
  events_emit ("phase", "phase", qmp_str ("switch"), "mode", qmp_str ("move"), NULL);
  if (args->verify && !move_guest_run (run, FALSE, cancellable, error))
    return FALSE;
  /* Like vdsm's ILLEGAL leaf: from here on the new image may be the one in use. */
  if (!journal_write (run->journal, JOURNAL_STEP_SUPERSEDED, error)
      || !job_group_complete_all (group, cancellable, error)
      || !job_group_wait_ended_sync (group, cancellable, error)
      || !journal_write (run->journal, JOURNAL_STEP_PIVOTED, error))
    {
      if (args->verify)
        move_guest_run (run, TRUE, NULL, NULL);
      return FALSE;
    }
  move_restore_zeroes (run);
  /* The guest has not run since the pivot: old and new must be the same. */
  if (args->verify && !move_verify_pivot (run->qmp, run->disk->name, run->disk->node, run->node,
                                          run->tag, common_options.quiet,
                                          cancellable, error))
    return FALSE;  /* paused on purpose: the user decides */
  return !args->verify || move_guest_run (run, TRUE, cancellable, error);
}

/* After the pivot: drop the old node if the monitor still holds it, then the file. */
static void
move_delete_source (MoveRun *run)
{
  if (run->disk->node[0] != '#')
    qmp_blockdev_del (run->qmp, run->disk->node, NULL, NULL);
  if (g_unlink (run->disk->file) == 0 && !common_options.quiet)
    g_printerr ("blkmig: removed %s\n", run->disk->file);
}

static void
move_rollback (MoveRun *run, JobGroup *group)
{
  job_group_abort (group, MOVE_ABORT_TIMEOUT_MS);
  qmp_blockdev_del (run->qmp, run->node, NULL, NULL);
  if (run->created)
    journal_remove_created (run->journal, TRUE);  /* --keep-target: kept, listed */
}

static gboolean
move_parse (int argc, char **argv, MoveArgs *args, GError **error)
{
  const GOptionEntry entries[] = {
    { "qmp", 0, 0, G_OPTION_ARG_FILENAME, &args->qmp, "The VM's QMP socket", "PATH" },
    { "disk", 0, 0, G_OPTION_ARG_STRING, &args->disk, "The disk to move", "NAME" },
    { "to", 0, 0, G_OPTION_ARG_FILENAME, &args->to, "The new image (must not exist)", "PATH" },
    { "format", 'f', 0, G_OPTION_ARG_STRING, &args->format,
      "qcow2 or raw (default: the disk's current format)", "FORMAT" },
    { "delete-source", 0, 0, G_OPTION_ARG_NONE, &args->delete_source,
      "Remove the old image after the pivot", NULL },
    { "verify", 0, 0, G_OPTION_ARG_NONE, &args->verify,
      "Pause the guest for the pivot and compare the old and new images before it runs "
      "again (both must be named nodes, i.e. given with -blockdev)", NULL },
    COMMAND_MIRROR_ENTRIES (&args->mirror),
    COMMAND_HOLD_ENTRY (&args->hold),
    COMMAND_OP_ID_ENTRY (&args->op_id),
    COMMAND_HOST_ENTRIES (&args->host),
    COMMAND_KEEP_TARGET_ENTRY (&args->keep_target),
    COMMAND_EVENT_ENTRIES,
    G_OPTION_ENTRY_NULL
  };

  if (!command_parse (&argc, &argv, "", "Move one disk of a running VM to a new image on "
                      "this host; the guest then runs on the new image.", entries, error)
      || !command_require ("--qmp", args->qmp, error)
      || !command_require ("--disk", args->disk, error)
      || !command_require ("--to", args->to, error)
      || !options_mirror_check (&args->mirror, error)
      || !options_host_check (&args->host, error)
      || (args->op_id != NULL && !control_check_id (args->op_id, error)))
    return FALSE;
  /* After READY every guest write then reaches both images, so once the pivot is
   * asked for, the new image is never behind the old one (see reconcile). */
  if (args->mirror.copy_mode == NULL)
    args->mirror.copy_mode = g_strdup ("write-blocking");
  if (args->format != NULL && !g_str_equal (args->format, "qcow2")
      && !g_str_equal (args->format, "raw"))
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "--format must be qcow2 or raw, not '%s'", args->format), FALSE;
  return TRUE;
}

static Journal *
move_journal_new (const char *tag, const MoveArgs *args, const MoveRun *run)
{
  Journal *journal = journal_new (tag, "move");

  journal->source_qmp = g_strdup (args->qmp);
  journal->op_id = g_strdup (args->op_id);
  journal->keep_targets = args->keep_target;
  journal->disk = g_strdup (run->disk->name);
  journal->old_image = g_strdup (run->disk->file);
  journal->new_image = g_strdup (args->to);
  journal->new_node = g_strdup (run->node);
  journal->job = g_strdup (run->job_id);
  return journal;
}

gboolean
cmd_move (int argc, char **argv, GCancellable *cancellable, GError **error)
{
  g_auto(MoveArgs) args = { .mirror = MIRROR_TUNING_INIT };
  g_autoptr(GPtrArray) disks = NULL;
  g_autoptr(JobGroup) group = NULL;
  g_autofree char *tag = NULL;
  g_autofree char *done = NULL;
  g_autofree char *node = NULL;
  g_autofree char *job_id = NULL;
  const char *const *names;
  g_autoptr(GPtrArray) chosen = NULL;
  g_autoptr(QmpClient) qmp = NULL;
  g_autoptr(Journal) journal = NULL;
  g_autoptr(Control) control = NULL;  /* closed last: `ctl cancel` waits for the rollback */
  MoveRun run = { 0 };

  if (!move_parse (argc, argv, &args, error))
    return FALSE;
  /* --op-id: a re-run finds this run's journal and names (op-id.h) */
  tag = args.op_id != NULL ? op_id_migration_id (args.op_id) : g_uuid_string_random ();
  if ((control = control_open (args.op_id != NULL ? args.op_id : tag, tag, "move", cancellable,
                               error)) == NULL
      || (args.op_id != NULL && !op_id_before_start (args.op_id, "move", tag, &done, error)))
    return FALSE;
  if (done != NULL)
    return op_id_report_done (args.op_id, done, stdout), TRUE;
  if (!control_join_host (&args.host, args.mirror.speed, error)
      || (qmp = qmp_client_connect_sync (args.qmp, "qemu", cancellable, error)) == NULL)
    return FALSE;
  if (args.hold)
    control_enable_hold (common_options.quiet);
  run.qmp = qmp;
  names = (const char *const[]) { args.disk, NULL };
  if ((disks = disks_query (qmp, TRUE, cancellable, error)) == NULL
      || (chosen = disks_select (disks, names, "the VM", error)) == NULL)
    return FALSE;
  run.disk = chosen->pdata[0];
  run.tag = tag;
  run.node = node = names_node (tag, NAMES_MOVE_TARGET, 0);
  run.job_id = job_id = names_move_job (tag);
  run.journal = journal = move_journal_new (tag, &args, &run);
  group = job_group_new (run.qmp);
  mirror_arm_watchdogs (group, run.qmp, &args.mirror);
  if (move_open_target (&run, &args, args.format != NULL ? args.format : run.disk->format,
                        cancellable, error)
      && move_mirror (&run, group, &args, cancellable, error))
    {
      if (args.delete_source)
        move_delete_source (&run);
      journal_remove (journal);
      op_id_record_done (args.op_id, "move", "moved", NULL);
      events_emit ("completed", "status", qmp_str ("moved"), "disk", qmp_str (run.disk->name),
                   "file", qmp_str (args.to), NULL);
      return TRUE;
    }
  move_rollback (&run, group);
  if (qmp_client_get_state (qmp) == QMP_STATE_READY)
    journal_remove (journal);
  return FALSE;
}
