/* Source side of a migration: the offer (begin), the mirrors and the switch (perform). */
#include "src/session.h"

#include "common/debug.h"
#include "common/error.h"
#include "common/escape.h"
#include <gio/gunixsocketaddress.h>

#include "nbd/nbd-tls.h"
#include "nbd/verify.h"
#include "nbd/zeroes.h"
#include "qmp/qmp-commands.h"
#include "qmp/qmp-json.h"
#include "qmp/qmp-wait.h"
#include "src/disks.h"
#include "src/chain.h"
#include "src/control.h"
#include "src/events.h"
#include "src/names.h"
#include "src/progress.h"
#include "src/source-copy-base.h"
#include "src/source-trust.h"
#include "src/source-tunnel.h"

/* The memory migration has no natural bound; this only guards against a hang. */
#define MIGRATION_TIMEOUT_MS (6 * 3600 * 1000)
/* Asking whether a target reads as zeroes (a connection and a block status per
 * 4 GiB, ~6 round trips for a sparse 1 GiB) pays where the pre-zeroing it saves
 * costs more: 16 round trips and up.  Past the time limit the answer is "no". */
#define ZERO_CHECK_MIN_SIZE (G_GINT64_CONSTANT (512) << 20)
#define ZERO_CHECK_TIMEOUT_MS (10 * 1000)

typedef struct {
  QmpClient *qmp;
  const Cookie *cookie;
  const SourceOptions *opts;
  JobGroup *group;
  gint64 stopped_us;          /* when the source paused for switchover */
  GPtrArray *files;           /* per disk: the source image, for --verify */
  GPtrArray *backing;         /* per disk: its backing files (GStrv), for copy-base */
  GPtrArray *backing_formats; /* per disk: their formats (GStrv) */
  GPtrArray *nodes;           /* per disk: its root node before the mirror (resync) */
  BaseCopy *base;             /* copy-base: the layers being copied */
  SourceTunnel tunnel;        /* --tunnel: where QEMU's NBD clients connect instead */
  SourcePlan plan;            /* what was decided from the cookie and the options */
  GArray *target_zero;        /* gboolean per disk: its target reads as zeroes */
  guint zero_questions;       /* source_ask_target_zeroes: not answered yet */
} SourceRun;

/* The source's machine type for the destination's check; none when QEMU cannot
 * tell, or tells something that is not a QEMU name. */
static char *
source_machine_type (QmpClient *src, GCancellable *cancellable)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *type = qmp_query_machine_type (src, cancellable, &error);

  if (type == NULL || !cookie_is_name (type))
    return NULL;
  return g_steal_pointer (&type);
}

/* --chain top or copy-base: a disk with backing files mirrors its active layer only;
 * the layers below are described (top: with the identities the destination checks
 * its own copy against) and the feature the destination must know is offered. */
static gboolean
source_describe_chain (Cookie *cookie, CookieDisk *cd, const DiskInfo *d, ChainMode chain,
                       GCancellable *cancellable, GError **error)
{
  const char *feature = chain == CHAIN_TOP ? "chain-top" : "chain-copy-base";

  if (d->backing == NULL || chain == CHAIN_FULL)
    return TRUE;
  if (chain == CHAIN_COPY_BASE && cookie->mode == COOKIE_MODE_MOVE)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "--chain copy-base works with --mode live and copy, not move (the "
                        "source would pivot onto a top whose chain is still being copied)"),
           FALSE;
  cd->chain = chain_describe (d, chain == CHAIN_TOP, cancellable, error);
  if (cd->chain == NULL)
    return FALSE;
  cd->sync = g_strdup (chain == CHAIN_TOP ? "top" : "copy-base");
  if (!cookie_has_feature (cookie, feature))
    cookie_add_feature (cookie, feature, TRUE);
  return TRUE;
}

static Cookie *
source_begin (QmpClient *src, CookieMode mode, const char *const *names, ChainMode chain,
              GCancellable *cancellable, GError **error)
{
  g_autoptr(GPtrArray) disks = disks_query (src, names != NULL && names[0] != NULL, cancellable, error);
  g_autoptr(GPtrArray) chosen = NULL;
  g_autoptr(Cookie) cookie = NULL;

  if (disks == NULL)
    return NULL;
  chosen = disks_select (disks, names, "the source", error);
  if (chosen == NULL)
    return NULL;
  if (chosen->len == 0)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                        "the source has no disks to migrate"), NULL;
  events_emit ("phase", "phase", qmp_str ("begin"), "disks", qmp_int (chosen->len), NULL);
  cookie = cookie_new (mode);
  cookie->machine = source_machine_type (src, cancellable);
  if (cookie_is_qemu_version (qmp_client_get_version (src)))
    cookie->source_qemu = g_strdup (qmp_client_get_version (src));
  cookie_add_feature (cookie, "sparse", FALSE);
  for (guint i = 0; i < chosen->len; i++)
    {
      DiskInfo *d = chosen->pdata[i];
      CookieDisk *cd = cookie_disk_new (d->name, d->node, d->format, d->virtual_size,
                                        d->allocated);
      cd->backing = g_strdupv (d->backing);
      g_ptr_array_add (cookie->disks, cd);
      if (!source_describe_chain (cookie, cd, d, chain, cancellable, error))
        return NULL;
    }
  return g_steal_pointer (&cookie);
}

