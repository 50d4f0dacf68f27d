/* The phase commands for migration hooks: begin, prepare, perform, finish, abort. */
#include <stdio.h>

#include <glib/gstdio.h>

#include "common/error.h"
#include "common/escape.h"
#include "nbd/nbd-server.h"
#include "src/commands.h"
#include "src/control.h"
#include "src/names.h"
#include "src/op-id.h"
#include "src/options.h"
#include "src/session.h"

typedef struct {
  char *qmp;
  char *cookie;              /* input cookie file, "-" = stdin */
  char *output;              /* output cookie file, "-" = stdout */
} PhaseArgs;

static void
phase_args_clear (PhaseArgs *args)
{
  g_free (args->qmp);
  g_free (args->cookie);
  g_free (args->output);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (PhaseArgs, phase_args_clear)

#define PHASE_QMP_ENTRY(args) \
  { "qmp", 0, 0, G_OPTION_ARG_FILENAME, &(args)->qmp, "This side's QMP socket", "PATH" }
#define PHASE_COOKIE_ENTRY(args) \
  { "cookie", 'c', 0, G_OPTION_ARG_FILENAME, &(args)->cookie, \
    "Read the cookie from FILE (default: stdin)", "FILE" }
#define PHASE_OUTPUT_ENTRY(args) \
  { "output", 'o', 0, G_OPTION_ARG_FILENAME, &(args)->output, \
    "Write the new cookie to FILE (default: stdout)", "FILE" }

/* Parses the options and checks --qmp. */
static gboolean
phase_parse (int argc, char **argv, const char *summary, const GOptionEntry *entries,
             PhaseArgs *args, GError **error)
{
  if (!command_parse (&argc, &argv, "", summary, entries, error)
      || !command_require ("--qmp", args->qmp, error))
    return FALSE;
  if (argc > 1)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "unexpected argument '%s'", argv[1]), FALSE;
  return TRUE;
}

static const char *
phase_in (const PhaseArgs *args)
{
  return args->cookie != NULL ? args->cookie : "-";
}

static const char *
phase_out (const PhaseArgs *args)
{
  return args->output != NULL ? args->output : "-";
}

/* The offer goes into a journal of its own before it leaves: perform accepts only
 * an answer to an offer this host made (and removes it once done or rolled back). */
static gboolean
begin_record (const Cookie *offer, const char *qmp, const char *out, GError **error)
{
  g_autoptr(Journal) journal = journal_new (offer->id, "begin");

  journal->source_qmp = g_strdup (qmp);
  if (!session_journal (journal, JOURNAL_STEP_OFFERED, offer, error))
    return FALSE;
  if (cookie_save (offer, out, error))
    return TRUE;
  journal_remove (journal);
  return FALSE;
}

gboolean
cmd_begin (int argc, char **argv, GCancellable *cancellable, GError **error)
{
  g_auto(PhaseArgs) args = { 0 };
  g_auto(GStrv) disks = NULL;
  g_autofree char *mode_str = NULL;
  g_autofree char *chain = NULL;
  g_autofree char *op_id = NULL;
  const GOptionEntry entries[] = {
    PHASE_QMP_ENTRY (&args), PHASE_OUTPUT_ENTRY (&args),
    { "disk", 0, 0, G_OPTION_ARG_STRING_ARRAY, &disks, "Migrate only this disk; repeatable", "NAME" },
    { "mode", 'm', 0, G_OPTION_ARG_STRING, &mode_str, "live (default), copy or move", "MODE" },
    COMMAND_CHAIN_ENTRY (&chain),
    { "op-id", 0, 0, G_OPTION_ARG_STRING, &op_id,
      "The migration's id is derived from operation id ID (give perform the same --op-id)",
      "ID" },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr(QmpClient) qmp = NULL;
  g_autoptr(Cookie) cookie = NULL;
  ChainMode chain_mode = CHAIN_FULL;
  CookieMode mode;

  if (!phase_parse (argc, argv, "Describe the source's disks in a source cookie, and record "
                    "it as the offer perform checks the answer against.", entries, &args, error))
    return FALSE;
  if (!cookie_mode_from_string (mode_str != NULL ? mode_str : "live", &mode))
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "--mode must be live, copy or move, not '%s'", mode_str), FALSE;
  if (!options_chain (chain, &chain_mode, error)
      || (op_id != NULL && !control_check_id (op_id, error))
      || (qmp = qmp_client_connect_sync (args.qmp, "source", cancellable, error)) == NULL)
    return FALSE;
  cookie = session_begin (qmp, mode, (const char *const *) disks, chain_mode, cancellable,
                          error);
  if (cookie != NULL && op_id != NULL)
    {
      g_free (cookie->id);  /* the same offer id on every run: a re-run replaces the offer */
      cookie->id = op_id_migration_id (op_id);
    }
  return cookie != NULL && begin_record (cookie, args.qmp, phase_out (&args), error);
}

