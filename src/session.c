/* Names shared by both sides of a migration, and the best-effort abort of either side. */
#include "src/session.h"

#include "common/debug.h"
#include "common/error.h"
#include "nbd/nbd-tls.h"
#include "qmp/qmp-json.h"

#define ABORT_TIMEOUT_MS (30 * 1000)
#define ABORT_COMMAND_MS (10 * 1000)

char *
session_job_id (const Cookie *cookie, guint index)
{
  return g_strdup_printf ("blkmig-%.8s-%u", cookie->id, index);
}

/* kind 'n': the source's NBD client node; 'd': a destination file target. */
char *
session_node_name (const Cookie *cookie, char kind, guint index)
{
  return g_strdup_printf ("blkmig%.8s%c%u", cookie->id, kind, index);
}

gboolean
session_is_file_target (const Cookie *cookie, guint index)
{
  CookieDisk *disk = cookie->disks->pdata[index];
  g_autofree char *ours = session_node_name (cookie, 'd', index);

  return g_strcmp0 (disk->target_node, ours) == 0;
}

static gboolean
session_owns (const Cookie *cookie, const char *name)
{
  g_autofree char *job_prefix = g_strdup_printf ("blkmig-%.8s-", cookie->id);
  g_autofree char *node_prefix = g_strdup_printf ("blkmig%.8s", cookie->id);

  return name != NULL && (g_str_has_prefix (name, job_prefix)
                          || g_str_has_prefix (name, node_prefix));
}

gboolean
session_journal (Journal *journal, const char *step, const Cookie *cookie, GError **error)
{
  g_autofree char *text = NULL;

  if (journal == NULL)
    return TRUE;
  text = cookie_to_string (cookie);
  g_clear_pointer (&journal->cookie, cookie_free);
  journal->cookie = cookie_parse (text, -1, COOKIE_KIND_SOURCE, error);
  return journal->cookie != NULL && journal_write (journal, step, error);
}

static JsonNode *session_try (QmpClient *qmp, const char *command, JsonNode *args);

/* Migration parameters that name one of @ids are unset (no TLS) before the objects
 * go: QEMU would keep pointing at deleted objects for its next migration.  QEMU 7.2
 * keeps even an unset tls-authz as "" and then looks that id up, so tls-authz is
 * touched only when it is ours. */
static void
session_reset_migration_tls (QmpClient *qmp, const char *const *ids)
{
  g_autoptr(JsonNode) params = NULL;
  g_autoptr(JsonNode) ret = NULL;
  JsonObject *obj;
  gboolean creds, authz;

  if (qmp_client_get_state (qmp) != QMP_STATE_READY
      || !qmp_client_has_command (qmp, "query-migrate-parameters"))
    return;
  params = session_try (qmp, "query-migrate-parameters", NULL);
  obj = qmp_node_object (params);
  creds = g_strv_contains (ids, qmp_member_string (obj, "tls-creds") ?: "");
  authz = g_strv_contains (ids, qmp_member_string (obj, "tls-authz") ?: "");
  if (creds || authz)
    ret = session_try (qmp, "migrate-set-parameters",  /* null: unset */
                       qmp_args_new ("tls-creds", creds ? json_node_new (JSON_NODE_NULL) : NULL,
                                     "tls-hostname", creds ? json_node_new (JSON_NODE_NULL) : NULL,
                                     "tls-authz", authz ? json_node_new (JSON_NODE_NULL) : NULL,
                                     NULL));
}

