/* blkmig migrate: one process drives both QEMUs through begin, prepare, perform, finish. */
#include <stdio.h>

#include <glib/gstdio.h>

#include "common/async.h"
#include "common/error.h"
#include "qmp/qmp-commands.h"
#include "src/commands.h"
#include "src/control.h"
#include "src/events.h"
#include "src/op-id.h"
#include "src/options.h"
#include "src/session.h"
#include "src/util.h"

typedef struct {
  char *source;
  char *dest;
  char **disks;
  char *mode;
  char *migrate_uri;
  char *create_dir;
  char *chain;
  ChainMode chain_mode;
  char *base_dir;
  char **bases;
  MirrorTuning mirror;
  gboolean verify;
  char *tunnel;
  char *tunnel_command;
  char *tunnel_compress;
  char *tls_dir;
  char **tls_authz;
  gboolean insecure;
  gboolean pass_fds;
  gboolean hold;
  char *op_id;
  ControlHostOptions host;
  gboolean keep_target;
} MigrateArgs;

typedef struct {
  QmpClient *src;
  QmpClient *dst;
  char *private_dir;
  Cookie *offer;
  Cookie *reply;
  Cookie *result;
  Journal *journal;
  Control *control;
  char *id;                 /* the migration id: from --op-id, else random */
  gint64 started_us;
} MigrateRun;

static void
migrate_run_clear (MigrateRun *run)
{
  g_clear_pointer (&run->control, control_close);  /* after the rollback: cancel waits for it */
  g_clear_pointer (&run->id, g_free);
  g_clear_pointer (&run->journal, journal_free);
  g_clear_pointer (&run->result, cookie_free);
  g_clear_pointer (&run->reply, cookie_free);
  g_clear_pointer (&run->offer, cookie_free);
  if (run->private_dir != NULL)
    util_private_dir_remove (run->private_dir);
  g_clear_pointer (&run->private_dir, g_free);
  g_clear_object (&run->dst);
  g_clear_object (&run->src);
}

static gboolean
migrate_prepare (MigrateRun *run, const MigrateArgs *args, GCancellable *cancellable,
                 GError **error)
{
  g_autofree char *nbd = g_build_filename (run->private_dir, "nbd.sock", NULL);
  g_autofree char *mig = g_strdup_printf ("unix:%s/migrate.sock", run->private_dir);
  PrepareOptions opts = {
    .listen = { .unix_path = nbd },
    .create_dir = args->create_dir,
    .incoming_uri = args->migrate_uri != NULL ? args->migrate_uri : mig,
    .journal = run->journal,
    .tls_dir = args->tls_dir,
    .tls_authz = (const char *const *) args->tls_authz,
    .insecure = args->insecure,
    .base_dir = args->base_dir,
    .bases = (const char *const *) args->bases,
  };

  run->reply = session_prepare (run->dst, run->offer, &opts, cancellable, error);
  return run->reply != NULL && cookie_check_reply (run->offer, run->reply, error);
}

/* Before the source pauses: is the destination still there and answering? */
static gboolean
migrate_before_switch (gpointer data, GError **error)
{
  MigrateRun *run = data;
  g_autoptr(QmpStatusInfo) status = qmp_query_status (run->dst, 10 * 1000, NULL, error);

  if (status == NULL)
    g_prefix_error (error, "the destination stopped answering before the switch: ");
  return status != NULL;
}

/* The mirrors ended: nobody needs the destination's exports any more. */
static gboolean
migrate_mirrors_ended (gpointer data, GError **error)
{
  MigrateRun *run = data;

  return session_remove_exports (run->dst, run->reply, NULL, error);
}