static char *
prepare_default_incoming (const NbdEndpoint *listen, GError **error)
{
  if (listen->unix_path != NULL)
    return g_strdup_printf ("unix:%s.migrate", listen->unix_path);
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
               "a live migration over TCP needs --incoming URI");
  return NULL;
}

/* A prepare of this migration killed half-way is recovered (rolled back) first. */
static gboolean
prepare_recover_killed (const Cookie *offer, GError **error)
{
  g_autoptr(GError) local = NULL;
  g_autoptr(Journal) journal = journal_find (offer->id, "prepare", &local);
  gboolean completed;

  if (local != NULL)
    return g_propagate_error (error, g_steal_pointer (&local)), FALSE;
  if (journal == NULL || journal->step == JOURNAL_STEP_PREPARED)
    return TRUE;
  return recover_journal (journal, stderr, &completed, error);
}

/* Prepare again for a migration this host has prepared: its answer again while its
 * exports are there (a re-run after a lost reply); if QEMU lost them, the old
 * journal goes and prepare starts afresh.  *answered: the answer was given. */
static gboolean
prepare_again (QmpClient *qmp, const Cookie *offer, const char *out, gboolean *answered,
               GError **error)
{
  g_autoptr(Journal) journal = journal_find (offer->id, "prepare", NULL);
  g_autofree char *first = names_export (offer->id, 0);
  g_auto(GStrv) exports = journal != NULL ? nbd_export_list (qmp, NULL, NULL) : NULL;

  *answered = FALSE;
  if (journal == NULL || journal->cookie == NULL)
    return TRUE;
  if (exports == NULL || !g_strv_contains ((const char *const *) exports, first))
    {
      journal_remove_created (journal, TRUE);
      journal_remove (journal);
      return TRUE;
    }
  *answered = TRUE;
  if (!common_options.quiet)
    g_printerr ("blkmig: migration %s is already prepared: its answer again\n", offer->id);
  return cookie_save (journal->cookie, out, error);
}

