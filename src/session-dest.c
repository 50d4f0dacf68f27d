/* Destination side of a migration: targets and exports (prepare), teardown (finish). */
#include "src/session.h"

#include <errno.h>
#include <sys/stat.h>

#include "common/error.h"
#include "common/escape.h"
#include "nbd/nbd-tls.h"
#include "qmp/qmp-commands.h"
#include "qmp/qmp-json.h"
#include "qmp/qmp-wait.h"
#include "src/chain.h"
#include "src/dest-copy-base.h"
#include "src/disks.h"
#include "src/events.h"
#include "src/names.h"
#include "src/util.h"

#define INCOMING_TIMEOUT_MS (6 * 3600 * 1000)

/* ---- choosing targets --------------------------------------------------- */

static gboolean
dest_check_size (CookieDisk *disk, gint64 size, const char *where, GError **error)
{
  g_autofree char *have = NULL;
  g_autofree char *want = NULL;

  if (size == disk->virtual_size)
    return TRUE;
  have = util_format_bytes (size);
  want = util_format_bytes (disk->virtual_size);
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
               "%s: destination target is %s, source is %s: remove or resize %s",
               disk->name, have, want, where);
  return FALSE;
}

static char *
dest_target_path (const char *dir, CookieDisk *disk)
{
  g_autofree char *safe = util_sanitize_name (disk->name);
  g_autofree char *base = g_strdup_printf ("%s.%s", safe, disk->format);

  return g_build_filename (dir, base, NULL);
}

/* The PATH of @name in NAME=PATH entries, or NULL. */
static const char *
dest_map_lookup (const char *const *map, const char *name)
{
  gsize len = strlen (name);

  for (gsize i = 0; map != NULL && map[i] != NULL; i++)
    if (strncmp (map[i], name, len) == 0 && map[i][len] == '=')
      return map[i] + len + 1;
  return NULL;
}

/* The operator's --target NAME=PATH for disk @name, or NULL. */
static const char *
dest_named_target (const PrepareOptions *opts, const char *name)
{
  return dest_map_lookup (opts->targets, name);
}

/* --chain top: where this host keeps the source's nearest backing layer of @disk
 * (--base NAME=PATH, else --base-dir and the layer's file name); NULL when neither
 * was given.  The name is the cookie's, checked to be a plain file name. */
static char *
dest_base_path (const PrepareOptions *opts, const CookieDisk *disk)
{
  const char *named = dest_map_lookup (opts->bases, disk->name);
  const CookieLayer *nearest = disk->chain->pdata[0];

  if (named != NULL)
    return g_strdup (named);
  return opts->base_dir != NULL ? g_build_filename (opts->base_dir, nearest->name, NULL) : NULL;
}

/* The destination's chain below a new target: found from the options, and it must be
 * the source's (verified before anything is made or moved). */
static gboolean
dest_check_local_chain (const PrepareOptions *opts, const CookieDisk *disk,
                        GCancellable *cancellable, GError **error)
{
  g_autofree char *base = dest_base_path (opts, disk);
  g_autofree char *name = blkmig_escape (disk->name);
  g_auto(GStrv) files = NULL;
  g_auto(GStrv) formats = NULL;
  const CookieLayer *nearest = disk->chain->pdata[0];

  if (base == NULL)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "%s: the source sends only the active layer (--chain top): give "
                        "--base-dir DIR or --base %s=PATH for the chain below it", name, name),
           FALSE;
  return chain_local (base, nearest->format, &files, &formats, cancellable, error)
         && chain_verify (disk->name, disk->chain, (const char *const *) files,
                          (const char *const *) formats, cancellable, error);
}

/* --chain top into a disk of the destination QEMU: its own backing chain must be the
 * source's. */
static gboolean
dest_check_disk_chain (const CookieDisk *disk, const DiskInfo *have, GCancellable *cancellable,
                       GError **error)
{
  return chain_verify (disk->name, disk->chain, (const char *const *) have->backing,
                       (const char *const *) have->backing_formats, cancellable, error);
}