Cookie *
session_begin (QmpClient *src, CookieMode mode, const char *const *names, ChainMode chain,
               GCancellable *cancellable, GError **error)
{
  Cookie *cookie = source_begin (src, mode, names, chain, cancellable, error);

  if (cookie == NULL)
    g_prefix_error (error, "begin: ");
  return cookie;
}

/* ---- starting the mirrors ----------------------------------------------- */

/* Where QEMU's NBD clients connect: the tunnel's socket, or the destination. */
static QmpSocketAddress
source_nbd_server_arg (const SourceRun *run)
{
  const Cookie *cookie = run->cookie;

  if (run->tunnel.path != NULL)
    return (QmpSocketAddress) { .type = QMP_ADDRESS_UNIX, .path = run->tunnel.path };
  if (cookie->nbd_unix != NULL)
    return (QmpSocketAddress) { .type = QMP_ADDRESS_UNIX, .path = cookie->nbd_unix };
  return (QmpSocketAddress) { .type = QMP_ADDRESS_INET, .host = cookie->nbd_host,
                              .port = cookie->nbd_port };
}

/* --pass-fds: blkmig connects and hands QEMU the connected socket (getfd), so QEMU
 * needs no access to the socket path or the network.  Such a node cannot
 * reconnect: a new connection would need a new fd. */
static gboolean
source_pass_socket (SourceRun *run, const char *name, GCancellable *cancellable, GError **error)
{
  const Cookie *cookie = run->cookie;
  const char *path = run->tunnel.path != NULL ? run->tunnel.path : cookie->nbd_unix;
  g_autoptr(GSocketClient) client = g_socket_client_new ();
  g_autoptr(GSocketConnectable) addr = path != NULL
      ? G_SOCKET_CONNECTABLE (g_unix_socket_address_new (path))
      : g_network_address_new (cookie->nbd_host, cookie->nbd_port);
  g_autoptr(GSocketConnection) conn = g_socket_client_connect (client, addr, cancellable, error);

  return conn != NULL
         && qmp_getfd (run->qmp, name, g_socket_get_fd (g_socket_connection_get_socket (conn)),
                       cancellable, error);
}

static gboolean
source_add_target_node (SourceRun *run, guint i, GCancellable *cancellable, GError **error)
{
  CookieDisk *disk = run->cookie->disks->pdata[i];
  g_autofree char *node = names_node (run->cookie->id, NAMES_NBD_CLIENT, i);
  g_autofree char *tls = run->opts->tls_dir != NULL && run->tunnel.path == NULL
                        ? names_node (run->cookie->id, NAMES_TLS_CLIENT, 0) : NULL;
  /* discard=unmap lets the mirror pre-zero the target cheaply and then copy
   * only allocated data, so sparse disks stay sparse and fast; detect-zeroes=unmap
   * turns zeros read from a thick source (allocated, but zero) into zero writes
   * that may unmap, so the target stays thin there too. */
  QmpBlockdevNbd args = {
    .node_name = node,
    .server = source_nbd_server_arg (run),
    .export_name = disk->export_name,
    .discard = "unmap",
    .detect_zeroes = "unmap",
    .reconnect_delay = run->opts->pass_fds ? 0 : MIRROR_KNOB (run->opts->mirror.reconnect_delay,
                                                              MIRROR_DEFAULT_RECONNECT_DELAY),
    .tls_creds = tls,
    .tls_hostname = tls != NULL ? run->plan.tls_hostname : NULL,
  };

  if (run->opts->pass_fds)
    args.server = (QmpSocketAddress) { .type = QMP_ADDRESS_FD, .fd_name = node };
  if ((run->opts->pass_fds && !source_pass_socket (run, node, cancellable, error))
      || !qmp_blockdev_add_nbd (run->qmp, &args, cancellable, error))
    return g_prefix_error (error, "%s: cannot connect to the destination export: ", disk->name),
           FALSE;
  return TRUE;
}

/* top and copy-base: the layers below are not the mirror's; resync: only what the
 * guest writes from now on (the backup brings the rest). */
static const char *
source_mirror_sync (SourceRun *run, const CookieDisk *disk)
{
  if (run->opts->resync_bitmap != NULL)
    return "none";
  return disk->chain != NULL && disk->sync != NULL && !g_str_equal (disk->sync, "full")
         ? "top" : "full";
}

/* Where this host reaches disk @i's export: the tunnel, the cookie's UNIX socket
 * or host and port (an nbd:// URI, plaintext). */