gboolean
cmd_prepare (int argc, char **argv, GCancellable *cancellable, GError **error)
{
  g_auto(PhaseArgs) args = { 0 };
  g_autofree char *listen = NULL;
  g_autofree char *create_dir = NULL;
  g_autofree char *incoming = NULL;
  g_autofree char *tls_dir = NULL;
  g_auto(GStrv) tls_authz = NULL;
  g_auto(GStrv) targets = NULL;
  g_autofree char *base_dir = NULL;
  g_auto(GStrv) bases = NULL;
  gboolean insecure = FALSE;
  gboolean keep_target = FALSE;
  const GOptionEntry entries[] = {
    PHASE_QMP_ENTRY (&args), PHASE_COOKIE_ENTRY (&args), PHASE_OUTPUT_ENTRY (&args),
    { "listen", 'l', 0, G_OPTION_ARG_STRING, &listen,
      "NBD server address: unix:PATH or tcp:HOST:PORT (PORT 0 = any free port)", "ADDR" },
    { "create-dir", 0, 0, G_OPTION_ARG_FILENAME, &create_dir,
      "Create missing targets in DIR (copy and move modes)", "DIR" },
    { "target", 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &targets,
      "Use (or create) PATH for disk NAME, even if it exists (then as the format its name "
      "says: .qcow2, .raw or .img); repeatable", "NAME=PATH" },
    { "incoming", 0, 0, G_OPTION_ARG_STRING, &incoming,
      "Memory stream URI for a live migration (default: unix:LISTEN-PATH.migrate)", "URI" },
    COMMAND_BASE_ENTRIES (&base_dir, &bases),
    COMMAND_TLS_ENTRIES (&tls_dir, &insecure),
    COMMAND_TLS_AUTHZ_ENTRY (&tls_authz),
    COMMAND_KEEP_TARGET_ENTRY (&keep_target),
    G_OPTION_ENTRY_NULL
  };
  g_autoptr(QmpClient) qmp = NULL;
  g_auto(NbdEndpoint) ep = { 0 };
  PrepareOptions opts = { .journal = NULL };
  g_autoptr(Cookie) offer = NULL;
  g_autoptr(Cookie) reply = NULL;
  g_autoptr(Journal) journal = NULL;
  gboolean answered;
  gboolean ok;

  if (!phase_parse (argc, argv, "Export the destination's targets for a source cookie.",
                    entries, &args, error)
      || !command_require ("--listen", listen, error)
      || !nbd_endpoint_parse (listen, &ep, error)
      || !options_name_path ("--target", (const char *const *) targets, error)
      || !options_name_path ("--base", (const char *const *) bases, error)
      || (offer = cookie_load (phase_in (&args), COOKIE_KIND_SOURCE, error)) == NULL)
    return FALSE;
  if (offer->mode == COOKIE_MODE_LIVE && incoming == NULL
      && (incoming = prepare_default_incoming (&ep, error)) == NULL)
    return FALSE;
  if (!prepare_recover_killed (offer, error)
      || (qmp = qmp_client_connect_sync (args.qmp, "destination", cancellable, error)) == NULL
      || !prepare_again (qmp, offer, phase_out (&args), &answered, error))
    return FALSE;
  if (answered)
    return TRUE;
  opts.listen = ep;
  opts.create_dir = create_dir;
  opts.incoming_uri = incoming;
  opts.tls_dir = tls_dir;
  opts.tls_authz = (const char *const *) tls_authz;
  opts.insecure = insecure;
  opts.targets = (const char *const *) targets;
  opts.base_dir = base_dir;
  opts.bases = (const char *const *) bases;
  opts.journal = journal = journal_new (offer->id, "prepare");
  journal->dest_qmp = g_strdup (args.qmp);
  journal->keep_targets = keep_target;  /* abort and recover keep them too */
  reply = session_prepare (qmp, offer, &opts, cancellable, error);
  /* the exports stay until finish or abort, and so does the journal */
  ok = reply != NULL && session_journal (journal, JOURNAL_STEP_PREPARED, reply, error)
       && cookie_save (reply, phase_out (&args), error);
  if (reply != NULL && !ok)
    {
      session_abort (qmp, reply);
      journal_remove_created (journal, TRUE);
    }
  if (!ok && qmp_client_get_state (qmp) == QMP_STATE_READY)
    journal_remove (journal);
  return ok;
}

/* The destination's answer must answer this host's own offer: the journal begin
 * wrote, with the same id, mode, disks, sizes and mandatory features. */
static gboolean
perform_check_offer (const Cookie *dest, GError **error)
{
  g_autoptr(GError) local_error = NULL;
  g_autoptr(Journal) offer = journal_find (dest->id, "begin", &local_error);

  if (offer == NULL && local_error == NULL)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_COOKIE,
                        "cookie: migration %s was not offered by begin on this host (or its "
                        "offer is gone)", dest->id), FALSE;
  if (offer == NULL || offer->cookie == NULL)
    {
      g_autofree char *why = blkmig_escape_controls (local_error != NULL ? local_error->message
                                                                     : "it holds no cookie");
      return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_COOKIE,
                          "cookie: the offer of migration %s is unreadable: %s", dest->id, why),
             FALSE;
    }
  return cookie_check_reply (offer->cookie, dest, error);
}