/* Different disk names can sanitise to one file name: never two disks in one file. */
static gboolean
dest_check_unique (Cookie *reply, guint i, GError **error)
{
  CookieDisk *disk = reply->disks->pdata[i];
  g_autofree char *mine = g_canonicalize_filename (disk->target_path, "/");

  for (guint j = 0; j < i; j++)
    {
      CookieDisk *other = reply->disks->pdata[j];
      g_autofree char *theirs = NULL;
      g_autofree char *a = NULL;
      g_autofree char *b = NULL;

      if (other->target_path == NULL)
        continue;
      theirs = g_canonicalize_filename (other->target_path, "/");
      if (!g_str_equal (mine, theirs))
        continue;
      a = blkmig_escape (other->name);
      b = blkmig_escape (disk->name);
      return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                          "disks %s and %s would both use %s: name their targets with "
                          "--target NAME=PATH", a, b, mine), FALSE;
    }
  return TRUE;
}

/* An operator-named file is opened as the format its name says (.qcow2, .raw,
 * .img), never as the peer's word or a probe: a raw image whose guest wrote a
 * qcow2 header would otherwise open as qcow2 and name any backing file. */
static gboolean
dest_check_named_format (CookieDisk *disk, const char *path, GError **error)
{
  const char *format = g_str_has_suffix (path, ".qcow2") ? "qcow2"
                       : g_str_has_suffix (path, ".raw") || g_str_has_suffix (path, ".img") ? "raw"
                       : NULL;
  g_autofree char *name = blkmig_escape (disk->name);

  if (format == NULL)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "--target %s=%s: the file's name must say its format (.qcow2, .raw or "
                        ".img)", name, path), FALSE;
  if (g_str_equal (format, disk->format))
    return TRUE;
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
               "%s: --target %s is a %s image by its name, the source's disk is %s", name, path,
               format, disk->format);
  return FALSE;
}

/* --chain top into a new file: an overlay (qcow2) on this host's verified copy of the
 * chain.  An existing file is not adopted for it. */
static gboolean
dest_plan_top (CookieDisk *disk, const PrepareOptions *opts, GCancellable *cancellable,
               GError **error)
{
  g_autofree char *name = blkmig_escape (disk->name);

  if (!g_str_equal (disk->format, "qcow2"))
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_COOKIE,
                        "%s: sync top needs a qcow2 disk, the cookie says %s", name,
                        disk->format), FALSE;
  if (!disk->created)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                        "%s: %s already exists: --chain top creates the overlay itself", name,
                        disk->target_path), FALSE;
  return dest_check_local_chain (opts, disk, cancellable, error);
}

/* A file target: made new in create_dir, or the file the operator named.  An
 * existing file is used only when named (--target): the source's disk names
 * must not choose which of this host's images gets overwritten. */
static gboolean
dest_plan_file (Cookie *reply, guint i, const PrepareOptions *opts, GCancellable *cancellable,
                GError **error)
{
  CookieDisk *disk = reply->disks->pdata[i];
  const char *named = dest_named_target (opts, disk->name);
  g_autofree char *name = blkmig_escape (disk->name);
  gint64 size = 0;
  struct stat st;

  disk->target_path = named != NULL ? g_strdup (named) : dest_target_path (opts->create_dir, disk);
  disk->target_node = names_node (reply->id, NAMES_FILE_TARGET, i);
  if (!dest_check_unique (reply, i, error))
    return FALSE;
  /* lstat: a link, even a dangling one, counts as there and is never followed */
  disk->created = lstat (disk->target_path, &st) != 0 && errno == ENOENT;
  if (g_strcmp0 (disk->sync, "top") == 0)
    return dest_plan_top (disk, opts, cancellable, error);
  if (g_strcmp0 (disk->sync, "copy-base") == 0)
    return dest_copy_base_plan (NULL, reply, i, NULL, opts, error);
  if (disk->created)
    return TRUE;
  if (named == NULL)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                        "%s: %s already exists: blkmig does not adopt an existing file "
                        "(name it with --target %s=PATH to use it)",
                        name, disk->target_path, name), FALSE;
  return dest_check_named_format (disk, named, error)
         && util_image_size (disk->target_path, disk->format, &size, cancellable, error)
         && dest_check_size (disk, size, disk->target_path, error);
}