static char *
source_export_uri (SourceRun *run, guint i)
{
  const CookieDisk *disk = run->cookie->disks->pdata[i];
  const char *path = run->tunnel.path != NULL ? run->tunnel.path : run->cookie->nbd_unix;
  NbdEndpoint ep = {
    .unix_path = (char *) path, .host = run->cookie->nbd_host, .port = run->cookie->nbd_port,
  };

  return nbd_endpoint_uri (&ep, disk->export_name);
}

/* A sync=full mirror first zeroes its whole target, and where the NBD client
 * cannot do that in one request (qmp_nbd_zeroes_in_one_request) it takes a round
 * trip per 32 MiB: 0.7 s of a 1 GiB copy at 20 ms RTT.  When the source disk has
 * no backing file and the destination's export already reads as zeroes, sync=top
 * copies exactly what sync=full would, without that.  The answer is the peer's:
 * a false "zeroes" harms only the peer's own copy.  Not with --tls-creds and no
 * tunnel (libnbd would need the client's credentials): the pre-zeroing stays.
 * The questions run while QEMU connects its NBD clients. */
typedef struct {
  SourceRun *run;
  guint disk;
} ZeroQuestion;

static void
source_zeroes_answered_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  ZeroQuestion *q = user_data;
  const CookieDisk *disk = q->run->cookie->disks->pdata[q->disk];
  g_autofree char *why = NULL;
  g_autofree char *shown = NULL;
  gboolean zero = nbd_export_reads_zeroes_finish (result, &why);

  shown = blkmig_escape (zero ? "it reads as zeroes" : why);
  blkmig_debug (BLKMIG_DEBUG_JOBS, "%s: pre-zeroing the target %s: %s", disk->name,
                zero ? "skipped (sync top)" : "stays", shown);
  g_array_index (q->run->target_zero, gboolean, q->disk) = zero;
  q->run->zero_questions--;
  g_free (q);
}

static void
source_ask_target_zeroes (SourceRun *run, guint i, const DiskInfo *info,
                          GCancellable *cancellable)
{
  g_autofree char *uri = NULL;
  ZeroQuestion *q;

  if (!g_str_equal (source_mirror_sync (run, run->cookie->disks->pdata[i]), "full")
      || info->backing != NULL || info->virtual_size < ZERO_CHECK_MIN_SIZE
      || (run->opts->tls_dir != NULL && run->tunnel.path == NULL)
      || qmp_nbd_zeroes_in_one_request (run->qmp, run->cookie->dest_qemu))
    return;
  uri = source_export_uri (run, i);
  q = g_new0 (ZeroQuestion, 1);
  q->run = run;
  q->disk = i;
  run->zero_questions++;
  nbd_export_reads_zeroes_async (uri, info->virtual_size, ZERO_CHECK_TIMEOUT_MS, cancellable,
                                 source_zeroes_answered_cb, q);
}

/* Every question is waited for: none outlives the run it answers to. */
static void
source_wait_zero_questions (SourceRun *run)
{
  while (run->zero_questions > 0)
    g_main_context_iteration (NULL, TRUE);
}

static gboolean
source_target_reads_zeroes (SourceRun *run, guint i)
{
  return i < run->target_zero->len && g_array_index (run->target_zero, gboolean, i);
}

/* The mirror starts from the BlockBackend when there is one, else the root node. */
static const char *
source_mirror_device (DiskInfo *info)
{
  return *info->device != '\0' ? info->device : info->node;
}

static gboolean
source_start_mirror (SourceRun *run, guint i, DiskInfo *info, GCancellable *cancellable,
                     GError **error)
{
  CookieDisk *disk = run->cookie->disks->pdata[i];
  g_autofree char *node = names_node (run->cookie->id, NAMES_NBD_CLIENT, i);
  g_autofree char *job_id = names_job (run->cookie->id, i);
  BlkJob *job = job_group_add (run->group, job_id, disk->name);

  const char *sync = source_mirror_sync (run, disk);

  if (g_str_equal (sync, "full") && source_target_reads_zeroes (run, i))
    sync = "top";  /* the same copy without the pre-zeroing */

  /* replicate asks the filter (where QEMU 10.0 keeps the mirror's dirty bitmap) */
  g_autofree char *filter = run->opts->name_filters
                            ? names_node (run->cookie->id, NAMES_MIRROR_FILTER, i) : NULL;
  MirrorTuning tuning = run->opts->mirror;

  tuning.speed = control_mirror_speed (tuning.speed);  /* `blkmig ctl ID set-speed` */
  if (mirror_start (run->qmp, job_id, source_mirror_device (info), node, sync, filter,
                    &tuning, cancellable, error))
    return TRUE;
  job_group_forget (run->group, job);
  g_prefix_error (error, "%s: ", disk->name);
  return FALSE;
}

static gboolean
source_check_disk (CookieDisk *disk, DiskInfo *info, GError **error)
{
  if (info == NULL)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                        "%s: the source no longer has this disk", disk->name), FALSE;
  if (info->virtual_size != disk->virtual_size)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                        "%s: the disk changed size since begin (%" G_GINT64_FORMAT
                        " → %" G_GINT64_FORMAT " bytes)", disk->name, disk->virtual_size,
                        info->virtual_size), FALSE;
  return TRUE;
}

