/* blkmig merge: live merge (block-commit) of a layer of a running disk's chain into a lower one. */
#include <glib/gstdio.h>
#include <stdio.h>
#include <sys/stat.h>

#include "common/error.h"
#include "common/escape.h"
#include "jobs/job-group.h"
#include "qmp/qmp-commands.h"
#include "src/commands.h"
#include "src/control.h"
#include "src/disks.h"
#include "src/events.h"
#include "src/journal.h"
#include "src/names.h"
#include "src/progress.h"
#include "src/session.h"
#include "src/volumes.h"

#define MERGE_ABORT_TIMEOUT_MS (30 * 1000)

typedef struct {
  char *qmp;
  char *disk;
  char *top;
  char *base;
  gboolean delete_merged;
  gint64 speed;
  gint stall_timeout;
} MergeArgs;

static void
merge_args_clear (MergeArgs *args)
{
  g_free (args->qmp);
  g_free (args->disk);
  g_free (args->top);
  g_free (args->base);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (MergeArgs, merge_args_clear)

typedef struct {
  QmpClient *qmp;
  const DiskInfo *disk;
  GArray *layers;           /* DiskLayer, the active layer first */
  int top;                  /* indexes into layers */
  int base;
  Journal *journal;
  gint64 paused_us;         /* how long the guest was paused for the pivot */
} MergeRun;

static gboolean
merge_parse (int argc, char **argv, MergeArgs *args, GError **error)
{
  const GOptionEntry entries[] = {
    { "qmp", 0, 0, G_OPTION_ARG_FILENAME, &args->qmp, "The VM's QMP socket", "PATH" },
    { "disk", 0, 0, G_OPTION_ARG_STRING, &args->disk, "The disk whose chain to merge", "NAME" },
    { "top", 0, 0, G_OPTION_ARG_STRING, &args->top,
      "The layer to merge down: a file or node name in the chain (default: the active "
      "layer)", "LAYER" },
    { "base", 0, 0, G_OPTION_ARG_STRING, &args->base,
      "The layer it merges into (default: the top's backing file)", "LAYER" },
    { "delete-merged", 0, 0, G_OPTION_ARG_NONE, &args->delete_merged,
      "Remove the merged layers' files once nothing uses them", NULL },
    { "speed", 0, 0, G_OPTION_ARG_INT64, &args->speed,
      "Limit the copy to BYTES per second (default: unlimited)", "BYTES" },
    { "stall-timeout", 0, 0, G_OPTION_ARG_INT, &args->stall_timeout,
      "Give up when the copy makes no progress for SECONDS (default 60, 0 = never)",
      "SECONDS" },
    COMMAND_EVENT_ENTRIES,
    G_OPTION_ENTRY_NULL
  };

  if (!command_parse (&argc, &argv, "", "Merge a layer of a running disk's backing chain "
                      "into a lower layer (live merge); for the active layer the guest then "
                      "runs on the base.", entries, error)
      || !command_require ("--qmp", args->qmp, error)
      || !command_require ("--disk", args->disk, error))
    return FALSE;
  if (argc > 1)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "unexpected argument '%s'", argv[1]), FALSE;
  if (args->speed < 0 || args->stall_timeout < -1)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "--speed and --stall-timeout cannot be negative"), FALSE;
  return TRUE;
}

static const DiskLayer *
merge_layer (const MergeRun *run, int index)
{
  return &g_array_index (run->layers, DiskLayer, index);
}

/* "a.qcow2, b.qcow2, c.raw" for messages, escaped */
static char *
merge_chain_text (const MergeRun *run)
{
  g_autoptr(GString) text = g_string_new (NULL);

  for (guint i = 0; i < run->layers->len; i++)
    {
      g_autofree char *file = blkmig_escape (merge_layer (run, (int) i)->file);
      g_string_append_printf (text, "%s%s", i > 0 ? " -> " : "", file);
    }
  return g_string_free (g_steal_pointer (&text), FALSE);
}

