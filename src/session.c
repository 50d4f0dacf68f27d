/* What both sides of a migration share: the journal, TLS objects, the best-effort abort. */
#include "src/session.h"

#include "common/debug.h"
#include "common/async.h"
#include "common/error.h"
#include "nbd/nbd-tls.h"
#include "qmp/qmp-commands.h"
#include "src/names.h"

#define ABORT_TIMEOUT_MS (30 * 1000)
#define ABORT_COMMAND_MS (10 * 1000)
#define ABORT_SETTLE_MS (15 * 1000)

gboolean
session_is_file_target (const Cookie *cookie, guint index)
{
  CookieDisk *disk = cookie->disks->pdata[index];
  g_autofree char *ours = names_node (cookie->id, NAMES_FILE_TARGET, index);

  return g_strcmp0 (disk->target_node, ours) == 0;
}

gboolean
session_journal (Journal *journal, JournalStep step, const Cookie *cookie, GError **error)
{
  if (journal == NULL)
    return TRUE;
  g_clear_pointer (&journal->cookie, cookie_free);
  journal->cookie = cookie_copy (cookie);
  return journal_write (journal, step, error);
}

static guint session_try_begin (QmpClient *qmp);
static gboolean session_try_end (QmpClient *qmp, guint saved, gboolean ok, GError **error);

/* Migration parameters that name one of @ids are unset (no TLS) before the objects
 * go: QEMU would keep pointing at deleted objects for its next migration.  QEMU 7.2
 * keeps even an unset tls-authz as "" and then looks that id up, so tls-authz is
 * touched only when it is ours. */
static void
session_reset_migration_tls (QmpClient *qmp, const char *const *ids)
{
  g_autoptr(QmpMigrateParametersInfo) params = NULL;
  g_autoptr(GError) error = NULL;
  QmpMigrateParameters unset = { NULL };
  guint saved;

  if (qmp_client_get_state (qmp) != QMP_STATE_READY)
    return;
  saved = session_try_begin (qmp);
  params = qmp_query_migrate_parameters (qmp, NULL, &error);
  if (!session_try_end (qmp, saved, params != NULL, &error))
    return;
  if (g_strv_contains (ids, params->tls_creds ?: ""))
    unset.tls_creds = unset.tls_hostname = QMP_NULL;
  if (g_strv_contains (ids, params->tls_authz ?: ""))
    unset.tls_authz = QMP_NULL;
  if (unset.tls_creds == NULL && unset.tls_authz == NULL)
    return;
  saved = session_try_begin (qmp);
  session_try_end (qmp, saved, qmp_migrate_set_parameters (qmp, &unset, NULL, &error), &error);
}

void
session_del_tls_objects (QmpClient *qmp, const Cookie *cookie)
{
  static const NamesKind kinds[] = { NAMES_TLS_SERVER, NAMES_TLS_AUTHZ, NAMES_TLS_CLIENT };
  g_auto(GStrv) ids = g_new0 (char *, G_N_ELEMENTS (kinds) + 1);

  for (gsize i = 0; i < G_N_ELEMENTS (kinds); i++)
    ids[i] = names_node (cookie->id, kinds[i], 0);
  session_reset_migration_tls (qmp, (const char *const *) ids);

  for (gsize i = 0; i < G_N_ELEMENTS (kinds); i++)
    {
      g_autofree char *id = names_node (cookie->id, kinds[i], 0);
      nbd_tls_del (qmp, id);
    }
}

gboolean
session_check_plaintext (const char *host, gboolean tls, gboolean insecure, GError **error)
{
  if (host == NULL || tls || insecure || nbd_host_is_loopback (host))
    return TRUE;
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
               "refusing plaintext NBD over TCP to %s: give --tls-creds DIR, or --insecure "
               "if the network is trusted", host);
  return FALSE;
}

gboolean
session_set_capabilities (QmpClient *qmp, const char *const *caps, GCancellable *cancellable,
                          GError **error)
{
  return qmp_migrate_set_capabilities (qmp, caps, cancellable, error);
}

/* Each abort step logs what failed and goes on: an abort must do as much as it
 * can.  Between session_try_begin and session_try_end the client's commands get
 * ABORT_COMMAND_MS, and a QEMU that does not answer in time is given up on at once
 * (its connection closed), so a frozen side cannot stretch the abort. */