/* Plaintext only on loopback (or when told); with --tls-creds the NBD client's
 * credentials, checked against the server's certificate. */
static gboolean
source_add_tls (SourceRun *run, GCancellable *cancellable, GError **error)
{
  const SourceOptions *opts = run->opts;
  g_autofree char *id = names_node (run->cookie->id, NAMES_TLS_CLIENT, 0);
  gboolean tunnelled = run->tunnel.path != NULL;

  /* Through a tunnel, --tls-creds secure the tunnel's stream instead. */
  if (tunnelled)
    return TRUE;
  if (!session_check_plaintext (run->cookie->nbd_host, opts->tls_dir != NULL, opts->insecure,
                                error))
    return FALSE;
  return opts->tls_dir == NULL || nbd_tls_add_creds (run->qmp, id, FALSE, opts->tls_dir,
                                                     cancellable, error);
}

/* Resync: rounds of a point-in-time backup of what a bitmap marks (all written
 * since the standby's state), each starting a new bitmap for the writes
 * meanwhile, until a round is small; then, with the guest paused, the last
 * round's writes and the mirrors' start, so that no write falls between.  (QEMU
 * runs no backup beside a mirror on one node: hence rounds, then the mirror.) */
#define RESYNC_SMALL_ROUND (4 << 20)
#define RESYNC_MAX_ROUNDS 8

static gboolean
source_resync_round (SourceRun *run, const char *bitmap, const char *next, gint64 *bytes,
                     GCancellable *cancellable, GError **error)
{
  guint n = run->cookie->disks->len;
  g_autoptr(JobGroup) backups = job_group_new (run->qmp);
  g_auto(GStrv) targets = g_new0 (char *, n + 1);
  g_auto(GStrv) jobs = g_new0 (char *, n + 1);
  g_autoptr(GPtrArray) devices = g_ptr_array_new ();  /* borrowed, NULL-terminated */
  gint64 done = 0, total = 0;

  for (guint i = 0; i < n; i++)
    g_ptr_array_add (devices, run->nodes->pdata[i]);
  g_ptr_array_add (devices, NULL);
  for (guint i = 0; i < n; i++)
    {
      targets[i] = names_node (run->cookie->id, NAMES_NBD_CLIENT, i);
      jobs[i] = names_resync_job (run->cookie->id, i);
      job_group_add (backups, jobs[i], ((CookieDisk *) run->cookie->disks->pdata[i])->name);
    }
  if (!qmp_transaction_backup_bitmap (run->qmp, (const char *const *) devices->pdata,
                                      (const char *const *) targets, (const char *const *) jobs,
                                      bitmap, next, cancellable, error)
      || !job_group_wait_ended_sync (backups, cancellable, error))
    return g_prefix_error (error, "resync: "), FALSE;
  job_group_totals (backups, &done, &total);
  *bytes = done;
  *run->opts->resync_bytes += done;
  return TRUE;
}

static void
source_drop_bitmap (SourceRun *run, const char *bitmap)
{
  for (guint i = 0; i < run->nodes->len; i++)
    qmp_block_dirty_bitmap_remove (run->qmp, run->nodes->pdata[i], bitmap, NULL, NULL);
}

static gboolean
source_start_mirrors (SourceRun *run, GPtrArray *infos, GCancellable *cancellable,
                      GError **error)
{
  for (guint i = 0; i < infos->len; i++)
    if (!source_start_mirror (run, i, infos->pdata[i], cancellable, error))
      return FALSE;
  return TRUE;
}

static gboolean
source_resync (SourceRun *run, GPtrArray *infos, GCancellable *cancellable, GError **error)
{
  g_autofree char *bitmap = g_strdup (run->opts->resync_bitmap);
  g_autoptr(QmpStatusInfo) status = NULL;
  gint64 bytes = G_MAXINT64;
  gboolean ok;

  *run->opts->resync_bytes = 0;
  for (guint round = 1; bytes > RESYNC_SMALL_ROUND && round <= RESYNC_MAX_ROUNDS; round++)
    {
      g_autofree char *next = g_strdup_printf ("%s.%u", run->opts->resync_bitmap, round);

      if (!source_resync_round (run, bitmap, next, &bytes, cancellable, error))
        return FALSE;
      if (round > 1)
        source_drop_bitmap (run, bitmap);  /* the checkpoint's own stays until the next */
      g_free (bitmap);
      bitmap = g_steal_pointer (&next);
    }
  if ((status = qmp_query_status (run->qmp, 0, cancellable, error)) == NULL
      || (status->running && !qmp_stop (run->qmp, cancellable, error)))
    return FALSE;
  ok = source_resync_round (run, bitmap, NULL, &bytes, cancellable, error)
       && source_start_mirrors (run, infos, cancellable, error);
  source_drop_bitmap (run, bitmap);
  return (!status->running || qmp_cont (run->qmp, NULL, ok ? error : NULL)) && ok;
}

