/* blkmig snapshot: external snapshots of a running VM's disks, all in one QMP transaction. */
#include <glib/gstdio.h>
#include <stdio.h>
#include <sys/stat.h>

#include "common/error.h"
#include "common/escape.h"
#include "qmp/qmp-commands.h"
#include "src/commands.h"
#include "src/disks.h"
#include "src/events.h"
#include "src/journal.h"
#include "src/names.h"
#include "src/session.h"
#include "src/util.h"
#include "src/volumes.h"

typedef struct {
  char *qmp;
  char **disks;
  char **tos;
  char *format;
} SnapshotArgs;

static void
snapshot_args_clear (SnapshotArgs *args)
{
  g_free (args->qmp);
  g_strfreev (args->disks);
  g_strfreev (args->tos);
  g_free (args->format);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (SnapshotArgs, snapshot_args_clear)

typedef struct {
  QmpClient *qmp;
  GPtrArray *chosen;        /* DiskInfo, borrowed, in the order of --disk */
  Journal *journal;
  GPtrArray *staging;       /* private directories the overlays are made in */
  guint created;            /* overlays in place so far */
  guint added;              /* overlay nodes added so far */
  gboolean sent;            /* the transaction went to QEMU */
} SnapshotRun;

static gboolean
snapshot_parse (int argc, char **argv, SnapshotArgs *args, GError **error)
{
  const GOptionEntry entries[] = {
    { "qmp", 0, 0, G_OPTION_ARG_FILENAME, &args->qmp, "The VM's QMP socket", "PATH" },
    { "disk", 0, 0, G_OPTION_ARG_STRING_ARRAY, &args->disks,
      "A disk to snapshot; repeat for several (one transaction: all or none)", "NAME" },
    { "to", 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &args->tos,
      "The new overlay (must not exist), one per --disk, in the same order", "PATH" },
    { "format", 'f', 0, G_OPTION_ARG_STRING, &args->format,
      "The overlays' format: qcow2 (the default and the only one that has a backing file)",
      "FORMAT" },
    COMMAND_EVENT_ENTRIES,
    G_OPTION_ENTRY_NULL
  };

  if (!command_parse (&argc, &argv, "", "Take an external snapshot of running disks: each "
                      "disk's current image becomes the read-only backing file of a new "
                      "overlay the guest writes to.", entries, error)
      || !command_require ("--qmp", args->qmp, error)
      || !command_require ("--disk", args->disks, error)
      || !command_require ("--to", args->tos, error))
    return FALSE;
  if (argc > 1)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "unexpected argument '%s'", argv[1]), FALSE;
  for (guint i = 0; args->tos[i] != NULL; i++)
    {
      char *absolute = g_canonicalize_filename (args->tos[i], NULL);
      g_free (args->tos[i]);
      args->tos[i] = absolute;
    }
  if (args->format != NULL && !g_str_equal (args->format, "qcow2"))
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "--format %s cannot have a backing file: an overlay must be qcow2",
                        args->format), FALSE;
  if (g_strv_length (args->disks) != g_strv_length (args->tos))
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "give one --to per --disk (%u --disk, %u --to)",
                        g_strv_length (args->disks), g_strv_length (args->tos)), FALSE;
  return TRUE;
}

/* What QEMU cannot be trusted to refuse before anything is made: the overlay's path,
 * the backing file's name, the same disk or path twice. */
static gboolean
snapshot_check (const SnapshotArgs *args, GPtrArray *chosen, GError **error)
{
  struct stat st;

  if (chosen->len != g_strv_length (args->disks))
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "a disk is named twice"), FALSE;
  for (guint i = 0; i < chosen->len; i++)
    {
      const DiskInfo *disk = chosen->pdata[i];
      g_autofree char *dir = g_path_get_dirname (args->tos[i]);
      g_autofree char *file = blkmig_escape (disk->file);

      if (!g_path_is_absolute (disk->file))
        return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                            "%s: its image '%s' is not a plain absolute file name, which an "
                            "overlay needs to name its backing file", disk->name, file), FALSE;
      if (lstat (args->tos[i], &st) == 0)
        return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                            "%s: %s already exists; snapshot creates its overlay",
                            disk->name, args->tos[i]), FALSE;
      if (!g_file_test (dir, G_FILE_TEST_IS_DIR))
        return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                            "%s: the directory %s does not exist", disk->name, dir), FALSE;
      for (guint k = 0; k < i; k++)
        if (g_str_equal (args->tos[k], args->tos[i]))
          return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                              "--to %s is given twice", args->tos[i]), FALSE;
    }
  return TRUE;
}