static void
migrate_summary (MigrateRun *run, gint64 finish_us)
{
  double secs = (g_get_monotonic_time () - run->started_us) / 1e6;
  g_autofree char *bytes = util_human_size (run->result->bytes);
  gint64 downtime = run->result->downtime_ms;

  if (downtime >= 0)
    downtime += finish_us / 1000;
  events_emit ("completed", "status", qmp_str (run->result->status),
               "disks", qmp_int (run->result->disks->len), "bytes", qmp_int (run->result->bytes),
               "elapsed-ms", qmp_int ((gint64) (secs * 1000)),
               "downtime-ms", downtime >= 0 ? qmp_int (downtime) : NULL, NULL);
  if (common_options.quiet || common_options.json)
    return;
  printf ("blkmig: %s %u disk%s, %s in %.2f s (%.1f MB/s)", run->result->status,
          run->result->disks->len, run->result->disks->len == 1 ? "" : "s", bytes, secs,
          secs > 0 ? run->result->bytes / secs / 1e6 : 0.0);
  if (downtime >= 0)
    printf (", downtime %" G_GINT64_FORMAT " ms", downtime);
  printf ("\n");
}

static gboolean
migrate_steps (MigrateRun *run, const MigrateArgs *args, CookieMode mode,
               GCancellable *cancellable, GError **error)
{
  SourceOptions sopts = {
    .mirror = args->mirror,
    .quiet = common_options.quiet,
    .progress_ms = 2000,
    .verify = args->verify,
  };
  gint64 finish_start;

  run->offer = session_begin (run->src, mode, (const char *const *) args->disks,
                              args->chain_mode, cancellable, error);
  if (run->offer == NULL)
    return FALSE;
  g_free (run->offer->id);  /* the id the control socket and a re-run know */
  run->offer->id = g_strdup (run->id);
  if (args->hold)
    control_enable_hold (common_options.quiet);
  sopts.hold = control_hold;
  run->journal = journal_new (run->offer->id, "migrate");
  run->journal->source_qmp = g_strdup (args->source);
  run->journal->op_id = g_strdup (args->op_id);
  run->journal->keep_targets = args->keep_target;
  journal_add_created (run->journal, run->private_dir);  /* its sockets, if we die */
  run->journal->dest_qmp = g_strdup (args->dest);
  sopts.journal = run->journal;
  sopts.mirrors_ended = migrate_mirrors_ended;
  sopts.mirrors_ended_data = run;
  sopts.before_switch = migrate_before_switch;
  sopts.tunnel_addr = args->tunnel;
  sopts.tunnel_command = args->tunnel_command;
  sopts.tunnel_compress = args->tunnel_compress;
  sopts.tls_dir = args->tls_dir;
  sopts.insecure = args->insecure;
  sopts.pass_fds = args->pass_fds;
  sopts.local_destination = TRUE;  /* one process drives both QEMUs: both are local */
  if (!session_journal (run->journal, JOURNAL_STEP_BEGIN, run->offer, error)
      || !migrate_prepare (run, args, cancellable, error))
    return FALSE;
  run->result = session_perform (run->src, run->reply, &sopts, args->migrate_uri, FALSE,
                                 cancellable, error);
  if (run->result == NULL)
    return FALSE;
  finish_start = g_get_monotonic_time ();
  if (!session_finish (run->dst, run->result, run->journal, FALSE, cancellable, error))
    return FALSE;
  journal_remove_created (run->journal, FALSE);  /* the sockets prepare listened on */
  journal_remove (run->journal);
  op_id_record_done (args->op_id, "migrate", run->result->status, run->result);
  migrate_summary (run, g_get_monotonic_time () - finish_start);
  return TRUE;
}

#define SETTLE_CONNECT_MS 5000
#define SETTLE_EXIT_MS 3000

/* A side whose connection was lost is cleaned through a new one; a QEMU that is
 * exiting (a cancelled incoming migration ends it) is given a moment to be gone. */