/* Checks each disk and adds its NBD client node (asking meanwhile whether its
 * target reads as zeroes); @infos gets each disk's DiskInfo, borrowed from @disks. */
static gboolean
source_add_targets (SourceRun *run, GPtrArray *disks, GPtrArray *infos,
                    GCancellable *cancellable, GError **error)
{
  for (guint i = 0; i < run->cookie->disks->len; i++)
    {
      CookieDisk *disk = run->cookie->disks->pdata[i];
      DiskInfo *info = disks_find (disks, disk->name);

      if (!source_check_disk (disk, info, error))
        return FALSE;
      g_ptr_array_add (infos, info);
      g_ptr_array_add (run->files, g_strdup (info->file));
      g_ptr_array_add (run->backing, g_strdupv (info->backing));
      g_ptr_array_add (run->backing_formats, g_strdupv (info->backing_formats));
      g_ptr_array_add (run->nodes, g_strdup (info->node));
      source_ask_target_zeroes (run, i, info, cancellable);
      if (!source_add_target_node (run, i, cancellable, error))
        return FALSE;
    }
  return TRUE;
}

static gboolean
source_start_all (SourceRun *run, GCancellable *cancellable, GError **error)
{
  g_autoptr(GPtrArray) disks = disks_query (run->qmp, TRUE, cancellable, error);
  g_autoptr(GPtrArray) infos = g_ptr_array_new ();
  gboolean ok;

  if (disks == NULL || !source_add_tls (run, cancellable, error))
    return FALSE;
  ok = source_add_targets (run, disks, infos, cancellable, error);
  source_wait_zero_questions (run);
  if (!ok)
    return FALSE;
  if (run->opts->resync_bitmap != NULL)
    return source_resync (run, infos, cancellable, error);
  return source_start_mirrors (run, infos, cancellable, error);
}

/* copy-base: the layers below each such disk go to the destination's exports
 * while the mirrors run, through the same path as the mirrors (the tunnel's
 * socket, or TLS with the same credentials). */
static gboolean
source_start_base_copy (SourceRun *run, GError **error)
{
  gboolean tunnelled = run->tunnel.path != NULL;
  const BaseCopyTarget target = {
    .unix_path = tunnelled ? run->tunnel.path : run->cookie->nbd_unix,
    .host = run->cookie->nbd_host,
    .port = run->cookie->nbd_port,
    .tls_dir = tunnelled ? NULL : run->opts->tls_dir,
    .tls_hostname = run->plan.tls_hostname,
    .speed = run->opts->mirror.speed,
  };
  g_autoptr(GError) local_error = NULL;

  run->base = base_copy_start (run->cookie, run->backing, run->backing_formats, &target,
                               run->group, run->opts->quiet, &local_error);
  if (local_error == NULL)
    return TRUE;
  g_propagate_error (error, g_steal_pointer (&local_error));
  return FALSE;
}

/* A layer copy that failed because the tunnel broke: the tunnel's own report (it
 * comes a moment later, from the main loop) says what happened. */
static gboolean
source_wait_base_copy (SourceRun *run, GCancellable *cancellable, GError **error)
{
  gint64 until = g_get_monotonic_time () + G_USEC_PER_SEC;

  if (run->base == NULL || base_copy_wait (run->base, cancellable, error))
    return TRUE;
  while (run->tunnel.tunnel != NULL && run->tunnel.broken == NULL
         && g_get_monotonic_time () < until)
    if (!g_main_context_iteration (NULL, FALSE))
      g_usleep (10000);
  if (run->tunnel.broken != NULL)
    {
      g_clear_error (error);
      g_set_error_literal (error, BLKMIG_ERROR, BLKMIG_ERROR_JOB, run->tunnel.broken);
    }
  return FALSE;
}

/* ---- switching ---------------------------------------------------------- */

static gboolean
source_delete_target_nodes (SourceRun *run, GCancellable *cancellable, GError **error)
{
  g_autofree char *tls = names_node (run->cookie->id, NAMES_TLS_CLIENT, 0);

  for (guint i = 0; i < run->cookie->disks->len; i++)
    {
      g_autofree char *node = names_node (run->cookie->id, NAMES_NBD_CLIENT, i);

      if (!qmp_blockdev_del (run->qmp, node, cancellable, error))
        return FALSE;
    }
  /* the client nodes that used it are gone; the memory stream may still need it */
  if (run->opts->tls_dir != NULL && !run->plan.migration_tls)
    nbd_tls_del (run->qmp, tls);
  return TRUE;
}