static Journal *
snapshot_journal_new (const char *tag, const SnapshotArgs *args, GPtrArray *chosen)
{
  Journal *journal = journal_new (tag, "snapshot");
  g_autoptr(GStrvBuilder) disks = g_strv_builder_new ();
  g_autoptr(GStrvBuilder) nodes = g_strv_builder_new ();

  journal->source_qmp = g_canonicalize_filename (args->qmp, NULL);
  for (guint i = 0; i < chosen->len; i++)
    {
      g_autofree char *node = names_node (tag, NAMES_OVERLAY, i);

      g_strv_builder_add (nodes, node);
      g_strv_builder_add (disks, ((DiskInfo *) chosen->pdata[i])->name);
    }
  journal->disks = g_strv_builder_end (disks);
  journal->nodes = g_strv_builder_end (nodes);
  return journal;
}

/* The private directories the overlays are made in, listed before anything else is
 * made; an overlay is listed once it is in place (under its name it may have been
 * someone else's a moment before). */
static gboolean
snapshot_stage (SnapshotRun *run, const SnapshotArgs *args, GError **error)
{
  for (guint i = 0; i < run->chosen->len; i++)
    {
      g_autofree char *dir = g_path_get_dirname (args->tos[i]);
      char *staging = util_staging_dir_new (dir, error);

      if (staging == NULL)
        return FALSE;
      g_ptr_array_add (run->staging, staging);
      journal_add_created (run->journal, staging);
    }
  return journal_write (run->journal, JOURNAL_STEP_SNAPSHOT, error);
}

/* Each overlay is made with the disk's current image as its backing file and opened
 * with no backing (blockdev-snapshot attaches the running node), with the disk's cache. */
static gboolean
snapshot_make (SnapshotRun *run, const SnapshotArgs *args, GCancellable *cancellable,
               GError **error)
{
  for (; run->created < run->chosen->len; run->created++)
    {
      const DiskInfo *disk = run->chosen->pdata[run->created];
      if (!util_overlay_create_new (args->tos[run->created], run->staging->pdata[run->created],
                                    disk->file, disk->format, disk->virtual_size, cancellable,
                                    error))
        return FALSE;
      journal_add_created (run->journal, args->tos[run->created]);
      if (!journal_write (run->journal, JOURNAL_STEP_SNAPSHOT, error))
        return FALSE;
    }
  for (; run->added < run->chosen->len; run->added++)
    {
      const DiskInfo *disk = run->chosen->pdata[run->added];
      const QmpBlockdevImage overlay = {
        .node_name = run->journal->nodes[run->added],
        .format = "qcow2",
        .filename = args->tos[run->added],
        .set_cache = TRUE,
        .cache_direct = disk->cache_direct,
        .cache_no_flush = disk->cache_no_flush,
        .no_backing = TRUE,
      };
      if (!qmp_blockdev_add_image (run->qmp, &overlay, cancellable, error))
        return FALSE;
    }
  return TRUE;
}

/* QEMU answered with an error: the transaction was not applied.  Anything else
 * (the connection ended, no answer in time) leaves it unknown. */
static gboolean
snapshot_refused (const GError *error)
{
  return error->domain == QMP_ERROR && error->code != QMP_ERROR_CLOSED
         && error->code != QMP_ERROR_TIMEOUT && error->code != QMP_ERROR_PROTOCOL;
}

static gboolean
snapshot_transaction (SnapshotRun *run, GError **error)
{
  g_autoptr(GPtrArray) nodes = g_ptr_array_new ();

  for (guint i = 0; i < run->chosen->len; i++)
    {
      const DiskInfo *disk = run->chosen->pdata[i];
      g_ptr_array_add (nodes, *disk->device ? disk->device : disk->node);
    }
  g_ptr_array_add (nodes, NULL);
  if (!journal_write (run->journal, JOURNAL_STEP_TRANSACTION, error))
    return FALSE;
  /* Not cancellable: a signal must not make us forget a transaction QEMU applies. */
  run->sent = TRUE;
  if (qmp_transaction_blockdev_snapshot (run->qmp, (const char *const *) nodes->pdata,
                                         (const char *const *) run->journal->nodes, NULL,
                                         error))
    return TRUE;
  if (!snapshot_refused (*error))
    return g_prefix_error (error, "the snapshot's outcome is unknown, the journal %s stays "
                           "for blkmig recover: ", run->journal->path), FALSE;
  g_prefix_error (error, "QEMU refused the snapshot (no disk changed): ");
  return FALSE;
}