static guint
session_try_begin (QmpClient *qmp)
{
  guint saved = qmp_client_get_default_timeout (qmp);

  qmp_client_set_default_timeout (qmp, ABORT_COMMAND_MS);
  return saved;
}

/* Returns @ok; clears *@error. */
static gboolean
session_try_end (QmpClient *qmp, guint saved, gboolean ok, GError **error)
{
  qmp_client_set_default_timeout (qmp, saved);
  if (ok)
    return TRUE;
  blkmig_debug (BLKMIG_DEBUG_JOBS, "abort: %s", (*error)->message);
  if (g_error_matches (*error, QMP_ERROR, QMP_ERROR_TIMEOUT))
    {
      g_printerr ("blkmig: warning: cleaning up: %s: giving up on this connection\n",
                  (*error)->message);
      qmp_client_close (qmp);
    }
  g_clear_error (error);
  return FALSE;
}

/* Dismisses our concluded jobs; with @group, adds the others to it.  Returns how
 * many of ours were not concluded (G_MAXUINT when QEMU could not be asked). */
static guint
session_sweep_jobs (QmpClient *qmp, const char *id, JobGroup *group)
{
  guint running = 0;
  g_autoptr(GError) error = NULL;
  guint saved = session_try_begin (qmp);
  g_autoptr(GPtrArray) jobs = qmp_query_block_jobs (qmp, NULL, &error);

  session_try_end (qmp, saved, jobs != NULL, &error);
  for (guint i = 0; jobs != NULL && i < jobs->len; i++)
    {
      QmpBlockJobInfo *info = jobs->pdata[i];

      if (!names_owns (id, info->device))
        continue;
      if (g_strcmp0 (info->status, "concluded") == 0)
        {
          saved = session_try_begin (qmp);
          session_try_end (qmp, saved, qmp_job_dismiss (qmp, info->device, NULL, &error),
                           &error);
        }
      else
        {
          running++;
          if (group != NULL)
            job_group_add (group, info->device, info->device);
        }
    }
  return jobs != NULL ? running : G_MAXUINT;
}

/* Force-cancels our jobs and dismisses them; a last sweep dismisses any that
 * concluded without the group seeing it (seen on QEMU 10.0 after a cut link). */
static void
session_abort_jobs (QmpClient *qmp, const char *id)
{
  g_autoptr(JobGroup) group = job_group_new (qmp);

  session_sweep_jobs (qmp, id, group);
  if (job_group_get_jobs (group)->len == 0)
    return;
  job_group_abort (group, ABORT_TIMEOUT_MS);
  /* QEMU 10.0 can conclude a mirror whose link was cut after the group stopped
   * waiting (its requests end with the NBD reconnect delay): sweep until they did */
  for (guint waited = 0; waited < ABORT_SETTLE_MS; waited += 200)
    {
      guint left = session_sweep_jobs (qmp, id, NULL);

      if (left == 0 || left == G_MAXUINT)
        return;
      blkmig_sleep (200, NULL);
    }
}

/* An NBD client node whose server is gone would wait out its reconnect-delay
 * before blockdev-del returns; yanking it first drops the connection at once. */
static void
session_yank_nbd (QmpClient *qmp, const char *node)
{
  g_autoptr(GError) error = NULL;
  guint saved = session_try_begin (qmp);

  session_try_end (qmp, saved, qmp_yank_block_node (qmp, node, NULL, &error), &error);
}

/* The block nodes of this migration: name → driver. */
static GHashTable *
session_owned_nodes (QmpClient *qmp, const char *id)
{
  g_autoptr(GError) error = NULL;
  guint saved = session_try_begin (qmp);
  g_autoptr(GPtrArray) nodes = qmp_query_named_block_nodes (qmp, NULL, &error);
  GHashTable *owned = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);

  session_try_end (qmp, saved, nodes != NULL, &error);
  for (guint i = 0; nodes != NULL && i < nodes->len; i++)
    {
      QmpBlockNodeInfo *node = nodes->pdata[i];

      if (names_owns (id, node->node_name))
        g_hash_table_insert (owned, g_strdup (node->node_name), g_strdup (node->drv ?: ""));
    }
  return owned;
}

