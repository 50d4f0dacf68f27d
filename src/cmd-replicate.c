/* blkmig replicate: a standby's copy of a running VM's disks, with checkpoints and failover. */
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include <glib-unix.h>

#include "common/error.h"
#include "common/escape.h"
#include "qmp/qmp-commands.h"
#include "src/commands.h"
#include "src/control.h"
#include "src/disks.h"
#include "src/events.h"
#include "src/exit-code.h"
#include "src/names.h"
#include "src/options.h"
#include "src/replicate.h"
#include "src/session.h"
#include "src/util.h"

#define REPLICATE_DEFAULT_INTERVAL 5.0
#define REPLICATE_RECONNECT_DELAY 1
#define REPLICATE_STOP_WAIT_MS 120000

typedef struct {
  char *primary;
  char *standby;
  char **disks;
  char **replicas;
  double interval;
  char *id;
  char *listen;
  MirrorTuning mirror;
  char *tunnel;
  char *tunnel_command;
  char *tunnel_compress;
  char *tls_dir;
  char **tls_authz;
  gboolean insecure;
} ReplicateArgs;

static void
replicate_args_clear (ReplicateArgs *args)
{
  g_free (args->primary);
  g_free (args->standby);
  g_strfreev (args->disks);
  g_strfreev (args->replicas);
  g_free (args->id);
  g_free (args->listen);
  mirror_tuning_clear (&args->mirror);
  g_free (args->tunnel);
  g_free (args->tunnel_command);
  g_free (args->tunnel_compress);
  g_free (args->tls_dir);
  g_strfreev (args->tls_authz);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (ReplicateArgs, replicate_args_clear)

/* ---- the replicas ----------------------------------------------------------- */

static const char *
replicate_format_of (const char *path)
{
  if (g_str_has_suffix (path, ".qcow2"))
    return "qcow2";
  if (g_str_has_suffix (path, ".raw") || g_str_has_suffix (path, ".img"))
    return "raw";
  return NULL;
}

/* Every disk of the offer has its --replica: an absolute path ending in .qcow2,
 * .raw or .img (the format is never the peer's word, nor a probe). */
static Replica *
replicate_plan (const Cookie *offer, const ReplicateArgs *args, GError **error)
{
  g_autoptr(Replica) replica = replica_new (offer->id);

  for (guint i = 0; i < offer->disks->len; i++)
    {
      CookieDisk *disk = offer->disks->pdata[i];
      g_autofree char *prefix = g_strdup_printf ("%s=", disk->name);
      const char *path = NULL;
      g_autofree char *safe = blkmig_escape (disk->name);

      for (guint j = 0; args->replicas != NULL && args->replicas[j] != NULL; j++)
        if (g_str_has_prefix (args->replicas[j], prefix))
          path = args->replicas[j] + strlen (prefix);
      if (path == NULL)
        return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                            "disk %s has no --replica %s=PATH", safe, safe), NULL;
      if (!g_path_is_absolute (path) || replicate_format_of (path) == NULL)
        return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                            "--replica %s: the path must be absolute and end in .qcow2, "
                            ".raw or .img", safe), NULL;
      if (!g_str_equal (replicate_format_of (path), disk->format))
        return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                            "--replica %s: a %s image by its name, the primary's disk is %s",
                            safe, replicate_format_of (path), disk->format), NULL;
      replica_add_disk (replica, disk->name, path, replicate_format_of (path));
    }
  return g_steal_pointer (&replica);
}

/* --target NAME=PATH entries for prepare, from the record. */
static GStrv
replicate_targets (const Replica *replica)
{
  GStrv targets = g_new0 (char *, replica->disks->len + 1);

  for (guint i = 0; i < replica->disks->len; i++)
    {
      ReplicaDisk *disk = replica->disks->pdata[i];

      targets[i] = g_strdup_printf ("%s=%s", disk->name, disk->replica);
    }
  return targets;
}

static GStrv
replicate_disk_names (const Replica *replica)
{
  GStrv names = g_new0 (char *, replica->disks->len + 1);

  for (guint i = 0; i < replica->disks->len; i++)
    names[i] = g_strdup (((ReplicaDisk *) replica->disks->pdata[i])->name);
  return names;
}