/* Compares every source image with its destination export; both are quiescent. */
static gboolean
source_verify (SourceRun *run, GCancellable *cancellable, GError **error)
{
  gint64 start = g_get_monotonic_time ();

  for (guint i = 0; run->opts->verify && i < run->cookie->disks->len; i++)
    {
      CookieDisk *disk = run->cookie->disks->pdata[i];
      g_autofree char *uri = source_export_uri (run, i);
      VerifyResult result = { 0 };

      if (!nbd_verify (run->files->pdata[i], uri, &result, cancellable, error))
        return g_prefix_error (error, "%s: verify: ", disk->name), FALSE;
      if (result.diff_bytes > 0)
        return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                            "%s: verify: the destination differs from the source: first "
                            "difference at offset %" G_GINT64_FORMAT ", %" G_GINT64_FORMAT
                            " bytes differ", disk->name, result.first_diff,
                            result.diff_bytes), FALSE;
    }
  if (!run->opts->verify)
    return TRUE;
  events_emit ("verified", "disks", qmp_int (run->cookie->disks->len),
               "elapsed-ms", qmp_int ((g_get_monotonic_time () - start) / 1000), NULL);
  if (!run->opts->quiet)
    g_printerr ("blkmig: verified %u disk%s: identical (%.2f s)\n", run->cookie->disks->len,
                run->cookie->disks->len == 1 ? "" : "s",
                (g_get_monotonic_time () - start) / 1e6);
  return TRUE;
}

/* Ends every READY mirror with a consistent copy and no pivot. */
static gboolean
source_cancel_at_ready (SourceRun *run, GCancellable *cancellable, GError **error)
{
  return job_group_cancel_all (run->group, FALSE, cancellable, error)
         && job_group_wait_ended_sync (run->group, cancellable, error)
         && source_delete_target_nodes (run, cancellable, error);
}

static gboolean
source_mirrors_ended (SourceRun *run, GError **error)
{
  return run->opts->mirrors_ended == NULL
         || run->opts->mirrors_ended (run->opts->mirrors_ended_data, error);
}

/* QEMU's status and error-desc are escaped: they reach the message. */
static gboolean
source_migration_status (JsonObject *data, const char *want, QmpClient *qmp, GError **error)
{
  const char *status = qmp_member_string (data, "status");
  g_autoptr(QmpMigrateInfo) info = NULL;
  g_autofree char *shown = NULL;
  g_autofree char *desc = NULL;
  const char *raw_desc;

  if (g_strcmp0 (status, want) == 0)
    return TRUE;
  info = qmp_query_migrate (qmp, NULL, NULL);
  raw_desc = info != NULL ? info->error_desc : NULL;
  shown = blkmig_escape (status != NULL ? status : "?");
  desc = blkmig_escape (raw_desc);
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_MIGRATION, "migration %s%s%s", shown,
               raw_desc != NULL ? ": " : "", raw_desc != NULL ? desc : "");
  return FALSE;
}

static gint64
source_migration_transferred (QmpClient *qmp, GCancellable *cancellable)
{
  g_autoptr(QmpMigrateInfo) info = qmp_query_migrate (qmp, cancellable, NULL);

  return info != NULL ? info->transferred : -1;
}

/* Waits for the MIGRATION event @wait expects; fails when the memory stream makes
 * no progress for --stall-timeout (a frozen or vanished destination). */
static JsonObject *
source_wait_migration (SourceRun *run, QmpEventWait *wait, GCancellable *cancellable,
                       GError **error)
{
  gint64 stall_us = (gint64) MIGRATION_TIMEOUT_MS * 1000;
  gint64 last = -1, changed_us = g_get_monotonic_time ();
  gint stall = MIRROR_KNOB (run->opts->mirror.stall_timeout, MIRROR_DEFAULT_STALL_TIMEOUT);

  if (stall > 0)
    stall_us = (gint64) stall * G_USEC_PER_SEC;
  for (;;)
    {
      g_autoptr(GError) local_error = NULL;
      JsonObject *data = qmp_event_wait_sync (wait, 1000, cancellable, &local_error);
      gint64 now = g_get_monotonic_time (), transferred;

      if (data != NULL)
        return data;
      if (!g_error_matches (local_error, QMP_ERROR, QMP_ERROR_TIMEOUT))
        return g_propagate_error (error, g_steal_pointer (&local_error)), NULL;
      transferred = source_migration_transferred (run->qmp, cancellable);
      if (transferred != last)
        {
          last = transferred;
          changed_us = now;
        }
      else if (now - changed_us >= stall_us)
        return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_MIGRATION,
                            "the migration made no progress for %" G_GINT64_FORMAT
                            " s (is the destination alive?)", stall_us / G_USEC_PER_SEC), NULL;
    }
}

/* With --tls-creds (and no tunnel) the memory stream is TLS: the NBD client's
 * credentials, checked against the same name. */
static gboolean
source_migration_tls (SourceRun *run, GCancellable *cancellable, GError **error)
{
  g_autofree char *creds = names_node (run->cookie->id, NAMES_TLS_CLIENT, 0);
  const QmpMigrateParameters params = {
    .tls_creds = creds,
    .tls_hostname = run->plan.tls_hostname,
  };

  return !run->plan.migration_tls
         || qmp_migrate_set_parameters (run->qmp, &params, cancellable, error);
}