/* @name's index in the chain, or a BLKMIG_ERROR_DISK naming the chain. */
static gboolean
merge_find (const MergeRun *run, const char *option, const char *name, int *index,
            GError **error)
{
  g_autofree char *chain = NULL;
  g_autofree char *shown = NULL;

  if ((*index = disk_layers_find (run->layers, name)) >= 0)
    return TRUE;
  chain = merge_chain_text (run);
  shown = blkmig_escape (name);
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK, "%s %s is not in %s's chain (%s)",
               option, shown, run->disk->name, chain);
  return FALSE;
}

/* The journal names the active layer, the top and the base by file, so that after a
 * host crash reconcile finds them from storage alone: a layer QEMU can only describe
 * as json:{...} (a relative backing name under -blockdev's own backing=) is refused. */
static gboolean
merge_plain_names (const MergeRun *run, GError **error)
{
  const int layers[] = { 0, run->top, run->base };

  for (guint i = 0; i < G_N_ELEMENTS (layers); i++)
    {
      const char *file = merge_layer (run, layers[i])->file;
      g_autofree char *shown = NULL;

      if (g_path_is_absolute (file))
        continue;
      shown = blkmig_escape (file);
      return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                          "%s: layer '%s' has no plain absolute file name, which the merge's "
                          "journal needs to find it after a crash", run->disk->name, shown),
             FALSE;
    }
  return TRUE;
}

/* Top and base from the options; base must lie below top and be named in QEMU. */
static gboolean
merge_choose (MergeRun *run, const MergeArgs *args, GError **error)
{
  if (run->layers->len < 2)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                        "%s has no backing file: there is nothing to merge",
                        run->disk->name), FALSE;
  run->top = 0;
  if (args->top != NULL && !merge_find (run, "--top", args->top, &run->top, error))
    return FALSE;
  run->base = run->top + 1;
  if (args->base != NULL && !merge_find (run, "--base", args->base, &run->base, error))
    return FALSE;
  if (run->top + 1 >= (int) run->layers->len)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                        "--top %s is the bottom of %s's chain: it has no backing file to "
                        "merge into", args->top, run->disk->name), FALSE;
  if (run->base <= run->top)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                        "--base %s is not below --top in %s's chain",
                        args->base, run->disk->name), FALSE;
  if (*merge_layer (run, run->base)->node == '\0' || *merge_layer (run, run->top)->node == '\0')
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                        "%s: QEMU names no node for a layer of the chain", run->disk->name),
           FALSE;
  return merge_plain_names (run, error);
}

static Journal *
merge_journal_new (const MergeRun *run, const MergeArgs *args, const char *tag)
{
  Journal *journal = journal_new (tag, "merge");
  g_autoptr(GStrvBuilder) chain = g_strv_builder_new ();

  for (guint i = 0; i < run->layers->len; i++)
    g_strv_builder_add (chain, merge_layer (run, (int) i)->file);
  journal->source_qmp = g_canonicalize_filename (args->qmp, NULL);
  journal->disk = g_strdup (run->disk->name);
  journal->old_image = g_strdup (merge_layer (run, run->top)->file);
  journal->new_image = g_strdup (merge_layer (run, run->base)->file);
  journal->new_node = g_strdup (merge_layer (run, run->base)->node);
  journal->top_node = g_strdup (merge_layer (run, run->top)->node);
  journal->job = names_merge_job (tag);
  journal->chain = g_strv_builder_end (chain);
  journal->active = run->top == 0;
  journal->delete_merged = args->delete_merged;
  return journal;
}