void
session_del_tls_objects (QmpClient *qmp, const Cookie *cookie)
{
  static const char kinds[] = { 't', 'z', 'c' };
  g_auto(GStrv) ids = g_new0 (char *, G_N_ELEMENTS (kinds) + 1);

  for (gsize i = 0; i < G_N_ELEMENTS (kinds); i++)
    ids[i] = session_node_name (cookie, kinds[i], 0);
  session_reset_migration_tls (qmp, (const char *const *) ids);

  for (gsize i = 0; i < G_N_ELEMENTS (kinds); i++)
    {
      g_autofree char *id = session_node_name (cookie, kinds[i], 0);
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
  g_autoptr(JsonArray) list = json_array_new ();
  JsonNode *arg = json_node_new (JSON_NODE_ARRAY);
  g_autoptr(JsonNode) ret = NULL;

  for (gsize i = 0; caps[i] != NULL; i++)
    json_array_add_element (list, qmp_args_new ("capability", qmp_str (caps[i]),
                                                 "state", qmp_bool (TRUE), NULL));
  json_node_set_array (arg, list);
  ret = qmp_client_execute_sync (qmp, "migrate-set-capabilities",
                                 qmp_args_new ("capabilities", arg, NULL), cancellable, error);
  return ret != NULL;
}

/* Each step logs what failed and goes on: an abort must do as much as it can.
 * A QEMU that does not answer within ABORT_COMMAND_MS is given up on at once
 * (its connection closed), so a frozen side cannot stretch the abort. */
static JsonNode *
session_try (QmpClient *qmp, const char *command, JsonNode *args)
{
  g_autoptr(GError) error = NULL;
  JsonNode *ret = qmp_client_execute_full_sync (qmp, command, args, -1, ABORT_COMMAND_MS,
                                                NULL, &error);

  if (ret != NULL)
    return ret;
  blkmig_debug (BLKMIG_DEBUG_JOBS, "abort: %s", error->message);
  if (g_error_matches (error, QMP_ERROR, QMP_ERROR_TIMEOUT))
    qmp_client_close (qmp);
  return NULL;
}

static void
session_abort_jobs (QmpClient *qmp, const Cookie *cookie)
{
  g_autoptr(JsonNode) list = session_try (qmp, "query-block-jobs", NULL);
  g_autoptr(JobGroup) group = job_group_new (qmp);
  JsonArray *jobs = qmp_node_array (list);

  for (guint i = 0; i < qmp_array_length (jobs); i++)
    {
      JsonObject *info = qmp_array_object (jobs, i);
      const char *id = qmp_member_string (info, "device");
      const char *status = qmp_member_string_or (info, "status", "");

      if (!session_owns (cookie, id))
        continue;
      if (g_str_equal (status, "concluded"))
        {
          g_autoptr(JsonNode) ret = session_try (qmp, "job-dismiss",
                                                 qmp_args_new ("id", qmp_str (id), NULL));
          continue;
        }
      job_group_add (group, id, id);
    }
  job_group_abort (group, ABORT_TIMEOUT_MS);
}

/* An NBD client node whose server is gone would wait out its reconnect-delay
 * before blockdev-del returns; yanking it first drops the connection at once. */
static void
session_yank_nbd (QmpClient *qmp, const char *node)
{
  g_autoptr(JsonNode) instances = qmp_json ("[{\"type\":\"block-node\"}]");
  g_autoptr(JsonNode) ret = NULL;

  if (!qmp_client_has_command (qmp, "yank"))
    return;
  json_object_set_string_member (json_array_get_object_element (json_node_get_array (instances), 0),
                                 "node-name", node);
  ret = session_try (qmp, "yank", qmp_args_new ("instances", json_node_ref (instances), NULL));
}

/* The block nodes of this migration: name → driver. */
static GHashTable *
session_owned_nodes (QmpClient *qmp, const Cookie *cookie)
{
  g_autoptr(JsonNode) list = session_try (qmp, "query-named-block-nodes",
                                          qmp_args_new ("flat", qmp_bool (TRUE), NULL));
  JsonArray *nodes = qmp_node_array (list);
  GHashTable *owned = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);

  for (guint i = 0; i < qmp_array_length (nodes); i++)
    {
      JsonObject *node = qmp_array_object (nodes, i);
      const char *name = qmp_member_string (node, "node-name");

      if (session_owns (cookie, name))
        g_hash_table_insert (owned, g_strdup (name),
                             g_strdup (qmp_member_string_or (node, "drv", "")));
    }
  return owned;
}

static void
session_yank_ours (QmpClient *qmp, const Cookie *cookie)
{
  g_autoptr(GHashTable) owned = session_owned_nodes (qmp, cookie);
  GHashTableIter iter;
  gpointer name, drv;

  g_hash_table_iter_init (&iter, owned);
  while (g_hash_table_iter_next (&iter, &name, &drv))
    if (g_str_equal (drv, "nbd"))
      session_yank_nbd (qmp, name);
}

/* Deletes our nodes (QEMU's side only: files are the journal's business). */
static void
session_abort_nodes (QmpClient *qmp, const Cookie *cookie)
{
  g_autoptr(GHashTable) owned = session_owned_nodes (qmp, cookie);
  GHashTableIter iter;
  gpointer name;

  g_hash_table_iter_init (&iter, owned);
  while (g_hash_table_iter_next (&iter, &name, NULL))
    {
      g_autoptr(JsonNode) ret = session_try (qmp, "blockdev-del",
                                             qmp_args_new ("node-name", qmp_str (name), NULL));
    }
}

static void
session_abort_migration (QmpClient *qmp)
{
  g_autoptr(JsonNode) info = session_try (qmp, "query-migrate", NULL);
  const char *status = qmp_member_string_or (qmp_node_object (info), "status", "none");
  static const char *const idle[] = { "none", "completed", "failed", "cancelled", NULL };
  g_autoptr(JsonNode) ret = NULL;

  if (!g_strv_contains (idle, status))
    ret = session_try (qmp, "migrate_cancel", NULL);
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

      if (!session_owns (cookie, exports[i]))
        continue;
      ours = TRUE;
      if (!nbd_export_del (dst, exports[i], TRUE, NULL, &error))
        blkmig_debug (BLKMIG_DEBUG_JOBS, "abort: %s", error->message);
    }
  if (ours)
    {
      g_autoptr(JsonNode) ret = session_try (dst, "nbd-server-stop", NULL);
    }
  session_abort_nodes (dst, cookie);
  session_del_tls_objects (dst, cookie);  /* unused once server and nodes are gone */
}

void
session_abort_blockdevs (QmpClient *qmp, const char *id)
{
  Cookie owner = { .id = (char *) id };

  if (qmp_client_get_state (qmp) != QMP_STATE_READY)
    return;
  session_abort_jobs (qmp, &owner);
  session_abort_nodes (qmp, &owner);
}

void
session_abort (QmpClient *qmp, const Cookie *cookie)
{
  if (qmp_client_get_state (qmp) != QMP_STATE_READY)
    return;
  /* A mirror cannot finish cancelling while its NBD requests hang on a dead or
   * frozen destination: drop those connections first. */
  session_yank_ours (qmp, cookie);
  session_abort_jobs (qmp, cookie);
  /* Export names carry the migration id, so any cookie finds the destination's. */
  session_abort_dest (qmp, cookie, FALSE);
  session_abort_migration (qmp);
}