/* Decides each disk's target: an existing disk of the destination QEMU, or a file
 * (see dest_plan_file).  Checks sizes before anything starts. */
static gboolean
dest_plan_disk (QmpClient *dst, Cookie *reply, guint i, GPtrArray *dst_disks,
                const PrepareOptions *opts, GCancellable *cancellable, GError **error)
{
  CookieDisk *disk = reply->disks->pdata[i];
  DiskInfo *have = disks_find (dst_disks, disk->name);
  g_autofree char *name = NULL;

  if (have != NULL && g_strcmp0 (disk->sync, "copy-base") == 0)
    {
      disk->target_node = g_strdup (have->node);
      disk->target_path = g_strdup (have->file);
      return dest_check_size (disk, have->virtual_size, have->file, error)
             && dest_copy_base_plan (dst, reply, i, have, opts, error);
    }
  if (have != NULL)
    {
      disk->target_node = g_strdup (have->node);
      disk->target_path = *have->file ? g_strdup (have->file) : NULL;
      return dest_check_size (disk, have->virtual_size,
                              *have->file ? have->file : "the destination disk", error)
             && (g_strcmp0 (disk->sync, "top") != 0
                 || dest_check_disk_chain (disk, have, cancellable, error));
    }
  if (reply->mode != COOKIE_MODE_LIVE
      && (opts->create_dir != NULL || dest_named_target (opts, disk->name) != NULL))
    return dest_plan_file (reply, i, opts, cancellable, error);
  name = blkmig_escape (disk->name);
  return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                      "%s: the destination has no disk of that name%s", name,
                      reply->mode == COOKIE_MODE_LIVE
                        ? " (a live migration needs the destination VM's disks)"
                        : " and no --create-dir was given"), FALSE;
}

/* Every --target names a disk of the cookie. */
static gboolean
dest_check_named (Cookie *reply, const PrepareOptions *opts, GError **error)
{
  for (gsize i = 0; opts->targets != NULL && opts->targets[i] != NULL; i++)
    {
      g_autofree char *name = g_strndup (opts->targets[i], strcspn (opts->targets[i], "="));
      if (cookie_find_disk (reply, name) == NULL)
        return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                            "--target %s: the source cookie has no disk %s", opts->targets[i],
                            name), FALSE;
    }
  return TRUE;
}

/* ---- setting up --------------------------------------------------------- */

/* The reply is not a complete destination cookie yet: the journal gets its source
 * part, and the files blkmig made. */
static gboolean
dest_journal_write (Journal *journal, const Cookie *reply, GError **error)
{
  g_autoptr(Cookie) part = cookie_copy_as (reply, COOKIE_KIND_SOURCE);

  return session_journal (journal, JOURNAL_STEP_PREPARE, part, error);
}

/* The staging directory is in the journal before anything is made in it; the
 * file only once it exists under its name (a crash in between leaves a file,
 * never removes one that was there). */
gboolean
dest_make_file (Journal *journal, const Cookie *reply, const char *path, const char *format,
                gint64 size, const char *backing, const char *backing_format,
                GCancellable *cancellable, GError **error)
{
  g_autofree char *parent = g_path_get_dirname (path);
  g_autofree char *staging = util_staging_dir_new (parent, error);
  gboolean ok;

  if (staging == NULL)
    return FALSE;
  journal_add_created (journal, staging);
  ok = dest_journal_write (journal, reply, error)
       && (backing != NULL
           ? util_overlay_create_new (path, staging, backing, backing_format, size,
                                      cancellable, error)
           : util_image_create_new (path, staging, format, size, cancellable, error));
  if (ok)
    journal_add_created (journal, path);
  util_private_dir_remove (staging);
  return ok && dest_journal_write (journal, reply, error);
}