/* Events on stdout and the result cookie cannot share it. */
static gboolean
perform_check_outputs (const PhaseArgs *args, GError **error)
{
  if (!common_options.json || !g_str_equal (phase_out (args), "-"))
    return TRUE;
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
               "--json needs -o FILE: the result cookie would share stdout with the events");
  return FALSE;
}

#define PERFORM_SETTLE_CONNECT_MS 20000

/* The rollback gave up on a source QEMU that answered a cleanup command too late
 * (its connection closed): one more try on a new connection, as QEMU has usually
 * caught up by then (seen on QEMU 10.0 after a cut link: mirrors left concluded). */
static void
perform_settle (const char *path, const Cookie *dest, QmpClient **qmp)
{
  QmpClient *again;

  if (qmp_client_get_state (*qmp) == QMP_STATE_READY)
    return;
  qmp_client_set_connect_timeout_default (PERFORM_SETTLE_CONNECT_MS);
  again = qmp_client_connect_sync (path, "source", NULL, NULL);
  if (again == NULL)
    return;
  session_abort (again, dest);
  g_object_unref (*qmp);
  *qmp = again;
}

/* --op-id names this migration only if begin derived the migration id from it. */
static gboolean
perform_check_op_id (const Cookie *dest, const char *op_id, GError **error)
{
  g_autofree char *id = NULL;

  if (op_id == NULL)
    return TRUE;
  if (!control_check_id (op_id, error))
    return FALSE;
  id = op_id_migration_id (op_id);
  if (g_str_equal (id, dest->id))
    return TRUE;
  return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_COOKIE,
                      "the cookie is of migration %s, not of operation %s (give begin the same "
                      "--op-id)", dest->id, op_id), FALSE;
}

/* A re-run of a perform that succeeded gives its result cookie again. */
static gboolean
perform_report_done (const char *op_id, const char *done, const char *out, GError **error)
{
  g_autoptr(Cookie) result = op_id_load_result (op_id, error);

  if (result == NULL || !cookie_save (result, out, error))
    return g_prefix_error (error, "operation %s had already succeeded, but its result cookie: ",
                           op_id), FALSE;
  op_id_report_done (op_id, done, stderr);
  return TRUE;
}