/* The nodes the primary's bitmaps go on: each disk's root before any mirror. */
static GStrv
replicate_disk_nodes (QmpClient *primary, const Cookie *offer, GError **error)
{
  g_autoptr(GPtrArray) disks = disks_query (primary, TRUE, NULL, error);
  g_auto(GStrv) nodes = NULL;

  if (disks == NULL)
    return NULL;
  nodes = g_new0 (char *, offer->disks->len + 1);
  for (guint i = 0; i < offer->disks->len; i++)
    {
      CookieDisk *disk = offer->disks->pdata[i];
      DiskInfo *info = disks_find (disks, disk->name);

      if (info == NULL)
        return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                            "%s: the primary no longer has this disk", disk->name), NULL;
      nodes[i] = g_strdup (info->node);
    }
  return g_steal_pointer (&nodes);
}

static GStrv
replicate_tops (const Cookie *reply)
{
  GStrv tops = g_new0 (char *, reply->disks->len + 1);

  for (guint i = 0; i < reply->disks->len; i++)
    tops[i] = g_strdup (((CookieDisk *) reply->disks->pdata[i])->target_node);
  return tops;
}

/* ---- running: start and resync ---------------------------------------------- */

typedef struct {
  ReplicateRun run;
  QmpClient *primary;
  QmpClient *standby;
  char *private_dir;
  Cookie *offer;
  Cookie *reply;
  GCancellable *cancellable;  /* perform's: signals reach it only outside the loop */
  gulong forward_id;
  guint usr1_id;
  gboolean resync;
  gint64 resync_bytes;
  Control *control;           /* `blkmig ctl ID`: cancel stops it as SIGINT does */
} ReplicateSession;