static gboolean
source_run_migration (SourceRun *run, const char *uri, GCancellable *cancellable,
                      GError **error)
{
  static const char *const caps[] = { "events", "pause-before-switchover", NULL };
  static const char *const stops[] = { "pre-switchover", "completed", "failed", "cancelled", NULL };
  static const char *const ends[] = { "completed", "failed", "cancelled", NULL };
  g_autoptr(QmpEventWait) paused = NULL;
  g_autoptr(QmpEventWait) ended = NULL;
  g_autoptr(JsonObject) data = NULL;
  g_autoptr(JsonObject) end = NULL;

  if (!session_set_capabilities (run->qmp, caps, cancellable, error)
      || !source_migration_tls (run, cancellable, error))
    return FALSE;
  paused = qmp_event_wait_new (run->qmp, "MIGRATION", "status", stops);
  if (!qmp_migrate (run->qmp, uri, cancellable, error)
      || (data = source_wait_migration (run, paused, cancellable, error)) == NULL
      || !source_migration_status (data, "pre-switchover", run->qmp, error))
    return FALSE;
  run->stopped_us = g_get_monotonic_time ();
  if (!session_journal (run->opts->journal, JOURNAL_STEP_PRE_SWITCHOVER, run->cookie, error)
      || !source_cancel_at_ready (run, cancellable, error)
      || !source_verify (run, cancellable, error)
      || !source_mirrors_ended (run, error))
    return FALSE;
  ended = qmp_event_wait_new (run->qmp, "MIGRATION", "status", ends);
  if (!qmp_migrate_continue (run->qmp, "pre-switchover", cancellable, error)
      || (end = source_wait_migration (run, ended, cancellable, error)) == NULL
      || !source_migration_status (end, "completed", run->qmp, error))
    return FALSE;
  if (run->plan.migration_tls)
    session_del_tls_objects (run->qmp, run->cookie);  /* the parameters first, then c0 */
  return TRUE;
}

/* A point-in-time copy; with --verify the guest pauses while the copy is compared. */
static gboolean
source_copy (SourceRun *run, GCancellable *cancellable, GError **error)
{
  gboolean ok;

  if (!run->opts->verify)
    return source_cancel_at_ready (run, cancellable, error) && source_mirrors_ended (run, error);
  if (!qmp_stop (run->qmp, cancellable, error))
    return FALSE;
  ok = source_cancel_at_ready (run, cancellable, error)
       && source_verify (run, cancellable, error)
       && source_mirrors_ended (run, error);
  return qmp_cont (run->qmp, NULL, ok ? error : NULL) && ok;
}

static gboolean
source_switch (SourceRun *run, const char *uri, gboolean no_migrate,
               GCancellable *cancellable, GError **error)
{
  switch (run->cookie->mode)
    {
    case COOKIE_MODE_LIVE:
      if (!no_migrate)
        return source_run_migration (run, uri, cancellable, error);
      return source_cancel_at_ready (run, cancellable, error);
    case COOKIE_MODE_COPY:
      return source_copy (run, cancellable, error);
    case COOKIE_MODE_MOVE:
      return job_group_complete_all (run->group, cancellable, error)
             && job_group_wait_ended_sync (run->group, cancellable, error);
    default:
      g_assert_not_reached ();
    }
}

/* ---- perform ------------------------------------------------------------ */

/* The last step, whose name is also the result cookie's status. */
static JournalStep
source_outcome (const SourceRun *run, gboolean migrated)
{
  return migrated ? JOURNAL_STEP_COMPLETED
         : run->cookie->mode == COOKIE_MODE_MOVE ? JOURNAL_STEP_MOVED : JOURNAL_STEP_COPIED;
}

static Cookie *
source_result (SourceRun *run, JournalStep outcome, GError **error)
{
  Cookie *result = cookie_new_result (run->cookie, journal_step_to_string (outcome), error);
  gint64 done = 0, total = 0;

  if (result == NULL)
    return NULL;
  job_group_totals (run->group, &done, &total);
  result->bytes = done;
  result->downtime_ms = run->stopped_us > 0
                        ? (g_get_monotonic_time () - run->stopped_us) / 1000 : -1;
  return result;
}

/* The tunnel's own TCP stream follows the NBD rule: TLS, loopback or --insecure. */
static gboolean
source_tunnel_check_plaintext (const SourceRun *run, GError **error)
{
  g_auto(NbdEndpoint) ep = { 0 };

  if (!nbd_endpoint_parse (run->opts->tunnel_addr, &ep, error))
    return FALSE;
  return session_check_plaintext (ep.host, run->opts->tls_dir != NULL, run->opts->insecure,
                                  error);
}

static gboolean
source_open_tunnel (SourceRun *run, GCancellable *cancellable, GError **error)
{
  const char *const *argv = (const char *const *) run->plan.tunnel_argv;

  if (run->opts->tunnel_addr == NULL && argv == NULL)
    return TRUE;
  if (argv == NULL && !source_tunnel_check_plaintext (run, error))
    return FALSE;
  run->tunnel.compress = run->plan.tunnel_compress;
  return source_tunnel_open (&run->tunnel, run->opts->tunnel_addr, argv, run->opts->tls_dir,
                             run->opts->tls_hostname, run->group, cancellable, error);
}