static gboolean
migrate_side_settled (QmpClient *qmp, const char *path, const Cookie *cookie)
{
  g_autoptr(QmpClient) again = NULL;

  if (qmp_client_get_state (qmp) == QMP_STATE_READY)
    return TRUE;
  qmp_client_set_connect_timeout_default (SETTLE_CONNECT_MS);
  again = qmp_client_connect_sync (path, qmp_client_get_label (qmp), NULL, NULL);
  if (again != NULL)
    session_abort (again, cookie);
  if (again != NULL && qmp_client_get_state (again) == QMP_STATE_READY)
    return TRUE;
  for (int waited = 0; waited < SETTLE_EXIT_MS && !util_qmp_gone (path); waited += 100)
    blkmig_sleep (100, NULL);
  return util_qmp_gone (path);
}

/* After a rollback: the journal goes when both sides could be cleaned, else it
 * stays for `blkmig recover`, and the error says so. */
static void
migrate_close_journal (MigrateRun *run, const MigrateArgs *args, GError **error)
{
  g_autoptr(GError) original = NULL;

  if (run->journal == NULL)
    return;
  /* Cleaned, or the side we could not clean is gone with everything we made in it
   * (a cancelled incoming migration ends the destination QEMU). */
  if (migrate_side_settled (run->src, args->source, run->reply != NULL ? run->reply : run->offer)
      && migrate_side_settled (run->dst, args->dest, run->reply != NULL ? run->reply : run->offer))
    {
      journal_remove_created (run->journal, TRUE);
      journal_remove (run->journal);
      return;
    }
  original = g_steal_pointer (error);
  if (g_error_matches (original, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_INTERRUPTED,
                 "interrupted by a signal; a side was unreachable: run blkmig recover --id %s",
                 run->journal->id);
  else
    g_set_error (error, original->domain, original->code,
                 "%s (a side was unreachable: run blkmig recover --id %s)", original->message,
                 run->journal->id);
}

static gboolean
migrate_parse (int argc, char **argv, MigrateArgs *args, CookieMode *mode, GError **error)
{
  const GOptionEntry entries[] = {
    { "source", 's', 0, G_OPTION_ARG_FILENAME, &args->source, "Source QEMU's QMP socket", "PATH" },
    { "dest", 'd', 0, G_OPTION_ARG_FILENAME, &args->dest, "Destination QEMU's QMP socket", "PATH" },
    { "disk", 0, 0, G_OPTION_ARG_STRING_ARRAY, &args->disks,
      "Migrate only this disk (qdev id, BlockBackend or node name); repeatable", "NAME" },
    { "mode", 'm', 0, G_OPTION_ARG_STRING, &args->mode,
      "live (default): migrate the VM too; copy: point-in-time copy; move: pivot the source onto the destination", "MODE" },
    { "migrate-uri", 0, 0, G_OPTION_ARG_STRING, &args->migrate_uri,
      "URI for the memory stream (default: a private UNIX socket)", "URI" },
    { "create-dir", 0, 0, G_OPTION_ARG_FILENAME, &args->create_dir,
      "Create targets the destination lacks in DIR (copy and move modes)", "DIR" },
    COMMAND_CHAIN_ENTRY (&args->chain),
    COMMAND_BASE_ENTRIES (&args->base_dir, &args->bases),
    COMMAND_MIRROR_ENTRIES (&args->mirror),
    { "verify", 0, 0, G_OPTION_ARG_NONE, &args->verify,
      "Compare source and destination while both are quiescent (live: at switchover; copy: "
      "the guest pauses for it)", NULL },
    COMMAND_TUNNEL_ENTRIES (&args->tunnel, &args->tunnel_command, &args->tunnel_compress),
    COMMAND_TLS_ENTRIES (&args->tls_dir, &args->insecure),
    COMMAND_TLS_AUTHZ_ENTRY (&args->tls_authz),
    COMMAND_PASS_FDS_ENTRY (&args->pass_fds),
    COMMAND_HOLD_ENTRY (&args->hold),
    COMMAND_OP_ID_ENTRY (&args->op_id),
    COMMAND_HOST_ENTRIES (&args->host),
    COMMAND_KEEP_TARGET_ENTRY (&args->keep_target),
    COMMAND_EVENT_ENTRIES,
    G_OPTION_ENTRY_NULL
  };

  if (!command_parse (&argc, &argv, "", "Migrate a VM's disks (and, in live mode, the VM) "
                      "from the source QEMU to the destination QEMU.", entries, error)
      || !command_require ("--source", args->source, error)
      || !command_require ("--dest", args->dest, error)
      || !options_mirror_check (&args->mirror, error)
      || !options_host_check (&args->host, error)
      || !options_tunnel_compress (args->tunnel_compress, args->tunnel, args->tunnel_command,
                                   NULL, error)
      || !options_chain (args->chain, &args->chain_mode, error)
      || !options_name_path ("--base", (const char *const *) args->bases, error)
      || (args->op_id != NULL && !control_check_id (args->op_id, error)))
    return FALSE;
  if (!cookie_mode_from_string (args->mode != NULL ? args->mode : "live", mode))
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "--mode must be live, copy or move, not '%s'", args->mode), FALSE;
  return TRUE;
}