static void
replicate_session_clear (ReplicateSession *s)
{
  g_clear_pointer (&s->control, control_close);
  if (s->forward_id != 0)
    g_cancellable_disconnect (s->run.stop, s->forward_id);
  if (s->usr1_id != 0)
    g_source_remove (s->usr1_id);
  g_clear_pointer (&s->run.replica, replica_free);
  g_clear_pointer (&s->run.disk_nodes, g_strfreev);
  g_clear_pointer (&s->run.tops, g_strfreev);
  g_clear_pointer (&s->run.commits, job_group_free);
  g_clear_pointer (&s->reply, cookie_free);
  g_clear_pointer (&s->offer, cookie_free);
  if (s->private_dir != NULL)
    util_private_dir_remove (s->private_dir);
  g_clear_pointer (&s->private_dir, g_free);
  g_clear_object (&s->cancellable);
  g_clear_object (&s->standby);
  g_clear_object (&s->primary);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (ReplicateSession, replicate_session_clear)

static gboolean
replicate_usr1_cb (gpointer data)
{
  ReplicateSession *s = data;

  s->run.checkpoint_asked = TRUE;
  return G_SOURCE_CONTINUE;
}

/* SIGINT/SIGTERM: in the loop they stop replication (a last checkpoint, then an
 * orderly end); before it they cancel like anywhere else. */
static void
replicate_forward_cancel (GCancellable *signals, gpointer data)
{
  ReplicateSession *s = data;

  if (!s->run.holding)
    g_cancellable_cancel (s->cancellable);
}

static gboolean
replicate_hold_cb (gpointer data, JobGroup *group, GCancellable *cancellable, GError **error)
{
  ReplicateSession *s = data;

  if (s->resync)
    events_emit ("resync", "bytes", qmp_int (s->resync_bytes),
                 "checkpoint", qmp_int (s->run.replica->checkpoint), NULL);
  return replicate_hold (&s->run, group, cancellable, error);
}

static gboolean
replicate_prepare (ReplicateSession *s, const ReplicateArgs *args, GError **error)
{
  g_autofree char *nbd = g_build_filename (s->private_dir, "nbd.sock", NULL);
  g_auto(GStrv) targets = replicate_targets (s->run.replica);
  g_auto(NbdEndpoint) listen = { 0 };
  PrepareOptions opts = {
    .listen = { .unix_path = nbd },
    .tls_dir = args->tls_dir,
    .tls_authz = (const char *const *) args->tls_authz,
    .insecure = args->insecure,
    .targets = (const char *const *) targets,
  };

  if (args->listen != NULL)
    {
      if (!nbd_endpoint_parse (args->listen, &listen, error))
        return FALSE;
      opts.listen = listen;
    }
  s->reply = session_prepare (s->standby, s->offer, &opts, s->cancellable, error);
  return s->reply != NULL && cookie_check_reply (s->offer, s->reply, error);
}

static Cookie *
replicate_perform (ReplicateSession *s, const ReplicateArgs *args, GError **error)
{
  g_autofree char *bitmap = s->resync ? names_bitmap (s->offer->id, s->run.replica->checkpoint)
                                      : NULL;
  SourceOptions opts = {
    .mirror = args->mirror,
    .quiet = common_options.quiet,
    .progress_ms = 2000,
    .tunnel_addr = args->tunnel,
    .tunnel_command = args->tunnel_command,
    .tunnel_compress = args->tunnel_compress,
    .tls_dir = args->tls_dir,
    .insecure = args->insecure,
    .local_destination = TRUE,  /* one process drives both QEMUs */
    .hold = replicate_hold_cb,
    .hold_data = s,
    .name_filters = TRUE,
    .resync_bitmap = bitmap,
    .resync_bytes = &s->resync_bytes,
  };

  /* every acknowledged guest write is on the standby (parse refused any other mode) */
  opts.mirror.copy_mode = (char *) "write-blocking";
  if (opts.mirror.reconnect_delay < 0)
    opts.mirror.reconnect_delay = REPLICATE_RECONNECT_DELAY;
  s->run.disk_nodes = replicate_disk_nodes (s->primary, s->offer, error);
  if (s->run.disk_nodes == NULL)
    return NULL;
  s->run.tops = replicate_tops (s->reply);
  s->run.reply = s->reply;
  return session_perform (s->primary, s->reply, &opts, NULL, FALSE, s->cancellable, error);
}

/* Stopped on request: both sides torn down, each replica made its state at the
 * last checkpoint, the record removed. */
static gboolean
replicate_stopped (ReplicateSession *s, GError **error)
{
  Replica *replica = s->run.replica;

  replicate_end_commit (&s->run, TRUE);
  replicate_clean_qemu (s->standby, replica->id);
  replicate_clean_qemu (s->primary, replica->id);
  if (replica->checkpoint == 0)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED,
                        "stopped before any checkpoint: the replicas are incomplete "
                        "(blkmig replicate stop --id %s removes the record)", replica->id), FALSE;
  if (!replica_compose (replica, replica->checkpoint, NULL, error))
    return FALSE;
  replica_remove (replica);
  events_emit ("stopped", "checkpoint", qmp_int (replica->checkpoint), NULL);
  if (!common_options.quiet && !common_options.json)
    printf ("blkmig: replication %s stopped at checkpoint %u\n", replica->id,
            replica->checkpoint);
  return TRUE;
}

/* Failed before the first checkpoint of a new replication: nothing worth keeping. */
static void
replicate_discard (ReplicateSession *s)
{
  for (guint i = 0; s->reply != NULL && i < s->reply->disks->len; i++)
    {
      CookieDisk *disk = s->reply->disks->pdata[i];
      g_autoptr(GError) ignored = NULL;

      if (disk->created)
        replica_unlink_file (disk->target_path, &ignored);
    }
  replica_drop_layers (s->run.replica, 0, G_MAXUINT, NULL);
  replica_remove (s->run.replica);
}

/* A side was lost (or something else failed): the standby is left with nothing
 * of ours in QEMU, the record says what happened. */