static gboolean
merge_start (MergeRun *run, JobGroup *group, const MergeArgs *args, GError **error)
{
  const QmpBlockCommit commit = {
    .job_id = run->journal->job,
    .device = *run->disk->device ? run->disk->device : run->disk->node,
    .top_node = run->journal->active ? NULL : run->journal->top_node,
    .base_node = run->journal->new_node,
    .speed = control_mirror_speed (args->speed),  /* `blkmig ctl ID set-speed` */
  };
  BlkJob *job = job_group_add (group, commit.job_id, run->disk->name);

  events_emit ("phase", "phase", qmp_str ("commit"), "disk", qmp_str (run->disk->name),
               "top", qmp_str (run->journal->old_image), "base",
               qmp_str (run->journal->new_image), "active", qmp_bool (run->journal->active),
               NULL);
  if (!journal_write (run->journal, JOURNAL_STEP_COMMIT, error))
    return job_group_forget (group, job), FALSE;
  /* not cancellable: a job QEMU started must stay known to the group, which cancels it */
  if (qmp_block_commit (run->qmp, &commit, NULL, error))
    return TRUE;
  job_group_forget (group, job);
  return g_prefix_error (error, "%s: QEMU refused the merge (nothing changed): ",
                         run->disk->name), FALSE;
}

/* stop (if the guest runs) / cont (if we stopped it) */
static gboolean
merge_guest (MergeRun *run, gboolean run_it, GError **error)
{
  g_autoptr(QmpStatusInfo) status = NULL;

  if (run_it)
    return !run->journal->paused_guest || qmp_cont (run->qmp, NULL, error);
  status = qmp_query_status (run->qmp, 0, NULL, error);
  if (status == NULL)
    return FALSE;
  /* recorded before the stop, so recover knows to resume it */
  run->journal->paused_guest = status->running;
  return journal_write (run->journal, JOURNAL_STEP_READY, error)
         && (!status->running || qmp_stop (run->qmp, NULL, error));
}

/* The pivot of an active-layer merge.  QEMU's active commit copies in the background
 * (it cannot be made write-blocking), so at READY the base may lag the top.  The guest
 * is paused from before the mark until "pivoted" is on disk: until then the old chain
 * (top over base) holds every write whether or not the pivot happened, and after it
 * the base does.  Not cancellable: once asked for, the pivot is finished. */
static gboolean
merge_pivot (MergeRun *run, JobGroup *group, GError **error)
{
  gint64 start = g_get_monotonic_time ();
  gboolean ok;

  events_emit ("phase", "phase", qmp_str ("switch"), "mode", qmp_str ("merge"), NULL);
  if (!merge_guest (run, FALSE, error))
    return FALSE;
  ok = journal_write (run->journal, JOURNAL_STEP_SUPERSEDED, error)
       && job_group_complete_all (group, NULL, error)
       && job_group_wait_ended_sync (group, NULL, error)
       && journal_write (run->journal, JOURNAL_STEP_PIVOTED, error);
  if (!merge_guest (run, TRUE, ok ? error : NULL))
    ok = FALSE;
  run->paused_us = g_get_monotonic_time () - start;
  return ok;
}

/* Whether @file is one of the merged layers' files: from the top down to (not
 * including) the base. */
static gboolean
merge_is_merged_file (const Journal *journal, const char *file)
{
  gboolean in_range = FALSE;

  if (file == NULL)
    return FALSE;
  if (journal->chain == NULL)
    return g_strcmp0 (file, journal->old_image) == 0;
  for (guint i = 0; journal->chain[i] != NULL; i++)
    {
      in_range = in_range || g_str_equal (journal->chain[i], journal->old_image);
      if (g_str_equal (journal->chain[i], journal->new_image))
        return FALSE;
      if (in_range && g_str_equal (journal->chain[i], file))
        return TRUE;
    }
  return FALSE;
}

/* The merged layers are out of the chain, but a node someone named (blockdev-add:
 * snapshot's overlay; -blockdev: a format node and the protocol node under it) is
 * still held by the monitor, and with it its file and the file's lock: release them.
 * blockdev-del refuses a node something still uses, and a protocol node is free only
 * once the format node over it is gone: rounds until one deletes nothing. */