static void
migrate_args_clear (MigrateArgs *args)
{
  g_free (args->source);
  g_free (args->dest);
  g_strfreev (args->disks);
  g_free (args->mode);
  g_free (args->migrate_uri);
  g_free (args->create_dir);
  g_free (args->chain);
  g_free (args->base_dir);
  g_strfreev (args->bases);
  mirror_tuning_clear (&args->mirror);
  g_free (args->tunnel);
  g_free (args->tunnel_command);
  g_free (args->tunnel_compress);
  g_free (args->tls_dir);
  g_strfreev (args->tls_authz);
  g_free (args->op_id);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (MigrateArgs, migrate_args_clear)

/* The control socket from the start (status and cancel also while queued).
 * --op-id: the id is ours while we run (a second run is busy); a previous run that
 * succeeded makes this one a no-op, a killed one is recovered first. */
static gboolean
migrate_claim (MigrateRun *run, const MigrateArgs *args, GCancellable *cancellable, char **done,
               GError **error)
{
  run->id = args->op_id != NULL ? op_id_migration_id (args->op_id) : cookie_new_id ();
  run->control = control_open (args->op_id != NULL ? args->op_id : run->id, run->id, "migrate",
                               cancellable, error);
  return run->control != NULL
         && (args->op_id == NULL || op_id_before_start (args->op_id, "migrate", run->id, done,
                                                         error));
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (MigrateRun, migrate_run_clear)

gboolean
cmd_migrate (int argc, char **argv, GCancellable *cancellable, GError **error)
{
  g_auto(MigrateArgs) args = { .mirror = MIRROR_TUNING_INIT };
  g_auto(MigrateRun) run = { 0 };
  g_autofree char *done = NULL;
  CookieMode mode;

  run.started_us = g_get_monotonic_time ();
  if (!migrate_parse (argc, argv, &args, &mode, error)
      || !migrate_claim (&run, &args, cancellable, &done, error))
    return FALSE;
  if (done != NULL)
    return op_id_report_done (args.op_id, done, stdout), TRUE;
  if (!control_join_host (&args.host, args.mirror.speed, error)
      || (run.src = qmp_client_connect_sync (args.source, "source", cancellable, error)) == NULL
      || (run.dst = qmp_client_connect_sync (args.dest, "destination", cancellable, error)) == NULL
      || (run.private_dir = util_private_dir_new (error)) == NULL)
    return FALSE;
  if (migrate_steps (&run, &args, mode, cancellable, error))
    return TRUE;
  /* perform already rolled the source back; the destination is ours to clean. */
  if (run.reply != NULL)
    session_abort (run.dst, run.reply);
  migrate_close_journal (&run, &args, error);
  return FALSE;
}