/* A new target: with --chain top an overlay on this host's verified chain. */
static gboolean
dest_create_target (const PrepareOptions *opts, Cookie *reply, CookieDisk *disk,
                    GCancellable *cancellable, GError **error)
{
  g_autofree char *base = g_strcmp0 (disk->sync, "top") == 0 ? dest_base_path (opts, disk) : NULL;

  return dest_make_file (opts->journal, reply, disk->target_path, disk->format,
                         disk->virtual_size, base,
                         base != NULL ? ((CookieLayer *) disk->chain->pdata[0])->format : NULL,
                         cancellable, error);
}

static gboolean
dest_open_file_target (QmpClient *dst, const PrepareOptions *opts, Cookie *reply,
                       CookieDisk *disk, GCancellable *cancellable, GError **error)
{
  const QmpBlockdevImage target = {
    .node_name = disk->target_node,
    .format = disk->format,
    .filename = disk->target_path,
    .discard = "unmap",       /* the source's zero writes may leave holes */
  };

  if (disk->created && !dest_create_target (opts, reply, disk, cancellable, error))
    return FALSE;
  return qmp_blockdev_add_image (dst, &target, cancellable, error);
}

/* What the user can do about an export QEMU refused, when we know. */
static const char *
dest_export_hint (const char *message)
{
  /* QEMU 7.2 says the first, 10.0 the second */
  if (g_str_has_suffix (message, "Block node is read-only")
      || (strstr (message, "Could not open '") != NULL
          && g_str_has_suffix (message, "': No such file or directory")))
    return " (the destination QEMU could not reopen the image for writing: a -drive image "
           "given by a relative path cannot be reopened once QEMU has changed its directory, "
           "as -daemonize does; give the destination's images by absolute paths)";
  if (strstr (message, "Permission conflict") != NULL)
    return " (a guest device holds this disk: start the destination with -incoming defer, "
           "or give it the disk without a device)";
  return "";
}

static gboolean
dest_export_disk (QmpClient *dst, const PrepareOptions *opts, Cookie *reply, guint i,
                  GCancellable *cancellable, GError **error)
{
  CookieDisk *disk = reply->disks->pdata[i];
  g_autofree char *name = names_export (reply->id, i);
  g_autofree char *shown = NULL;

  if ((session_is_file_target (reply, i)
       && !dest_open_file_target (dst, opts, reply, disk, cancellable, error))
      || !dest_copy_base_export (dst, opts, reply, i, cancellable, error))
    return FALSE;
  if (!nbd_export_add (dst, name, disk->target_node, name, TRUE, cancellable, error))
    {
      shown = blkmig_escape (disk->name);
      g_prefix_error (error, "%s%s: ", shown, dest_export_hint ((*error)->message));
      return FALSE;
    }
  disk->export_name = g_steal_pointer (&name);
  return TRUE;
}

static gboolean
dest_expect_incoming (QmpClient *dst, GCancellable *cancellable, GError **error)
{
  g_autoptr(QmpStatusInfo) status = qmp_query_status (dst, 0, cancellable, error);
  const char *state;
  g_autofree char *escaped = NULL;

  if (status == NULL)
    return FALSE;
  state = status->status ?: "?";
  if (g_str_equal (state, "inmigrate"))
    return TRUE;
  state = escaped = blkmig_escape (state);
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
               "the destination QEMU is %s, not waiting for a migration: start it with "
               "-incoming defer -S", state);
  return FALSE;
}

/* A live migration between QEMU versions needs one versioned machine type on both
 * sides; with another, QEMU refuses the stream only after every disk was copied. */
static gboolean
dest_check_machine (QmpClient *dst, const Cookie *reply, GCancellable *cancellable,
                    GError **error)
{
  g_autoptr(GError) local_error = NULL;
  g_autofree char *mine = NULL;
  g_autofree char *shown = NULL;

  if (reply->machine == NULL)
    return TRUE;  /* an older source, or one that could not tell */
  mine = qmp_query_machine_type (dst, cancellable, &local_error);
  if (mine == NULL || g_str_equal (mine, reply->machine))
    return TRUE;
  shown = blkmig_escape (mine);
  return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_MIGRATION,
                      "the source runs machine type %s, the destination %s: a live migration "
                      "needs the same one on both sides (QEMU would refuse the stream after "
                      "the disks are copied); start the destination with -machine %s",
                      reply->machine, shown, reply->machine), FALSE;
}