static void
merge_release_top (const Journal *journal, QmpClient *qmp)
{
  g_autoptr(GPtrArray) nodes = NULL;
  g_autoptr(GPtrArray) left = g_ptr_array_new ();
  gboolean deleted = TRUE;

  if (journal->top_node != NULL && journal->top_node[0] != '#' && journal->top_node[0] != '\0')
    qmp_blockdev_del (qmp, journal->top_node, NULL, NULL);
  if ((nodes = qmp_query_named_block_nodes (qmp, NULL, NULL)) == NULL)
    return;
  for (guint i = 0; i < nodes->len; i++)
    {
      QmpBlockNodeInfo *node = nodes->pdata[i];

      if (node->node_name != NULL && node->node_name[0] != '#' && node->node_name[0] != '\0'
          && merge_is_merged_file (journal, node->file))
        g_ptr_array_add (left, node->node_name);
    }
  while (deleted && left->len > 0)
    {
      deleted = FALSE;
      for (guint i = 0; i < left->len;)
        {
          if (!qmp_blockdev_del (qmp, left->pdata[i], NULL, NULL))
            {
              i++;
              continue;
            }
          g_ptr_array_remove_index (left, i);
          deleted = TRUE;
        }
    }
}

/* The merged layers' files: from the top down to (not including) the base. */
static void
merge_delete_files (const Journal *journal)
{
  for (guint i = 0; journal->chain != NULL && journal->chain[i] != NULL; i++)
    {
      const char *file = journal->chain[i];
      struct stat st;

      if (!merge_is_merged_file (journal, file) || !g_path_is_absolute (file)
          || lstat (file, &st) != 0 || !S_ISREG (st.st_mode))
        continue;
      if (g_unlink (file) == 0 && !common_options.quiet)
        g_printerr ("blkmig: removed %s\n", file);
    }
}

static gboolean
merge_run (MergeRun *run, JobGroup *group, const MergeArgs *args, GCancellable *cancellable,
           GError **error)
{
  g_autoptr(Progress) progress = progress_start (group, common_options.quiet, 2000);

  if (!merge_start (run, group, args, error))
    return FALSE;
  if (run->journal->active)
    {
      if (!job_group_wait_ready_sync (group, cancellable, error))
        return FALSE;
      if (!merge_pivot (run, group, error))
        return FALSE;
    }
  else if (!job_group_wait_ended_sync (group, cancellable, error))
    return FALSE;
  return journal_write (run->journal, JOURNAL_STEP_COMMITTED, error);
}

static void
merge_report (const MergeRun *run)
{
  const Journal *journal = run->journal;

  events_emit ("completed", "status", qmp_str ("merged"), "disk", qmp_str (journal->disk),
               "top", qmp_str (journal->old_image), "base", qmp_str (journal->new_image),
               "active", qmp_bool (journal->active),
               "paused-ms", qmp_int (run->paused_us / 1000), NULL);
  if (!common_options.quiet)
    {
      g_autofree char *disk = blkmig_escape_controls (journal->disk);
      g_autofree char *top = blkmig_escape_controls (journal->old_image);
      g_autofree char *base = blkmig_escape_controls (journal->new_image);
      g_printerr ("blkmig: %s: merged %s into %s%s\n", disk, top, base,
                  journal->active ? "; the guest now runs on it" : "");
    }
}