static void
replicate_failed (ReplicateSession *s, GError **error)
{
  Replica *replica = s->run.replica;
  int code = blkmig_error_exit_code (*error);
  const char *state = code == BLKMIG_ERROR_PRIMARY_LOST ? "primary-lost" : "degraded";

  if (replica == NULL)
    return;
  replicate_end_commit (&s->run, TRUE);
  replicate_clean_qemu (s->standby, replica->id);
  if (s->reply != NULL)
    session_abort (s->primary, s->reply);
  if (replica->checkpoint == 0 && !s->resync)
    {
      replicate_discard (s);
      return;
    }
  g_free (replica->state);
  replica->state = g_strdup (state);
  replica->pid = 0;
  replica_save (replica, NULL);
  if (code == BLKMIG_ERROR_PRIMARY_LOST)
    {
      events_emit ("primary-lost", "checkpoint", qmp_int (replica->checkpoint), NULL);
      g_clear_error (error);
      g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_PRIMARY_LOST,
                   "the primary QEMU is gone; the last acknowledged checkpoint is %u: "
                   "run blkmig replicate failover --id %s", replica->checkpoint, replica->id);
      return;
    }
  events_emit ("degraded", "checkpoint", qmp_int (replica->checkpoint),
               "message", qmp_str ((*error)->message), NULL);
  if (code != BLKMIG_ERROR_DEGRADED && code != BLKMIG_ERROR_INTERRUPTED)
    (*error)->code = BLKMIG_ERROR_DEGRADED, (*error)->domain = BLKMIG_ERROR;
  g_prefix_error (error, "replication degraded at checkpoint %u, the primary runs on "
                  "(run blkmig replicate resync --id %s once the standby is back): ",
                  replica->checkpoint, replica->id);
}

static gboolean
replicate_connect (ReplicateSession *s, const ReplicateArgs *args, GError **error)
{
  return (s->primary = qmp_client_connect_sync (args->primary, "primary", s->cancellable,
                                                error)) != NULL
         && (s->standby = qmp_client_connect_sync (args->standby, "standby", s->cancellable,
                                                   error)) != NULL
         && (s->private_dir = util_private_dir_new (error)) != NULL;
}

/* The offer describes the primary's disks (as for a copy); a resync keeps the id. */
static gboolean
replicate_offer (ReplicateSession *s, const ReplicateArgs *args, Replica *old, GError **error)
{
  g_auto(GStrv) names = old != NULL ? replicate_disk_names (old) : g_strdupv (args->disks);

  s->offer = session_begin (s->primary, COOKIE_MODE_COPY, (const char *const *) names,
                            CHAIN_FULL, s->cancellable, error);
  if (s->offer == NULL)
    return FALSE;
  if (old != NULL)
    {
      g_free (s->offer->id);
      s->offer->id = g_strdup (old->id);
      s->run.replica = old;
      return TRUE;
    }
  s->run.replica = replicate_plan (s->offer, args, error);
  return s->run.replica != NULL;
}

static gboolean
replicate_begin (ReplicateSession *s, const ReplicateArgs *args, GError **error)
{
  Replica *replica = s->run.replica;

  g_free (replica->primary_qmp);
  replica->primary_qmp = g_strdup (args->primary);
  g_free (replica->standby_qmp);
  replica->standby_qmp = g_strdup (args->standby);
  g_free (replica->state);
  replica->state = g_strdup ("syncing");
  replica->pid = getpid ();
  if (s->resync && !replica_compose (replica, replica->checkpoint, s->cancellable, error))
    return g_prefix_error (error, "resync: the standby's files: "), FALSE;
  if (!replica_save (replica, error))
    return FALSE;
  events_emit ("replicate", "id", qmp_str (replica->id),
               "disks", qmp_int (replica->disks->len), NULL);
  if (!common_options.quiet && !common_options.json)
    g_printerr ("blkmig: replication %s: %u disk%s\n", replica->id, replica->disks->len,
                replica->disks->len == 1 ? "" : "s");
  return TRUE;
}