/* With --tls-creds the memory stream is TLS too, with the NBD server's credentials
 * and --tls-authz (left alone without: QEMU 7.2 looks up even a tls-authz of "");
 * session_del_tls_objects unsets them before the objects go. */
static gboolean
dest_start_incoming (QmpClient *dst, Cookie *reply, const PrepareOptions *opts,
                     GCancellable *cancellable, GError **error)
{
  static const char *const caps[] = { "events", "late-block-activate", NULL };
  g_autofree char *tls_id = names_node (reply->id, NAMES_TLS_SERVER, 0);
  g_autofree char *authz_id = names_node (reply->id, NAMES_TLS_AUTHZ, 0);
  const QmpMigrateParameters params = {
    .tls_creds = tls_id,
    .tls_authz = opts->tls_authz != NULL ? authz_id : NULL,
  };

  if (!session_set_capabilities (dst, caps, cancellable, error)
      || (opts->tls_dir != NULL
          && !qmp_migrate_set_parameters (dst, &params, cancellable, error))
      || !qmp_migrate_incoming (dst, opts->incoming_uri, cancellable, error))
    return FALSE;
  reply->migrate_uri = g_strdup (opts->incoming_uri);
  return TRUE;
}

/* The server's credentials and, with --tls-authz, who may connect. */
static gboolean
dest_add_tls (QmpClient *dst, Cookie *reply, const PrepareOptions *opts,
              GCancellable *cancellable, GError **error)
{
  g_autofree char *tls_id = names_node (reply->id, NAMES_TLS_SERVER, 0);
  g_autofree char *authz_id = names_node (reply->id, NAMES_TLS_AUTHZ, 0);

  if (opts->tls_dir == NULL)
    return TRUE;
  return nbd_tls_add_creds (dst, tls_id, TRUE, opts->tls_dir, cancellable, error)
         && (opts->tls_authz == NULL
             || nbd_tls_add_authz (dst, authz_id, opts->tls_authz, cancellable, error));
}

/* The memory stream follows the NBD rule: plaintext TCP only on loopback, with
 * --tls-creds (the stream is then TLS) or --insecure. */
static gboolean
dest_check_incoming (const Cookie *reply, const PrepareOptions *opts, GError **error)
{
  g_auto(NbdEndpoint) ep = { 0 };

  if (reply->mode != COOKIE_MODE_LIVE || opts->tls_dir != NULL || opts->insecure
      || !g_str_has_prefix (opts->incoming_uri, "tcp:"))
    return TRUE;
  if (!nbd_endpoint_parse (opts->incoming_uri, &ep, error))
    return g_prefix_error (error, "--incoming: "), FALSE;
  if (nbd_host_is_loopback (ep.host))
    return TRUE;
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
               "refusing a plaintext memory stream over TCP on %s: give --tls-creds DIR, or "
               "--insecure if the network is trusted", ep.host);
  return FALSE;
}