/* Nothing is in use yet: our nodes go, then the overlays we made and the directories.
 * A transaction whose outcome is unknown is left to recover, which asks QEMU. */
static void
snapshot_rollback (SnapshotRun *run, const GError *error)
{
  if (run->sent && !snapshot_refused (error))
    return;
  session_abort_blockdevs (run->qmp, run->journal->id);
  journal_remove_created (run->journal, TRUE);
  journal_remove (run->journal);
}

static void
snapshot_report (SnapshotRun *run, const SnapshotArgs *args)
{
  for (guint i = 0; i < run->chosen->len; i++)
    {
      const DiskInfo *disk = run->chosen->pdata[i];

      events_emit ("snapshot", "disk", qmp_str (disk->name), "overlay", qmp_str (args->tos[i]),
                   "backing", qmp_str (disk->file), NULL);
      if (!common_options.quiet)
        {
          g_autofree char *name = blkmig_escape_controls (disk->name);
          g_autofree char *file = blkmig_escape_controls (disk->file);
          g_autofree char *to = blkmig_escape_controls (args->tos[i]);
          g_printerr ("blkmig: %s now writes to %s (backed by %s)\n", name, to, file);
        }
    }
  events_emit ("completed", "status", qmp_str ("snapshot"), NULL);
}

gboolean
cmd_snapshot (int argc, char **argv, GCancellable *cancellable, GError **error)
{
  g_auto(SnapshotArgs) args = { 0 };
  g_autofree char *tag = g_uuid_string_random ();
  g_autoptr(QmpClient) qmp = NULL;
  g_autoptr(GPtrArray) disks = NULL;
  g_autoptr(GPtrArray) chosen = NULL;
  g_autoptr(Journal) journal = NULL;
  g_autoptr(GPtrArray) staging = g_ptr_array_new_with_free_func (g_free);
  SnapshotRun run = { 0 };

  if (!snapshot_parse (argc, argv, &args, error)
      || (qmp = qmp_client_connect_sync (args.qmp, "qemu", cancellable, error)) == NULL
      || (disks = disks_query (qmp, TRUE, cancellable, error)) == NULL
      || (chosen = disks_select (disks, (const char *const *) args.disks, "the VM",
                                 error)) == NULL
      || !snapshot_check (&args, chosen, error))
    return FALSE;
  run = (SnapshotRun) { .qmp = qmp, .chosen = chosen, .staging = staging };
  run.journal = journal = snapshot_journal_new (tag, &args, chosen);
  if (snapshot_stage (&run, &args, error) && snapshot_make (&run, &args, cancellable, error)
      && snapshot_transaction (&run, error))
    {
      journal_remove_created (journal, FALSE);  /* the staging directories */
      journal_remove (journal);
      snapshot_report (&run, &args);
      return TRUE;
    }
  snapshot_rollback (&run, *error);
  return FALSE;
}

gboolean
snapshot_recover (QmpClient *qmp, const Journal *journal, const char **done, GError **error)
{
  g_autoptr(GPtrArray) disks = disks_query (qmp, TRUE, NULL, error);
  DiskInfo *disk;

  if (disks == NULL)
    return FALSE;
  /* One transaction: the first disk tells for all of them. */
  disk = journal->disks != NULL && journal->nodes != NULL && journal->disks[0] != NULL
         ? disks_find (disks, journal->disks[0]) : NULL;
  if (disk != NULL && g_strcmp0 (disk->node, journal->nodes[0]) == 0)
    return *done = "had completed: the disks run on their overlays", TRUE;
  session_abort_blockdevs (qmp, journal->id);
  journal_remove_created (journal, TRUE);
  *done = "rolled back: the disks run on their old images, the overlays are removed";
  return TRUE;
}