gboolean
cmd_merge (int argc, char **argv, GCancellable *cancellable, GError **error)
{
  g_auto(MergeArgs) args = { .stall_timeout = -1 };
  g_autoptr(QmpClient) qmp = NULL;
  g_autoptr(GPtrArray) disks = NULL;
  g_autoptr(GPtrArray) chosen = NULL;
  g_autoptr(GArray) layers = NULL;
  g_autoptr(Journal) journal = NULL;
  g_autoptr(JobGroup) group = NULL;
  g_autofree char *tag = g_uuid_string_random ();
  g_autoptr(Control) control = NULL;  /* closed last: `ctl cancel` waits for the rollback */
  MergeRun run = { 0 };

  if (!merge_parse (argc, argv, &args, error)
      || (control = control_open (tag, tag, "merge", cancellable, error)) == NULL
      || (qmp = qmp_client_connect_sync (args.qmp, "qemu", cancellable, error)) == NULL
      || (disks = disks_query (qmp, TRUE, cancellable, error)) == NULL
      || (chosen = disks_select (disks, (const char *const[]) { args.disk, NULL }, "the VM",
                                 error)) == NULL)
    return FALSE;
  run = (MergeRun) { .qmp = qmp, .disk = chosen->pdata[0] };
  run.layers = layers = disk_info_layers (run.disk);
  if (!merge_choose (&run, &args, error))
    return FALSE;
  run.journal = journal = merge_journal_new (&run, &args, tag);
  group = job_group_new (qmp);
  job_group_set_stall_timeout (group, MIRROR_KNOB (args.stall_timeout,
                                                   MIRROR_DEFAULT_STALL_TIMEOUT) * 1000);
  if (merge_run (&run, group, &args, cancellable, error))
    {
      merge_release_top (journal, qmp);
      if (args.delete_merged)
        merge_delete_files (journal);
      journal_remove (journal);
      merge_report (&run);
      return TRUE;
    }
  /* Before the pivot the commit is cancelled and the chain stays; after a failed
   * pivot QEMU kept whichever chain it had.  Without QEMU the journal stays. */
  job_group_abort (group, MERGE_ABORT_TIMEOUT_MS);
  if (qmp_client_get_state (qmp) == QMP_STATE_READY)
    journal_remove (journal);
  return FALSE;
}

/* After a kill past the mark: a READY commit still waits for its pivot; finish it. */
static gboolean
merge_finish_pivot (QmpClient *qmp, const Journal *journal, GError **error)
{
  g_autoptr(GPtrArray) jobs = qmp_query_block_jobs (qmp, NULL, error);
  g_autoptr(JobGroup) group = job_group_new (qmp);

  if (jobs == NULL)
    return FALSE;
  for (guint i = 0; i < jobs->len; i++)
    {
      QmpBlockJobInfo *info = jobs->pdata[i];

      if (g_strcmp0 (info->device, journal->job) != 0
          || g_strcmp0 (info->status, "concluded") == 0)
        continue;
      job_group_add (group, info->device, journal->disk);
      if (!job_group_complete_all (group, NULL, error)
          || !job_group_wait_ended_sync (group, NULL, error))
        return FALSE;
    }
  return TRUE;
}

/* Whether the top layer is out of the disk's chain now. */
static gboolean
merge_is_done (QmpClient *qmp, const Journal *journal, GError **error)
{
  g_autoptr(GPtrArray) disks = disks_query (qmp, TRUE, NULL, error);
  DiskInfo *disk = disks != NULL ? disks_find (disks, journal->disk) : NULL;
  g_autoptr(GArray) layers = disk != NULL ? disk_info_layers (disk) : NULL;

  if (disks != NULL && disk == NULL)
    g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK, "the VM has no disk %s any more",
                 journal->disk);
  return layers != NULL && disk_layers_find (layers, journal->old_image) < 0;
}

gboolean
merge_recover (QmpClient *qmp, const Journal *journal, const char **done, GError **error)
{
  gboolean asked = journal->step == JOURNAL_STEP_SUPERSEDED
                   || journal->step == JOURNAL_STEP_PIVOTED
                   || journal->step == JOURNAL_STEP_COMMITTED;
  g_autoptr(QmpStatusInfo) status = NULL;
  gboolean merged;

  if (asked && !merge_finish_pivot (qmp, journal, error))
    return FALSE;
  session_abort_blockdevs (qmp, journal->id);  /* cancels a commit not yet pivoting */
  if (journal->paused_guest
      && ((status = qmp_query_status (qmp, 0, NULL, error)) == NULL
          || (!status->running && !qmp_cont (qmp, NULL, error))))
    return FALSE;
  merged = merge_is_done (qmp, journal, error);
  if (error != NULL && *error != NULL)
    return FALSE;
  if (merged)
    merge_release_top (journal, qmp);
  if (merged && journal->delete_merged)
    merge_delete_files (journal);
  *done = merged ? "had completed or was finished: the merged layer is out of the chain"
                 : "rolled back: the commit was cancelled, the chain is unchanged";
  return TRUE;
}