static gboolean
replicate_session (ReplicateSession *s, const ReplicateArgs *args, Replica *old,
                   GError **error)
{
  g_autoptr(Cookie) result = NULL;

  s->resync = old != NULL;
  s->run.interval_s = args->interval > 0 ? args->interval : REPLICATE_DEFAULT_INTERVAL;
  s->run.delay_ms = (guint) g_ascii_strtoull (g_getenv ("BLKMIG_TEST_CHECKPOINT_DELAY_MS") ?: "0",
                                              NULL, 10);
  s->run.commit_speed = g_ascii_strtoll (g_getenv ("BLKMIG_TEST_COMMIT_SPEED") ?: "0", NULL, 10);
  s->forward_id = g_cancellable_connect (s->run.stop, G_CALLBACK (replicate_forward_cancel), s,
                                         NULL);
  s->usr1_id = g_unix_signal_add (SIGUSR1, replicate_usr1_cb, s);
  if (!replicate_connect (s, args, error) || !replicate_offer (s, args, old, error))
    return FALSE;
  s->run.primary = s->primary;
  s->run.standby = s->standby;
  s->run.commits = job_group_new (s->standby);
  if (replicate_begin (s, args, error)
      && (s->control = control_open (s->run.replica->id, s->offer->id, "replicate", s->run.stop,
                                     error)) != NULL
      && replicate_prepare (s, args, error)
      && (result = replicate_perform (s, args, error)) != NULL)
    return replicate_stopped (s, error);
  replicate_failed (s, error);
  return FALSE;
}

/* ---- the other subcommands -------------------------------------------------- */

/* The process replicating @replica, if it is still running. */
static gboolean
replicate_process_alive (const Replica *replica)
{
  g_autofree char *path = NULL;
  g_autofree char *cmdline = NULL;
  gsize len = 0;

  if (replica->pid <= 1 || replica->pid > G_MAXINT32)
    return FALSE;
  path = g_strdup_printf ("/proc/%" G_GINT64_FORMAT "/cmdline", replica->pid);
  if (!g_file_get_contents (path, &cmdline, &len, NULL))
    return FALSE;
  /* argv[0..]: "...blkmig\0replicate\0..." */
  for (gsize i = 0; i + 1 < len; i++)
    if (cmdline[i] == '\0' && g_str_equal (cmdline + i + 1, "replicate"))
      return TRUE;
  return FALSE;
}

static gboolean
replicate_status (const ReplicateArgs *args, GError **error)
{
  g_autoptr(Replica) replica = replica_load (args->id, error);
  g_autoptr(JsonNode) status = NULL;
  g_autofree char *text = NULL;
  JsonObject *obj;

  if (replica == NULL)
    return FALSE;
  status = replica_status_json (replica);
  obj = json_node_get_object (status);
  json_object_set_boolean_member (obj, "running", replicate_process_alive (replica));
  if (common_options.json)
    {
      text = json_to_string (status, FALSE);
      printf ("%s\n", text);
      return TRUE;
    }
  printf ("replication %s: %s%s, checkpoint %u", replica->id, replica->state,
          replicate_process_alive (replica) ? "" : " (no process)", replica->checkpoint);
  if (replica->checkpoint_us > 0)
    printf (", %" G_GINT64_FORMAT " ms ago", json_object_get_int_member (obj, "lag-ms"));
  printf ("\n");
  return TRUE;
}

/* The signal @signo to the running replication (checkpoint, stop). */
static gboolean
replicate_signal (const Replica *replica, int signo, GError **error)
{
  if (!replicate_process_alive (replica))
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED,
                        "replication %s has no running process", replica->id), FALSE;
  if (kill ((pid_t) replica->pid, signo) != 0)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED, "cannot signal process %"
                        G_GINT64_FORMAT ": %s", replica->pid, g_strerror (errno)), FALSE;
  return TRUE;
}

static gboolean
replicate_ask_checkpoint (const ReplicateArgs *args, GError **error)
{
  g_autoptr(Replica) replica = replica_load (args->id, error);

  return replica != NULL && replicate_signal (replica, SIGUSR1, error);
}

/* Removes what replication @replica left in the QEMU behind @path (may be NULL). */
static void
replicate_clean_path (const char *path, const char *label, const char *id)
{
  g_autoptr(QmpClient) qmp = NULL;

  if (path == NULL || util_qmp_gone (path))
    return;
  qmp = qmp_client_connect_sync (path, label, NULL, NULL);
  replicate_clean_qemu (qmp, id);
}