static gboolean
dest_setup (QmpClient *dst, Cookie *reply, const PrepareOptions *opts, gboolean *server_started,
            GCancellable *cancellable, GError **error)
{
  g_autoptr(GPtrArray) dst_disks = disks_query (dst, TRUE, cancellable, error);
  g_autofree char *tls_id = names_node (reply->id, NAMES_TLS_SERVER, 0);
  g_autofree char *authz_id = names_node (reply->id, NAMES_TLS_AUTHZ, 0);
  g_auto(NbdEndpoint) ep = { g_strdup (opts->listen.unix_path), g_strdup (opts->listen.host),
                     opts->listen.port };
  gboolean ok;

  if (dst_disks == NULL)
    return FALSE;
  if (!session_check_plaintext (opts->listen.host, opts->tls_dir != NULL, opts->insecure, error)
      || !dest_check_incoming (reply, opts, error)
      || (reply->mode == COOKIE_MODE_LIVE && !dest_expect_incoming (dst, cancellable, error))
      || (reply->mode == COOKIE_MODE_LIVE && !dest_check_machine (dst, reply, cancellable, error)))
    return FALSE;
  if (!dest_check_named (reply, opts, error))
    return FALSE;
  for (guint i = 0; i < reply->disks->len; i++)
    if (!dest_plan_disk (dst, reply, i, dst_disks, opts, cancellable, error))
      return FALSE;
  if (!dest_journal_write (opts->journal, reply, error)
      || !dest_add_tls (dst, reply, opts, cancellable, error))
    return FALSE;
  ok = nbd_server_start (dst, &ep, opts->tls_dir != NULL ? tls_id : NULL,
                         opts->tls_authz != NULL ? authz_id : NULL, cancellable, error);
  *server_started = ok;
  if (ok)
    {
      /* ours once it listens (bind never replaces a file), so finish removes it */
      if (ep.unix_path != NULL)
        journal_add_created (opts->journal, ep.unix_path);
      reply->nbd_unix = g_steal_pointer (&ep.unix_path);
      reply->nbd_host = g_steal_pointer (&ep.host);
      reply->nbd_port = ep.port;
    }
  for (guint i = 0; ok && i < reply->disks->len; i++)
    ok = dest_export_disk (dst, opts, reply, i, cancellable, error);
  nbd_endpoint_clear (&ep);
  if (ok && reply->mode == COOKIE_MODE_LIVE)
    ok = dest_start_incoming (dst, reply, opts, cancellable, error);
  if (ok && reply->mode == COOKIE_MODE_LIVE && g_str_has_prefix (opts->incoming_uri, "unix:"))
    journal_add_created (opts->journal, opts->incoming_uri + 5);
  return ok;
}

static Cookie *
dest_reply_new (QmpClient *dst, Cookie *offer, GError **error)
{
  Cookie *reply;

  if (!cookie_accept_features (offer, error))
    return NULL;
  reply = cookie_new_reply (offer);
  if (cookie_is_qemu_version (qmp_client_get_version (dst)))
    reply->dest_qemu = g_strdup (qmp_client_get_version (dst));
  return reply;
}

Cookie *
session_prepare (QmpClient *dst, Cookie *offer, const PrepareOptions *opts,
                 GCancellable *cancellable, GError **error)
{
  g_autoptr(Cookie) reply = dest_reply_new (dst, offer, error);
  gboolean server_started = FALSE;

  if (reply == NULL)
    return NULL;
  events_emit ("phase", "phase", qmp_str ("prepare"), NULL);
  if (reply->mode == COOKIE_MODE_LIVE && opts->incoming_uri == NULL)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "a live migration needs an incoming URI for the destination"), NULL;
  if (!dest_setup (dst, reply, opts, &server_started, cancellable, error))
    {
      g_prefix_error (error, "prepare: ");
      session_abort_dest (dst, reply, server_started);
      if (opts->journal != NULL)
        journal_remove_created (opts->journal, TRUE);
      return NULL;
    }
  return g_steal_pointer (&reply);
}

/* ---- finishing ---------------------------------------------------------- */

static gboolean
dest_wait_incoming (QmpClient *dst, GCancellable *cancellable, GError **error)
{
  static const char *const ends[] = { "completed", "failed", "cancelled", NULL };
  g_autoptr(QmpEventWait) wait = qmp_event_wait_new (dst, "MIGRATION", "status", ends);
  g_autoptr(QmpMigrateInfo) info = qmp_query_migrate (dst, cancellable, error);
  g_autoptr(JsonObject) data = NULL;
  const char *status;

  if (info == NULL)
    return FALSE;
  status = info->status ?: "none";
  if (!g_strv_contains (ends, status))
    {
      data = qmp_event_wait_sync (wait, INCOMING_TIMEOUT_MS, cancellable, error);
      if (data == NULL)
        return FALSE;
      status = qmp_member_string_or (data, "status", "?");
    }
  if (g_str_equal (status, "completed"))
    return TRUE;
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_MIGRATION,
               "the incoming migration on the destination %s", status);
  return FALSE;
}