/* Mirrors, READY, then the switch the mode asks for; errors name the phase. */
static gboolean
source_mirror_and_switch (SourceRun *run, const char *uri, gboolean no_migrate,
                          GCancellable *cancellable, GError **error)
{
  const SourceOptions *opts = run->opts;

  events_emit ("phase", "phase", qmp_str ("mirror"), NULL);
  if (!session_journal (opts->journal, JOURNAL_STEP_MIRROR, run->cookie, error)
      || !source_open_tunnel (run, cancellable, error)
      || !source_start_all (run, cancellable, error)
      || !source_start_base_copy (run, error)
      || !job_group_wait_ready_sync (run->group, cancellable, error)
      || !source_wait_base_copy (run, cancellable, error))
    return g_prefix_error (error, "mirror: "), FALSE;
  if (opts->hold != NULL && !opts->hold (opts->hold_data, run->group, cancellable, error))
    return FALSE;
  events_emit ("phase", "phase", qmp_str ("switch"),
               "mode", qmp_str (cookie_mode_to_string (run->cookie->mode)), NULL);
  if (!session_journal (opts->journal, JOURNAL_STEP_SWITCH, run->cookie, error)
      || (opts->before_switch != NULL && !opts->before_switch (opts->mirrors_ended_data, error))
      || !source_switch (run, uri, no_migrate, cancellable, error))
    return g_prefix_error (error, "switch: "), FALSE;
  return TRUE;
}

/* Refusals come before anything starts: nothing to roll back. */
static gboolean
source_check (SourceRun *run, const char *migrate_uri, gboolean no_migrate, GError **error)
{
  if (run->opts->verify && run->cookie->mode == COOKIE_MODE_MOVE)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "--verify works with the live and copy modes, not yet with move"), FALSE;
  return source_trust_check (run->cookie, run->opts, migrate_uri, no_migrate, &run->plan, error);
}

/* Mirrors and switch with the checked plan; on failure the source is rolled back. */
static Cookie *
source_run (SourceRun *run, gboolean no_migrate, GCancellable *cancellable, GError **error)
{
  g_autoptr(GPtrArray) files = g_ptr_array_new_with_free_func (g_free);
  g_autoptr(GPtrArray) backing = g_ptr_array_new_with_free_func ((GDestroyNotify) g_strfreev);
  g_autoptr(GPtrArray) backing_formats = g_ptr_array_new_with_free_func ((GDestroyNotify) g_strfreev);
  g_autoptr(GPtrArray) nodes = g_ptr_array_new_with_free_func (g_free);
  g_autoptr(JobGroup) group = job_group_new (run->qmp);
  g_autoptr(GArray) target_zero = g_array_new (FALSE, TRUE, sizeof (gboolean));
  g_autoptr(Progress) progress = NULL;
  g_autoptr(GError) journal_error = NULL;
  JournalStep outcome;
  const SourceOptions *opts = run->opts;
  Cookie *result;
  gboolean ok;

  run->group = group;
  run->files = files;
  run->backing = backing;
  run->backing_formats = backing_formats;
  run->nodes = nodes;
  run->target_zero = target_zero;
  g_array_set_size (target_zero, run->cookie->disks->len);
  mirror_arm_watchdogs (group, run->qmp, &opts->mirror);
  if (run->cookie->mode == COOKIE_MODE_LIVE && !no_migrate)
    control_set_memory_stream (run->qmp);  /* set-speed limits the memory stream too */
  progress = progress_start (group, opts->quiet, opts->progress_ms);
  ok = source_mirror_and_switch (run, run->plan.migrate_uri, no_migrate, cancellable, error);
  g_clear_pointer (&progress, progress_stop);
  g_clear_pointer (&run->base, base_copy_free);  /* its connections go before the exports */
  if (!ok)
    session_abort (run->qmp, run->cookie);  /* the NBD clients go before the tunnel does */
  source_tunnel_close (&run->tunnel);
  if (!ok)
    return NULL;
  outcome = source_outcome (run, run->cookie->mode == COOKIE_MODE_LIVE && !no_migrate);
  result = source_result (run, outcome, error);
  if (result != NULL && !session_journal (opts->journal, outcome, result, &journal_error))
    g_printerr ("blkmig: warning: %s\n", journal_error->message);
  return result;
}

Cookie *
session_perform (QmpClient *src, const Cookie *dest, const SourceOptions *opts,
                 const char *migrate_uri, gboolean no_migrate,
                 GCancellable *cancellable, GError **error)
{
  SourceRun run = { .qmp = src, .cookie = dest, .opts = opts };
  Cookie *result = NULL;

  if (source_check (&run, migrate_uri, no_migrate, error))
    result = source_run (&run, no_migrate, cancellable, error);
  source_plan_clear (&run.plan);
  return result;
}