gboolean
cmd_perform (int argc, char **argv, GCancellable *cancellable, GError **error)
{
  g_auto(PhaseArgs) args = { 0 };
  g_autofree char *uri = NULL;
  gboolean no_migrate = FALSE;
  gboolean verify = FALSE;
  g_autofree char *tunnel = NULL;
  g_autofree char *tunnel_command = NULL;
  g_autofree char *tunnel_compress = NULL;
  g_autofree char *tls_dir = NULL;
  g_autofree char *tls_hostname = NULL;
  gboolean insecure = FALSE;
  gboolean pass_fds = FALSE;
  gboolean local_destination = FALSE;
  gboolean hold = FALSE;
  g_autofree char *op_id = NULL;
  g_autofree char *done = NULL;
  ControlHostOptions host = { 0 };
  g_auto(MirrorTuning) mirror = MIRROR_TUNING_INIT;
  const GOptionEntry entries[] = {
    PHASE_QMP_ENTRY (&args), PHASE_COOKIE_ENTRY (&args), PHASE_OUTPUT_ENTRY (&args),
    { "migrate-uri", 0, 0, G_OPTION_ARG_STRING, &uri,
      "Memory stream URI (default: the destination cookie's, if it is tcp: to the host the "
      "disks go to, or unix: with --local-destination)", "URI" },
    { "no-migrate", 0, 0, G_OPTION_ARG_NONE, &no_migrate,
      "Live mode: copy the disks but do not migrate the VM", NULL },
    COMMAND_MIRROR_ENTRIES (&mirror),
    { "verify", 0, 0, G_OPTION_ARG_NONE, &verify,
      "Compare source and destination while both are quiescent", NULL },
    COMMAND_TUNNEL_ENTRIES (&tunnel, &tunnel_command, &tunnel_compress),
    COMMAND_TLS_ENTRIES (&tls_dir, &insecure),
    COMMAND_PASS_FDS_ENTRY (&pass_fds),
    { "tls-hostname", 0, 0, G_OPTION_ARG_STRING, &tls_hostname,
      "The name the destination's certificate carries (needed with --tls-creds unless the "
      "destination is local)", "NAME" },
    { "local-destination", 0, 0, G_OPTION_ARG_NONE, &local_destination,
      "The destination runs on this host: accept a UNIX socket or a loopback address from "
      "its cookie", NULL },
    COMMAND_HOLD_ENTRY (&hold),
    COMMAND_OP_ID_ENTRY (&op_id),
    COMMAND_HOST_ENTRIES (&host),
    COMMAND_EVENT_ENTRIES,
    G_OPTION_ENTRY_NULL
  };
  g_autoptr(QmpClient) qmp = NULL;
  g_autoptr(Control) control = NULL;  /* closed last: `ctl cancel` waits for the rollback */
  g_autoptr(Cookie) dest = NULL;
  g_autoptr(Cookie) result = NULL;
  g_autoptr(Journal) journal = NULL;
  SourceOptions sopts = { .progress_ms = 2000 };

  if (!phase_parse (argc, argv, "Mirror the source's disks into the destination's exports "
                    "and switch.", entries, &args, error)
      || !perform_check_outputs (&args, error)
      || !options_mirror_check (&mirror, error)
      || !options_host_check (&host, error)
      || (dest = cookie_load (phase_in (&args), COOKIE_KIND_DESTINATION, error)) == NULL
      || !perform_check_op_id (dest, op_id, error)
      || (control = control_open (op_id != NULL ? op_id : dest->id, dest->id, "perform",
                                  cancellable, error)) == NULL
      || (op_id != NULL && !op_id_before_start (op_id, "perform", dest->id, &done, error)))
    return FALSE;
  if (done != NULL)
    return perform_report_done (op_id, done, phase_out (&args), error);
  if (!control_join_host (&host, mirror.speed, error)
      || !perform_check_offer (dest, error)
      || (qmp = qmp_client_connect_sync (args.qmp, "source", cancellable, error)) == NULL)
    return FALSE;
  if (hold)
    control_enable_hold (common_options.quiet);
  sopts.hold = control_hold;
  sopts.mirror = mirror;
  sopts.verify = verify;
  sopts.tunnel_addr = tunnel;
  sopts.tunnel_command = tunnel_command;
  sopts.tunnel_compress = tunnel_compress;
  sopts.tls_dir = tls_dir;
  sopts.tls_hostname = tls_hostname;
  sopts.insecure = insecure;
  sopts.pass_fds = pass_fds;
  sopts.local_destination = local_destination;
  sopts.quiet = common_options.quiet;
  sopts.journal = journal = journal_new (dest->id, "perform");
  journal->source_qmp = g_strdup (args.qmp);
  journal->op_id = g_strdup (op_id);
  result = session_perform (qmp, dest, &sopts, uri, no_migrate, cancellable, error);
  if (result == NULL && journal->step != JOURNAL_STEP_NONE)
    perform_settle (args.qmp, dest, &qmp);
  if (journal->step != JOURNAL_STEP_NONE
      && (result != NULL || qmp_client_get_state (qmp) == QMP_STATE_READY))
    {
      journal_remove (journal);  /* done, or rolled back */
      journal_forget (dest->id, "begin");
    }
  if (result == NULL || !cookie_save (result, phase_out (&args), error))
    return FALSE;
  op_id_record_done (op_id, "perform", result->status, result);
  return TRUE;
}