gboolean
session_remove_exports (QmpClient *dst, const Cookie *cookie, GCancellable *cancellable,
                        GError **error)
{
  g_auto(GStrv) exports = nbd_export_list (dst, cancellable, error);
  gboolean any = FALSE;

  if (exports == NULL)
    return FALSE;
  /* Our names, not the cookie's: a forged export name must not reach another's. */
  for (guint i = 0; exports[i] != NULL; i++)
    {
      if (!names_owns (cookie->id, exports[i]))
        continue;
      any = TRUE;
      if (!nbd_export_del (dst, exports[i], FALSE, cancellable, error))
        return FALSE;
    }
  if (!any)
    return TRUE;  /* torn down already, as soon as the mirrors ended */
  if (!nbd_server_stop (dst, cancellable, error))
    return FALSE;
  session_del_tls_objects (dst, cookie);
  return TRUE;
}

/* The nodes prepare opened for disk @i, by our names: a file target, copy-base's
 * layer copies. */
static GPtrArray *
dest_created_nodes (const Cookie *cookie, guint i)
{
  CookieDisk *disk = cookie->disks->pdata[i];
  GPtrArray *nodes = g_ptr_array_new_with_free_func (g_free);

  if (session_is_file_target (cookie, i))
    g_ptr_array_add (nodes, g_strdup (disk->target_node));
  for (guint j = 0; g_strcmp0 (disk->sync, "copy-base") == 0 && j < disk->chain->len; j++)
    g_ptr_array_add (nodes, names_layer_node (cookie->id, i, j));
  return nodes;
}

static gboolean
dest_has_node (GPtrArray *nodes, const char *name)
{
  for (guint i = 0; i < nodes->len; i++)
    if (g_strcmp0 (((QmpBlockNodeInfo *) nodes->pdata[i])->node_name, name) == 0)
      return TRUE;
  return FALSE;
}

/* Detaches what prepare opened; a node already gone (finish run again after a
 * failure) is skipped. */
static gboolean
dest_detach_created (QmpClient *dst, const Cookie *cookie, GCancellable *cancellable,
                     GError **error)
{
  g_autoptr(GPtrArray) have = NULL;

  for (guint i = 0; i < cookie->disks->len; i++)
    {
      g_autoptr(GPtrArray) ours = dest_created_nodes (cookie, i);

      if (ours->len > 0 && have == NULL
          && (have = qmp_query_named_block_nodes (dst, cancellable, error)) == NULL)
        return FALSE;
      for (guint j = 0; j < ours->len; j++)
        if (dest_has_node (have, ours->pdata[j])
            && !qmp_blockdev_del (dst, ours->pdata[j], cancellable, error))
          return FALSE;
    }
  return TRUE;
}

static gboolean
dest_finish (QmpClient *dst, const Cookie *result, const Journal *journal, gboolean resume,
             GCancellable *cancellable, GError **error)
{
  gboolean live = result->mode == COOKIE_MODE_LIVE
                  && g_strcmp0 (result->status, "completed") == 0;
  events_emit ("phase", "phase", qmp_str ("finish"), NULL);
  if (result->mode == COOKIE_MODE_MOVE)
    return TRUE;  /* the source now runs on these exports: they stay */
  if (live && !dest_wait_incoming (dst, cancellable, error))
    return FALSE;
  if (!session_remove_exports (dst, result, cancellable, error)
      || !dest_detach_created (dst, result, cancellable, error)
      || !dest_copy_base_compose (dst, result, journal, cancellable, error))
    return FALSE;
  /* a migrated image becomes active (writable headers) only with cont */
  if ((live || resume) && !qmp_cont (dst, cancellable, error))
    return FALSE;
  return dest_copy_base_record (dst, result, cancellable, error);
}

gboolean
session_finish (QmpClient *dst, const Cookie *result, const Journal *journal,
                gboolean resume, GCancellable *cancellable, GError **error)
{
  if (dest_finish (dst, result, journal, resume, cancellable, error))
    return TRUE;
  g_prefix_error (error, "finish: ");
  return FALSE;
}