static void
session_yank_ours (QmpClient *qmp, const Cookie *cookie)
{
  g_autoptr(GHashTable) owned = session_owned_nodes (qmp, cookie->id);
  GHashTableIter iter;
  gpointer name, drv;

  g_hash_table_iter_init (&iter, owned);
  while (g_hash_table_iter_next (&iter, &name, &drv))
    if (g_str_equal (drv, "nbd"))
      session_yank_nbd (qmp, name);
}

/* Deletes our nodes (QEMU's side only: files are the journal's business), in
 * rounds: a node under another of ours (a stack of layers) goes once that one is
 * gone. */
static void
session_abort_nodes (QmpClient *qmp, const char *id)
{
  for (guint round = 0; round < 64; round++)
    {
      g_autoptr(GHashTable) owned = session_owned_nodes (qmp, id);
      GHashTableIter iter;
      gpointer name;
      guint deleted = 0;

      g_hash_table_iter_init (&iter, owned);
      while (g_hash_table_iter_next (&iter, &name, NULL))
        {
          g_autoptr(GError) error = NULL;
          guint saved = session_try_begin (qmp);
          gboolean ok = qmp_blockdev_del (qmp, name, NULL, &error);

          deleted += ok;
          session_try_end (qmp, saved, ok, &error);
        }
      if (deleted == 0 || deleted == g_hash_table_size (owned))
        return;
    }
}

static void
session_abort_migration (QmpClient *qmp)
{
  static const char *const idle[] = { "none", "completed", "failed", "cancelled", NULL };
  g_autoptr(GError) error = NULL;
  guint saved = session_try_begin (qmp);
  g_autoptr(QmpMigrateInfo) info = qmp_query_migrate (qmp, NULL, &error);

  session_try_end (qmp, saved, info != NULL, &error);
  if (g_strv_contains (idle, info != NULL && info->status != NULL ? info->status : "none"))
    return;
  saved = session_try_begin (qmp);
  session_try_end (qmp, saved, qmp_migrate_cancel (qmp, NULL, &error), &error);
}

/* Only names that carry the migration id, and no file: a cookie may come from the
 * peer, so the sockets and targets to remove come from this side's journal
 * (journal_remove_created), never from here. */
void
session_abort_dest (QmpClient *dst, const Cookie *cookie, gboolean stop_server)
{
  g_auto(GStrv) exports = nbd_export_list (dst, NULL, NULL);
  gboolean ours = stop_server;

  for (gsize i = 0; exports != NULL && exports[i] != NULL; i++)
    {
      g_autoptr(GError) error = NULL;

      if (!names_owns (cookie->id, exports[i]))
        continue;
      ours = TRUE;
      if (!nbd_export_del (dst, exports[i], TRUE, NULL, &error))
        blkmig_debug (BLKMIG_DEBUG_JOBS, "abort: %s", error->message);
    }
  if (ours)
    {
      g_autoptr(GError) error = NULL;
      guint saved = session_try_begin (dst);

      session_try_end (dst, saved, qmp_nbd_server_stop (dst, NULL, &error), &error);
    }
  session_abort_nodes (dst, cookie->id);
  session_del_tls_objects (dst, cookie);  /* unused once server and nodes are gone */
}

void
session_abort_blockdevs (QmpClient *qmp, const char *id)
{
  if (qmp_client_get_state (qmp) != QMP_STATE_READY)
    return;
  session_abort_jobs (qmp, id);
  session_abort_nodes (qmp, id);
}

void
session_abort (QmpClient *qmp, const Cookie *cookie)
{
  if (qmp_client_get_state (qmp) != QMP_STATE_READY)
    return;
  /* A mirror cannot finish cancelling while its NBD requests hang on a dead or
   * frozen destination: drop those connections first. */
  session_yank_ours (qmp, cookie);
  session_abort_jobs (qmp, cookie->id);
  /* Export names carry the migration id, so any cookie finds the destination's. */
  session_abort_dest (qmp, cookie, FALSE);
  /* Only a live migration is ours to cancel: a copy or a replication must not
   * touch a memory migration someone else runs on this VM. */
  if (cookie->mode == COOKIE_MODE_LIVE)
    session_abort_migration (qmp);
}