gboolean
cmd_finish (int argc, char **argv, GCancellable *cancellable, GError **error)
{
  g_auto(PhaseArgs) args = { 0 };
  gboolean resume = FALSE;
  const GOptionEntry entries[] = {
    PHASE_QMP_ENTRY (&args), PHASE_COOKIE_ENTRY (&args),
    { "resume", 0, 0, G_OPTION_ARG_NONE, &resume,
      "Resume the destination guest even after a copy", NULL },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr(QmpClient) qmp = NULL;
  g_autoptr(Cookie) result = NULL;
  g_autoptr(Journal) journal = NULL;
  g_autoptr(GError) local = NULL;

  if (!phase_parse (argc, argv, "Tear down the destination's exports after perform.",
                    entries, &args, error)
      || (result = cookie_load (phase_in (&args), COOKIE_KIND_RESULT, error)) == NULL)
    return FALSE;
  /* prepare's journal, not the cookie, names the sockets to remove */
  if ((journal = journal_find (result->id, "prepare", &local)) == NULL && local != NULL)
    return g_propagate_error (error, g_steal_pointer (&local)), FALSE;
  if ((qmp = qmp_client_connect_sync (args.qmp, "destination", cancellable, error)) == NULL
      || !session_finish (qmp, result, journal, resume, cancellable, error))
    return FALSE;
  if (journal != NULL && journal->cookie != NULL && journal->cookie->mode != COOKIE_MODE_MOVE)
    journal_remove_created (journal, FALSE);  /* sockets: a move's exports stay */
  journal_forget (result->id, "prepare");
  return TRUE;
}

/* This side's journals of migration @id: the ones that name @qmp. */
static GPtrArray *
phase_side_journals (const char *id, const char *qmp, GError **error)
{
  static const char *const commands[] = { "begin", "prepare", "perform", NULL };
  g_autoptr(GPtrArray) found = g_ptr_array_new_with_free_func ((GDestroyNotify) journal_free);

  for (gsize i = 0; commands[i] != NULL; i++)
    {
      g_autoptr(GError) local = NULL;
      g_autoptr(Journal) stored = journal_find (id, commands[i], &local);

      if (g_error_matches (local, BLKMIG_ERROR, BLKMIG_ERROR_FAILED))
        return g_propagate_error (error, g_steal_pointer (&local)), NULL;
      if (stored != NULL && (g_strcmp0 (stored->source_qmp, qmp) == 0
                             || g_strcmp0 (stored->dest_qmp, qmp) == 0))
        g_ptr_array_add (found, g_steal_pointer (&stored));
    }
  return g_steal_pointer (&found);
}

/* Undoes this side.  A journal of this side wins over the cookie the caller gives
 * (which may come from the peer): only the journal names files to remove, and
 * without one nothing but QEMU's objects named after the migration id goes. */
static gboolean
phase_abort_side (QmpClient *qmp, const char *qmp_path, const Cookie *cookie, GError **error)
{
  g_autoptr(GPtrArray) journals = phase_side_journals (cookie->id, qmp_path, error);

  if (journals == NULL)
    return FALSE;
  session_abort (qmp, cookie);  /* QEMU objects by the id; files only as the journals list */
  for (guint i = 0; i < journals->len; i++)
    {
      Journal *journal = journals->pdata[i];
      journal_remove_created (journal, TRUE);
      journal_remove (journal);
    }
  return TRUE;
}

gboolean
cmd_abort (int argc, char **argv, GCancellable *cancellable, GError **error)
{
  g_auto(PhaseArgs) args = { 0 };
  const GOptionEntry entries[] = {
    PHASE_QMP_ENTRY (&args), PHASE_COOKIE_ENTRY (&args), G_OPTION_ENTRY_NULL
  };
  g_autoptr(QmpClient) qmp = NULL;
  g_autoptr(Cookie) cookie = NULL;

  if (!phase_parse (argc, argv, "Undo what this migration left on this side.", entries,
                    &args, error)
      || (cookie = cookie_load (phase_in (&args), COOKIE_KIND_SOURCE, error)) == NULL
      || (qmp = qmp_client_connect_sync (args.qmp, "qemu", cancellable, error)) == NULL)
    return FALSE;
  return phase_abort_side (qmp, args.qmp, cookie, error);
}