static void
replicate_report_failover (const Replica *replica)
{
  g_autoptr(GDateTime) when = g_date_time_new_from_unix_local (replica->checkpoint_us / G_USEC_PER_SEC);
  g_autofree char *time = g_date_time_format_iso8601 (when);

  events_emit ("failover", "checkpoint", qmp_int (replica->checkpoint),
               "time-us", qmp_int (replica->checkpoint_us), NULL);
  if (common_options.quiet || common_options.json)
    return;
  printf ("blkmig: failover to checkpoint %u of %s:", replica->checkpoint, time);
  for (guint i = 0; i < replica->disks->len; i++)
    {
      ReplicaDisk *disk = replica->disks->pdata[i];
      g_autofree char *name = blkmig_escape (disk->name);
      g_autofree char *path = blkmig_escape (disk->replica);

      printf (" %s %s", name, path);
    }
  printf ("\n");
}

static gboolean
replicate_failover (const ReplicateArgs *args, GCancellable *cancellable, GError **error)
{
  g_autoptr(Replica) replica = replica_load (args->id, error);

  if (replica == NULL)
    return FALSE;
  if (replicate_process_alive (replica))
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED,
                        "replication %s is still running (process %" G_GINT64_FORMAT "): "
                        "failover is for when the primary is gone", replica->id,
                        replica->pid), FALSE;
  if (replica->checkpoint == 0)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED,
                        "replication %s has no acknowledged checkpoint: the replicas are "
                        "incomplete", replica->id), FALSE;
  replicate_clean_path (args->standby, "standby", replica->id);
  if (!replica_failover (replica, cancellable, error))
    return FALSE;
  replicate_report_failover (replica);
  return TRUE;
}

/* A running replication is told to stop and waited for; otherwise its leftovers
 * go from here (QEMU objects through the sockets given or recorded). */
static gboolean
replicate_stop (const ReplicateArgs *args, GCancellable *cancellable, GError **error)
{
  g_autoptr(Replica) replica = replica_load (args->id, error);

  if (replica == NULL)
    return FALSE;
  if (replicate_process_alive (replica))
    {
      if (!replicate_signal (replica, SIGTERM, error))
        return FALSE;
      for (guint waited = 0; g_file_test (replica->path, G_FILE_TEST_EXISTS)
                             && replicate_process_alive (replica); waited += 100)
        {
          if (waited > REPLICATE_STOP_WAIT_MS || g_cancellable_is_cancelled (cancellable))
            return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED,
                                "replication %s did not stop", replica->id), FALSE;
          g_usleep (100 * 1000);
        }
      return TRUE;
    }
  replicate_clean_path (args->primary ?: replica->primary_qmp, "primary", replica->id);
  replicate_clean_path (args->standby ?: replica->standby_qmp, "standby", replica->id);
  if (replica->checkpoint > 0
      && !replica_compose (replica, replica->checkpoint, cancellable, error))
    return g_prefix_error (error, "stop: "), FALSE;
  if (replica->checkpoint == 0 && !replica_drop_layers (replica, 0, G_MAXUINT, error))
    return FALSE;
  replica_remove (replica);
  if (!common_options.quiet && !common_options.json)
    printf ("blkmig: replication %s stopped at checkpoint %u\n", replica->id,
            replica->checkpoint);
  return TRUE;
}

/* ---- parsing ------------------------------------------------------------------ */

static gboolean
replicate_parse (const char *sub, int argc, char **argv, ReplicateArgs *args, GError **error)
{
  const GOptionEntry entries[] = {
    { "primary", 0, 0, G_OPTION_ARG_FILENAME, &args->primary, "The primary QEMU's QMP socket", "PATH" },
    { "standby", 0, 0, G_OPTION_ARG_FILENAME, &args->standby,
      "The standby's QMP socket (a qemu-storage-daemon or a QEMU; blkmig makes everything in it)",
      "PATH" },
    { "disk", 0, 0, G_OPTION_ARG_STRING_ARRAY, &args->disks,
      "start: replicate only this disk (qdev id, BlockBackend or node name); repeatable", "NAME" },
    { "replica", 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &args->replicas,
      "start: disk NAME's replica on the standby host (made when missing; .qcow2, .raw or "
      ".img); repeatable", "NAME=PATH" },
    { "interval", 0, 0, G_OPTION_ARG_DOUBLE, &args->interval,
      "Seconds between checkpoints (default 5; SIGUSR1 or replicate checkpoint asks for one "
      "at once)", "SECONDS" },
    { "id", 0, 0, G_OPTION_ARG_STRING, &args->id,
      "The replication (resync, checkpoint, status, failover, stop)", "ID" },
    { "listen", 0, 0, G_OPTION_ARG_STRING, &args->listen,
      "Where the standby's NBD server listens (default: a private UNIX socket)", "ADDR" },
    COMMAND_MIRROR_ENTRIES (&args->mirror),
    COMMAND_TUNNEL_ENTRIES (&args->tunnel, &args->tunnel_command, &args->tunnel_compress),
    COMMAND_TLS_ENTRIES (&args->tls_dir, &args->insecure),
    COMMAND_TLS_AUTHZ_ENTRY (&args->tls_authz),
    COMMAND_EVENT_ENTRIES,
    G_OPTION_ENTRY_NULL
  };

  if (!command_parse (&argc, &argv, "start|resync|checkpoint|status|failover|stop",
                      "Keep a standby's copy of a running VM's disks: the primary's writes "
                      "reach the standby as they happen, checkpoints (consistent across disks) "
                      "are acknowledged every interval, failover gives the disks as of the "
                      "last one.", entries, error)
      || !options_mirror_check (&args->mirror, error)
      || !options_tunnel_compress (args->tunnel_compress, args->tunnel, args->tunnel_command,
                                   NULL, error)
      || !options_name_path ("--replica", (const char *const *) args->replicas, error))
    return FALSE;
  if (args->mirror.copy_mode != NULL && !g_str_equal (args->mirror.copy_mode, "write-blocking"))
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "replicate mirrors write-blocking only, not --copy-mode %s",
                        args->mirror.copy_mode), FALSE;
  if (args->interval < 0 || args->interval > 86400)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "--interval must be between 0 and 86400 seconds"), FALSE;
  if (g_str_equal (sub, "start") || g_str_equal (sub, "resync"))
    return command_require ("--primary", args->primary, error)
           && command_require ("--standby", args->standby, error)
           && (g_str_equal (sub, "start") || command_require ("--id", args->id, error));
  return command_require ("--id", args->id, error);
}

static gboolean
replicate_run_sub (const char *sub, const ReplicateArgs *args, GCancellable *cancellable,
                   GError **error)
{
  g_auto(ReplicateSession) s = { .run.stop = cancellable };
  g_autoptr(Replica) old = NULL;

  s.cancellable = g_cancellable_new ();
  if (g_str_equal (sub, "resync"))
    {
      if ((old = replica_load (args->id, error)) == NULL)
        return FALSE;
      if (replicate_process_alive (old))
        return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED,
                            "replication %s is still running", old->id), FALSE;
      if (old->checkpoint == 0)
        return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED,
                            "replication %s has no acknowledged checkpoint to resync from: "
                            "stop it and start again", old->id), FALSE;
    }
  return replicate_session (&s, args, g_steal_pointer (&old), error);
}

gboolean
cmd_replicate (int argc, char **argv, GCancellable *cancellable, GError **error)
{
  static const char *const subs[] = { "start", "resync", "checkpoint", "status", "failover",
                                      "stop", NULL };
  g_auto(ReplicateArgs) args = { .mirror = MIRROR_TUNING_INIT };
  const char *sub = argc > 1 ? argv[1] : "";

  if (!g_strv_contains (subs, sub) && !g_str_has_prefix (sub, "-"))
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "unknown subcommand '%s': start, resync, checkpoint, status, failover "
                        "or stop", sub), FALSE;
  if (!replicate_parse (sub, argc - (*sub != '-'), argv + (*sub != '-'), &args, error))
    return FALSE;
  if (g_str_equal (sub, "status"))
    return replicate_status (&args, error);
  if (g_str_equal (sub, "checkpoint"))
    return replicate_ask_checkpoint (&args, error);
  if (g_str_equal (sub, "failover"))
    return replicate_failover (&args, cancellable, error);
  if (g_str_equal (sub, "stop"))
    return replicate_stop (&args, cancellable, error);
  return replicate_run_sub (sub, &args, cancellable, error);
}
