/* Typed QMP commands: argument objects built and replies read here, and nowhere above. */
#include "qmp/qmp-commands.h"

#include "common/escape.h"

#include "qmp/qmp-json.h"

const char qmp_null_arg[] = "(null)";

/* NULL: leave the member out; QMP_NULL: JSON null; else the string. */
static JsonNode *
qmp_opt_str (const char *value)
{
  if (value == NULL)
    return NULL;
  if (value == QMP_NULL)
    return json_node_new (JSON_NODE_NULL);
  return qmp_str (value);
}

static JsonNode *
qmp_array_node (JsonArray *array)
{
  JsonNode *node = json_node_new (JSON_NODE_ARRAY);

  json_node_take_array (node, array);
  return node;
}

/* Runs @command and drops its (empty) return value. */
static gboolean
qmp_run (QmpClient *qmp, const char *command, JsonNode *args, GCancellable *cancellable,
         GError **error)
{
  g_autoptr(JsonNode) ret = qmp_client_execute_sync (qmp, command, args, cancellable, error);

  return ret != NULL;
}

/* The _finish of a command whose (empty) return value is dropped. */
static gboolean
qmp_run_finish (QmpClient *qmp, GAsyncResult *result, GError **error)
{
  g_autoptr(JsonNode) ret = qmp_client_execute_finish (qmp, result, error);

  return ret != NULL;
}

static char *
qmp_dup (JsonObject *obj, const char *key)
{
  return g_strdup (qmp_member_string (obj, key));
}

/* ---- what the peer can do ------------------------------------------------ */

gboolean
qmp_can_getfd (QmpClient *qmp)
{
  return qmp_client_has_command (qmp, "getfd");
}

gboolean
qmp_can_block_export (QmpClient *qmp)
{
  return qmp_client_has_command (qmp, "block-export-add");
}

gboolean
qmp_can_change_copy_mode (QmpClient *qmp)
{
  /* copy-mode is all block-job-change can change (8.2 .. 10.x): no schema read */
  return qmp_client_has_command (qmp, "block-job-change");
}

gboolean
qmp_version_at_least (const char *version, guint major, guint minor)
{
  g_auto(GStrv) parts = version != NULL ? g_strsplit (version, ".", 3) : NULL;
  guint64 v_major, v_minor;

  if (parts == NULL || g_strv_length (parts) < 2
      || !g_ascii_string_to_unsigned (parts[0], 10, 0, G_MAXUINT, &v_major, NULL)
      || !g_ascii_string_to_unsigned (parts[1], 10, 0, G_MAXUINT, &v_minor, NULL))
    return FALSE;
  return v_major > major || (v_major == major && v_minor >= minor);
}

gboolean
qmp_nbd_zeroes_in_one_request (QmpClient *qmp, const char *server_version)
{
  return qmp_version_at_least (qmp_client_get_version (qmp), 8, 2)
         && qmp_version_at_least (server_version, 8, 2);
}

/* ---- the VM ---------------------------------------------------------------- */

void
qmp_status_info_free (QmpStatusInfo *info)
{
  if (info == NULL)
    return;
  g_free (info->status);
  g_free (info);
}

QmpStatusInfo *
qmp_query_status (QmpClient *qmp, guint timeout_ms, GCancellable *cancellable, GError **error)
{
  g_autoptr(JsonNode) ret = qmp_client_execute_full_sync (qmp, "query-status", NULL, -1,
                                                          timeout_ms, cancellable, error);
  JsonObject *obj = qmp_node_object (ret);
  QmpStatusInfo *info;

  if (ret == NULL)
    return NULL;
  info = g_new0 (QmpStatusInfo, 1);
  info->status = qmp_dup (obj, "status");
  info->running = qmp_member_bool (obj, "running", FALSE);
  return info;
}

char *
qmp_query_machine_type (QmpClient *qmp, GCancellable *cancellable, GError **error)
{
  g_autoptr(JsonNode) ret = qmp_client_execute_sync (qmp, "qom-get",
                                                     qmp_args_new ("path", qmp_str ("/machine"),
                                                                   "property", qmp_str ("type"),
                                                                   NULL),
                                                     cancellable, error);
  const char *type = ret != NULL ? qmp_node_string (ret) : NULL;

  if (ret == NULL)
    return NULL;
  if (type == NULL)
    return g_set_error (error, QMP_ERROR, QMP_ERROR_PROTOCOL, "qom-get: not a string"), NULL;
  if (g_str_has_suffix (type, "-machine"))
    return g_strndup (type, strlen (type) - strlen ("-machine"));
  return g_strdup (type);
}

gboolean
qmp_stop (QmpClient *qmp, GCancellable *cancellable, GError **error)
{
  return qmp_run (qmp, "stop", NULL, cancellable, error);
}

void
qmp_stop_async (QmpClient *qmp, GCancellable *cancellable, GAsyncReadyCallback callback,
                gpointer user_data)
{
  qmp_client_execute_async (qmp, "stop", NULL, -1, 0, cancellable, callback, user_data);
}

gboolean
qmp_stop_finish (QmpClient *qmp, GAsyncResult *result, GError **error)
{
  return qmp_run_finish (qmp, result, error);
}

gboolean
qmp_cont (QmpClient *qmp, GCancellable *cancellable, GError **error)
{
  return qmp_run (qmp, "cont", NULL, cancellable, error);
}

gboolean
qmp_getfd (QmpClient *qmp, const char *fdname, int fd, GCancellable *cancellable,
           GError **error)
{
  g_autoptr(JsonNode) ret = qmp_client_execute_full_sync (qmp, "getfd",
                                                          qmp_args_new ("fdname", qmp_str (fdname), NULL),
                                                          fd, 0, cancellable, error);
  return ret != NULL;
}

gboolean
qmp_yank_block_node (QmpClient *qmp, const char *node_name, GCancellable *cancellable,
                     GError **error)
{
  JsonArray *instances;

  if (!qmp_client_has_command (qmp, "yank"))
    return TRUE;
  instances = json_array_new ();
  json_array_add_element (instances, qmp_args_new ("type", qmp_str ("block-node"),
                                                   "node-name", qmp_str (node_name), NULL));
  return qmp_run (qmp, "yank", qmp_args_new ("instances", qmp_array_node (instances), NULL),
                  cancellable, error);
}

/* ---- objects --------------------------------------------------------------- */

gboolean
qmp_object_add_tls_creds_x509 (QmpClient *qmp, const char *id, gboolean server,
                               const char *dir, GCancellable *cancellable, GError **error)
{
  return qmp_run (qmp, "object-add",
                  qmp_args_new ("qom-type", qmp_str ("tls-creds-x509"),
                                "id", qmp_str (id),
                                "endpoint", qmp_str (server ? "server" : "client"),
                                "dir", qmp_str (dir),
                                "verify-peer", qmp_bool (TRUE), NULL),
                  cancellable, error);
}

gboolean
qmp_object_add_authz_list (QmpClient *qmp, const char *id, const char *const *allow,
                           GCancellable *cancellable, GError **error)
{
  JsonArray *rules = json_array_new ();

  for (gsize i = 0; allow[i] != NULL; i++)
    json_array_add_element (rules, qmp_args_new ("match", qmp_str (allow[i]),
                                                 "policy", qmp_str ("allow"),
                                                 "format", qmp_str ("exact"), NULL));
  return qmp_run (qmp, "object-add",
                  qmp_args_new ("qom-type", qmp_str ("authz-list"),
                                "id", qmp_str (id),
                                "policy", qmp_str ("deny"),
                                "rules", qmp_array_node (rules), NULL),
                  cancellable, error);
}

gboolean
qmp_object_del (QmpClient *qmp, const char *id, GCancellable *cancellable, GError **error)
{
  return qmp_run (qmp, "object-del", qmp_args_new ("id", qmp_str (id), NULL),
                  cancellable, error);
}

/* ---- addresses ------------------------------------------------------------ */

/* SocketAddress, the flat form (blockdev-add's "server"). */
static JsonNode *
qmp_address_flat (const QmpSocketAddress *addr)
{
  g_autofree char *port = g_strdup_printf ("%d", addr->port);

  switch (addr->type)
    {
    case QMP_ADDRESS_UNIX:
      return qmp_args_new ("type", qmp_str ("unix"), "path", qmp_str (addr->path), NULL);
    case QMP_ADDRESS_INET:
      return qmp_args_new ("type", qmp_str ("inet"), "host", qmp_str (addr->host),
                           "port", qmp_str (port), NULL);
    case QMP_ADDRESS_FD:
    default:
      return qmp_args_new ("type", qmp_str ("fd"), "str", qmp_str (addr->fd_name), NULL);
    }
}

/* SocketAddressLegacy, with "data" (nbd-server-start's "addr"). */
static JsonNode *
qmp_address_legacy (const QmpSocketAddress *addr)
{
  g_autofree char *port = g_strdup_printf ("%d", addr->port);

  switch (addr->type)
    {
    case QMP_ADDRESS_UNIX:
      return qmp_args_new ("type", qmp_str ("unix"),
                           "data", qmp_args_new ("path", qmp_str (addr->path), NULL), NULL);
    case QMP_ADDRESS_INET:
      return qmp_args_new ("type", qmp_str ("inet"),
                           "data", qmp_args_new ("host", qmp_str (addr->host),
                                                 "port", qmp_str (port), NULL), NULL);
    case QMP_ADDRESS_FD:
    default:
      return qmp_args_new ("type", qmp_str ("fd"),
                           "data", qmp_args_new ("str", qmp_str (addr->fd_name), NULL), NULL);
    }
}

/* ---- block nodes ----------------------------------------------------------- */

gboolean
qmp_blockdev_add_nbd (QmpClient *qmp, const QmpBlockdevNbd *args, GCancellable *cancellable,
                      GError **error)
{
  return qmp_run (qmp, "blockdev-add",
                  qmp_args_new ("driver", qmp_str ("nbd"),
                                "node-name", qmp_str (args->node_name),
                                "server", qmp_address_flat (&args->server),
                                "export", qmp_str (args->export_name),
                                "discard", qmp_opt_str (args->discard),
                                "detect-zeroes", qmp_opt_str (args->detect_zeroes),
                                "reconnect-delay", args->reconnect_delay >= 0
                                  ? qmp_int (args->reconnect_delay) : NULL,
                                "tls-creds", qmp_opt_str (args->tls_creds),
                                "tls-hostname", qmp_opt_str (args->tls_hostname),
                                NULL),
                  cancellable, error);
}

static JsonNode *
qmp_cache_arg (const QmpBlockdevImage *args)
{
  if (!args->set_cache)
    return NULL;
  return qmp_args_new ("direct", qmp_bool (args->cache_direct),
                       "no-flush", qmp_bool (args->cache_no_flush), NULL);
}

static JsonNode *
qmp_image_backing (const QmpBlockdevImage *args)
{
  if (args->no_backing)
    return json_node_new (JSON_NODE_NULL);
  return args->backing_node != NULL ? qmp_str (args->backing_node) : NULL;
}

static JsonNode *
qmp_image_args (const QmpBlockdevImage *args)
{
  JsonNode *file = args->file_node != NULL
                   ? qmp_str (args->file_node)
                   : qmp_args_new ("driver", qmp_str ("file"),
                                   "filename", qmp_str (args->filename),
                                   "cache", qmp_cache_arg (args),
                                   "discard", qmp_opt_str (args->discard),
                                   NULL);

  return qmp_args_new ("driver", qmp_str (args->format),
                       "node-name", qmp_str (args->node_name),
                       "read-only", args->read_only ? qmp_bool (TRUE) : NULL,
                       "cache", qmp_cache_arg (args),
                       "discard", qmp_opt_str (args->discard),
                       "detect-zeroes", qmp_opt_str (args->detect_zeroes),
                       "backing", qmp_image_backing (args),
                       "file", file,
                       NULL);
}

gboolean
qmp_blockdev_add_image (QmpClient *qmp, const QmpBlockdevImage *args,
                        GCancellable *cancellable, GError **error)
{
  return qmp_run (qmp, "blockdev-add", qmp_image_args (args), cancellable, error);
}

gboolean
qmp_blockdev_reopen_image (QmpClient *qmp, const QmpBlockdevImage *args,
                           GCancellable *cancellable, GError **error)
{
  JsonNode *options = json_node_new (JSON_NODE_ARRAY);

  json_node_take_array (options, json_array_new ());
  json_array_add_element (json_node_get_array (options), qmp_image_args (args));
  return qmp_run (qmp, "blockdev-reopen", qmp_args_new ("options", options, NULL),
                  cancellable, error);
}

gboolean
qmp_flush_node (QmpClient *qmp, const char *node, GCancellable *cancellable, GError **error)
{
  g_autofree char *line = NULL;
  g_autoptr(JsonNode) ret = NULL;
  const char *out;

  /* QEMU's node names: a letter, then letters, digits, '-', '_', '.' */
  gboolean plain = g_ascii_isalpha (*node);

  for (const char *p = node; plain && *p != '\0'; p++)
    plain = g_ascii_isalnum (*p) || *p == '-' || *p == '_' || *p == '.';
  if (!plain)
    return g_set_error (error, QMP_ERROR, QMP_ERROR_GENERIC, "not a plain node name"), FALSE;
  line = g_strdup_printf ("qemu-io %s flush", node);
  ret = qmp_client_execute_sync (qmp, "human-monitor-command",
                                 qmp_args_new ("command-line", qmp_str (line), NULL),
                                 cancellable, error);
  if (ret == NULL)
    return FALSE;
  out = qmp_node_string (ret);
  if (out == NULL)
    return g_set_error (error, QMP_ERROR, QMP_ERROR_GENERIC,
                        "qemu-io flush: HMP answered something else than text"), FALSE;
  if (*out != '\0')  /* HMP reports a failure as text */
    {
      g_autofree char *safe = blkmig_escape (out);

      return g_set_error (error, QMP_ERROR, QMP_ERROR_GENERIC, "qemu-io flush: %s", safe), FALSE;
    }
  return TRUE;
}

gboolean
qmp_blockdev_del (QmpClient *qmp, const char *node_name, GCancellable *cancellable,
                  GError **error)
{
  return qmp_run (qmp, "blockdev-del", qmp_args_new ("node-name", qmp_str (node_name), NULL),
                  cancellable, error);
}

/* The graph's nodes by id, then the edge @parent --@child--> node. */
static const char *
qmp_graph_child (JsonObject *graph, const char *parent, const char *child)
{
  JsonArray *nodes = qmp_member_array (graph, "nodes");
  JsonArray *edges = qmp_member_array (graph, "edges");
  gint64 parent_id = -1;

  for (guint i = 0; i < qmp_array_length (nodes); i++)
    {
      JsonObject *node = qmp_array_object (nodes, i);
      if (g_strcmp0 (qmp_member_string (node, "name"), parent) == 0)
        parent_id = qmp_member_int (node, "id", -1);
    }
  for (guint i = 0; parent_id >= 0 && i < qmp_array_length (edges); i++)
    {
      JsonObject *edge = qmp_array_object (edges, i);
      gint64 id = qmp_member_int (edge, "child", -2);

      if (qmp_member_int (edge, "parent", -1) != parent_id
          || g_strcmp0 (qmp_member_string (edge, "name"), child) != 0)
        continue;
      for (guint j = 0; j < qmp_array_length (nodes); j++)
        if (qmp_member_int (qmp_array_object (nodes, j), "id", -1) == id)
          return qmp_member_string (qmp_array_object (nodes, j), "name");
    }
  return NULL;
}

char *
qmp_query_block_child (QmpClient *qmp, const char *parent, const char *child,
                       GCancellable *cancellable, GError **error)
{
  g_autoptr(JsonNode) ret = qmp_client_execute_sync (qmp, "x-debug-query-block-graph", NULL,
                                                     cancellable, error);
  const char *name = ret != NULL ? qmp_graph_child (qmp_node_object (ret), parent, child) : NULL;

  if (ret == NULL)
    return NULL;
  if (name == NULL)
    return g_set_error (error, QMP_ERROR, QMP_ERROR_PROTOCOL,
                        "x-debug-query-block-graph: the node has no %s child", child), NULL;
  return g_strdup (name);
}

gboolean
qmp_change_backing_file (QmpClient *qmp, const char *device, const char *image_node,
                         const char *backing_file, GCancellable *cancellable, GError **error)
{
  return qmp_run (qmp, "change-backing-file",
                  qmp_args_new ("device", qmp_str (device),
                                "image-node-name", qmp_str (image_node),
                                "backing-file", qmp_str (backing_file), NULL),
                  cancellable, error);
}

static void
qmp_image_info_free (QmpImageInfo *image)
{
  if (image == NULL)
    return;
  g_free (image->filename);
  g_free (image->format);
  g_strfreev (image->backing);
  qmp_image_info_free (image->backing_image);
  g_free (image);
}

static GStrv
qmp_backing_chain (JsonObject *image)
{
  g_autoptr(GStrvBuilder) chain = g_strv_builder_new ();
  gboolean any = FALSE;

  while ((image = qmp_member_object (image, "backing-image")) != NULL)
    {
      g_strv_builder_add (chain, qmp_member_string_or (image, "filename", ""));
      any = TRUE;
    }
  return any ? g_strv_builder_end (chain) : NULL;
}

static QmpImageInfo *
qmp_image_info_parse (JsonObject *obj)
{
  QmpImageInfo *image;

  if (obj == NULL)
    return NULL;
  image = g_new0 (QmpImageInfo, 1);
  image->filename = qmp_dup (obj, "filename");
  image->format = qmp_dup (obj, "format");
  image->virtual_size = qmp_member_int (obj, "virtual-size", 0);
  image->actual_size = qmp_member_int (obj, "actual-size", 0);
  image->backing = qmp_backing_chain (obj);
  /* as deep as the reply: the client's parser bounds its nesting */
  image->backing_image = qmp_image_info_parse (qmp_member_object (obj, "backing-image"));
  return image;
}

void
qmp_block_info_free (QmpBlockInfo *info)
{
  if (info == NULL)
    return;
  g_free (info->device);
  g_free (info->qdev);
  g_free (info->detect_zeroes);
  g_free (info->node_name);
  g_free (info->file);
  g_free (info->drv);
  qmp_image_info_free (info->image);
  g_free (info);
}

void
qmp_block_node_info_free (QmpBlockNodeInfo *info)
{
  if (info == NULL)
    return;
  g_free (info->node_name);
  g_free (info->drv);
  g_free (info->file);
  qmp_image_info_free (info->image);
  g_strfreev (info->bitmaps);
  g_free (info);
}

static QmpBlockInfo *
qmp_block_info_parse (JsonObject *entry)
{
  JsonObject *inserted = qmp_member_object (entry, "inserted");
  JsonObject *cache = qmp_member_object (inserted, "cache");
  QmpBlockInfo *info = g_new0 (QmpBlockInfo, 1);

  info->device = qmp_dup (entry, "device");
  info->qdev = qmp_dup (entry, "qdev");
  info->inserted = inserted != NULL;
  info->node_name = qmp_dup (inserted, "node-name");
  info->file = qmp_dup (inserted, "file");
  info->drv = qmp_dup (inserted, "drv");
  info->ro = qmp_member_bool (inserted, "ro", FALSE);
  info->cache_direct = qmp_member_bool (cache, "direct", FALSE);
  info->cache_no_flush = qmp_member_bool (cache, "no-flush", FALSE);
  info->detect_zeroes = qmp_dup (inserted, "detect_zeroes");
  info->image = qmp_image_info_parse (qmp_member_object (inserted, "image"));
  return info;
}

/* Named bitmaps by name; the unnamed ones (a running mirror's) summed up. */
static void
qmp_dirty_bitmaps_parse (QmpBlockNodeInfo *info, JsonArray *bitmaps)
{
  g_autoptr(GStrvBuilder) names = g_strv_builder_new ();
  gboolean any = FALSE;

  for (guint i = 0; i < qmp_array_length (bitmaps); i++)
    {
      JsonObject *bitmap = qmp_array_object (bitmaps, i);
      const char *name = qmp_member_string (bitmap, "name");
      gint64 count = MAX (qmp_member_int (bitmap, "count", 0), 0);

      if (bitmap == NULL)
        continue;
      if (name != NULL)
        g_strv_builder_add (names, name), any = TRUE;
      else if (!json_object_has_member (bitmap, "name"))  /* a mistyped name is no job's */
        info->job_dirty = count > G_MAXINT64 - info->job_dirty ? G_MAXINT64
                          : info->job_dirty + count;
    }
  if (any)
    info->bitmaps = g_strv_builder_end (names);
}

static QmpBlockNodeInfo *
qmp_block_node_info_parse (JsonObject *node)
{
  QmpBlockNodeInfo *info = g_new0 (QmpBlockNodeInfo, 1);

  info->node_name = qmp_dup (node, "node-name");
  info->drv = qmp_dup (node, "drv");
  info->file = qmp_dup (node, "file");
  info->ro = qmp_member_bool (node, "ro", FALSE);
  info->image = qmp_image_info_parse (qmp_member_object (node, "image"));
  qmp_dirty_bitmaps_parse (info, qmp_member_array (node, "dirty-bitmaps"));
  return info;
}

typedef gpointer (*QmpParseFunc) (JsonObject *obj);

/* The elements of a reply that is a list of objects, parsed; a non-object
 * element is parsed as an empty object would be. */
static GPtrArray *
qmp_parse_list (JsonNode *ret, QmpParseFunc parse, GDestroyNotify free_func)
{
  JsonArray *list = qmp_node_array (ret);
  GPtrArray *out = g_ptr_array_new_with_free_func (free_func);

  for (guint i = 0; i < qmp_array_length (list); i++)
    g_ptr_array_add (out, parse (qmp_array_object (list, i)));
  return out;
}

GPtrArray *
qmp_query_block (QmpClient *qmp, GCancellable *cancellable, GError **error)
{
  g_autoptr(JsonNode) ret = qmp_client_execute_sync (qmp, "query-block", NULL, cancellable,
                                                     error);

  if (ret == NULL)
    return NULL;
  return qmp_parse_list (ret, (QmpParseFunc) qmp_block_info_parse,
                         (GDestroyNotify) qmp_block_info_free);
}

GPtrArray *
qmp_query_named_block_nodes (QmpClient *qmp, GCancellable *cancellable, GError **error)
{
  g_autoptr(JsonNode) ret = qmp_client_execute_sync (qmp, "query-named-block-nodes",
                                                     qmp_args_new ("flat", qmp_bool (TRUE), NULL),
                                                     cancellable, error);

  if (ret == NULL)
    return NULL;
  return qmp_parse_list (ret, (QmpParseFunc) qmp_block_node_info_parse,
                         (GDestroyNotify) qmp_block_node_info_free);
}

void
qmp_query_named_block_nodes_async (QmpClient *qmp, GCancellable *cancellable,
                                   GAsyncReadyCallback callback, gpointer user_data)
{
  qmp_client_execute_async (qmp, "query-named-block-nodes",
                            qmp_args_new ("flat", qmp_bool (TRUE), NULL), -1, 0, cancellable,
                            callback, user_data);
}

GPtrArray *
qmp_query_named_block_nodes_finish (QmpClient *qmp, GAsyncResult *result, GError **error)
{
  g_autoptr(JsonNode) ret = qmp_client_execute_finish (qmp, result, error);

  if (ret == NULL)
    return NULL;
  return qmp_parse_list (ret, (QmpParseFunc) qmp_block_node_info_parse,
                         (GDestroyNotify) qmp_block_node_info_free);
}

/* ---- block jobs ------------------------------------------------------------ */

gboolean
qmp_blockdev_mirror (QmpClient *qmp, const QmpBlockdevMirror *args, GCancellable *cancellable,
                     GError **error)
{
  return qmp_run (qmp, "blockdev-mirror",
                  qmp_args_new ("job-id", qmp_str (args->job_id),
                                "device", qmp_str (args->device),
                                "target", qmp_str (args->target),
                                "sync", qmp_str (args->sync),
                                "speed", args->speed > 0 ? qmp_int (args->speed) : NULL,
                                "buf-size", args->buf_size > 0 ? qmp_int (args->buf_size) : NULL,
                                "granularity", args->granularity > 0
                                  ? qmp_int (args->granularity) : NULL,
                                "copy-mode", qmp_opt_str (args->copy_mode),
                                "filter-node-name", qmp_opt_str (args->filter_node),
                                "auto-dismiss", qmp_bool (args->auto_dismiss), NULL),
                  cancellable, error);
}

gboolean
qmp_block_commit (QmpClient *qmp, const QmpBlockCommit *args, GCancellable *cancellable,
                  GError **error)
{
  return qmp_run (qmp, "block-commit",
                  qmp_args_new ("job-id", qmp_str (args->job_id),
                                "device", qmp_str (args->device),
                                "base-node", qmp_str (args->base_node),
                                "top-node", qmp_opt_str (args->top_node),
                                "speed", args->speed > 0 ? qmp_int (args->speed) : NULL,
                                "auto-dismiss", qmp_bool (FALSE), NULL),
                  cancellable, error);
}

gboolean
qmp_transaction_blockdev_snapshot (QmpClient *qmp, const char *const *nodes,
                                   const char *const *overlays, GCancellable *cancellable,
                                   GError **error)
{
  JsonArray *actions = json_array_new ();

  for (guint i = 0; nodes[i] != NULL && overlays[i] != NULL; i++)
    json_array_add_element (actions,
                            qmp_args_new ("type", qmp_str ("blockdev-snapshot"),
                                          "data", qmp_args_new ("node", qmp_str (nodes[i]),
                                                                "overlay", qmp_str (overlays[i]),
                                                                NULL), NULL));
  return qmp_run (qmp, "transaction", qmp_args_new ("actions", qmp_array_node (actions), NULL),
                  cancellable, error);
}

static JsonNode *
qmp_bitmap_add_actions (const char *const *nodes, const char *name, gint64 granularity)
{
  JsonArray *actions = json_array_new ();

  for (guint i = 0; nodes != NULL && nodes[i] != NULL; i++)
    json_array_add_element (actions,
                            qmp_args_new ("type", qmp_str ("block-dirty-bitmap-add"),
                                          "data", qmp_args_new ("node", qmp_str (nodes[i]),
                                                                "name", qmp_str (name),
                                                                "granularity", granularity > 0
                                                                  ? qmp_int (granularity) : NULL,
                                                                NULL), NULL));
  return qmp_args_new ("actions", qmp_array_node (actions), NULL);
}

gboolean
qmp_transaction_bitmap_add (QmpClient *qmp, const char *const *nodes, const char *name,
                            gint64 granularity, GCancellable *cancellable, GError **error)
{
  return qmp_run (qmp, "transaction", qmp_bitmap_add_actions (nodes, name, granularity),
                  cancellable, error);
}

void
qmp_transaction_bitmap_add_async (QmpClient *qmp, const char *const *nodes, const char *name,
                                  gint64 granularity, GCancellable *cancellable,
                                  GAsyncReadyCallback callback, gpointer user_data)
{
  qmp_client_execute_async (qmp, "transaction", qmp_bitmap_add_actions (nodes, name, granularity),
                            -1, 0, cancellable, callback, user_data);
}

gboolean
qmp_transaction_bitmap_add_finish (QmpClient *qmp, GAsyncResult *result, GError **error)
{
  return qmp_run_finish (qmp, result, error);
}

gboolean
qmp_block_dirty_bitmap_remove (QmpClient *qmp, const char *node, const char *name,
                               GCancellable *cancellable, GError **error)
{
  return qmp_run (qmp, "block-dirty-bitmap-remove",
                  qmp_args_new ("node", qmp_str (node), "name", qmp_str (name), NULL),
                  cancellable, error);
}

static JsonNode *
qmp_action (const char *type, JsonNode *data)
{
  return qmp_args_new ("type", qmp_str (type), "data", data, NULL);
}

gboolean
qmp_transaction_backup_bitmap (QmpClient *qmp, const char *const *devices,
                               const char *const *targets, const char *const *jobs,
                               const char *bitmap, const char *next, GCancellable *cancellable,
                               GError **error)
{
  JsonArray *actions = json_array_new ();

  for (guint i = 0; devices[i] != NULL; i++)
    {
      if (next != NULL)
        json_array_add_element (actions, qmp_action ("block-dirty-bitmap-add",
                                                     qmp_args_new ("node", qmp_str (devices[i]),
                                                                   "name", qmp_str (next),
                                                                   NULL)));
      json_array_add_element (actions, qmp_action ("blockdev-backup",
                                                   qmp_args_new ("job-id", qmp_str (jobs[i]),
                                                                 "device", qmp_str (devices[i]),
                                                                 "target", qmp_str (targets[i]),
                                                                 "sync", qmp_str ("bitmap"),
                                                                 "bitmap", qmp_str (bitmap),
                                                                 "bitmap-mode", qmp_str ("never"),
                                                                 "auto-dismiss", qmp_bool (FALSE),
                                                                 NULL)));
    }
  return qmp_run (qmp, "transaction", qmp_args_new ("actions", qmp_array_node (actions), NULL),
                  cancellable, error);
}

gboolean
qmp_job_complete (QmpClient *qmp, const char *id, GCancellable *cancellable, GError **error)
{
  /* job-complete (QEMU 3.0) does the same; QEMU 10.1 deprecates block-job-complete */
  return qmp_run (qmp, "job-complete", qmp_args_new ("id", qmp_str (id), NULL),
                  cancellable, error);
}

gboolean
qmp_block_job_cancel (QmpClient *qmp, const char *device, gboolean force,
                      GCancellable *cancellable, GError **error)
{
  return qmp_run (qmp, "block-job-cancel",
                  qmp_args_new ("device", qmp_str (device), "force", qmp_bool (force), NULL),
                  cancellable, error);
}

gboolean
qmp_block_job_set_speed (QmpClient *qmp, const char *id, gint64 speed,
                         GCancellable *cancellable, GError **error)
{
  return qmp_run (qmp, "block-job-set-speed",
                  qmp_args_new ("device", qmp_str (id), "speed", qmp_int (speed), NULL),
                  cancellable, error);
}

void
qmp_block_job_change_copy_mode_async (QmpClient *qmp, const char *id, const char *copy_mode,
                                      GCancellable *cancellable, GAsyncReadyCallback callback,
                                      gpointer user_data)
{
  qmp_client_execute_async (qmp, "block-job-change",
                            qmp_args_new ("id", qmp_str (id), "type", qmp_str ("mirror"),
                                          "copy-mode", qmp_str (copy_mode), NULL),
                            -1, 0, cancellable, callback, user_data);
}

gboolean
qmp_block_job_change_copy_mode_finish (QmpClient *qmp, GAsyncResult *result, GError **error)
{
  return qmp_run_finish (qmp, result, error);
}

gboolean
qmp_job_dismiss (QmpClient *qmp, const char *id, GCancellable *cancellable, GError **error)
{
  return qmp_run (qmp, "job-dismiss", qmp_args_new ("id", qmp_str (id), NULL),
                  cancellable, error);
}

void
qmp_job_dismiss_async (QmpClient *qmp, const char *id, GCancellable *cancellable,
                       GAsyncReadyCallback callback, gpointer user_data)
{
  qmp_client_execute_async (qmp, "job-dismiss", qmp_args_new ("id", qmp_str (id), NULL),
                            -1, 0, cancellable, callback, user_data);
}

gboolean
qmp_job_dismiss_finish (QmpClient *qmp, GAsyncResult *result, GError **error)
{
  return qmp_run_finish (qmp, result, error);
}

void
qmp_block_job_info_free (QmpBlockJobInfo *info)
{
  if (info == NULL)
    return;
  g_free (info->device);
  g_free (info->type);
  g_free (info->status);
  g_free (info);
}

static QmpBlockJobInfo *
qmp_block_job_info_parse (JsonObject *obj)
{
  QmpBlockJobInfo *info = g_new0 (QmpBlockJobInfo, 1);

  info->device = qmp_dup (obj, "device");
  info->type = qmp_dup (obj, "type");
  info->status = qmp_dup (obj, "status");
  info->offset = qmp_member_int (obj, "offset", -1);
  info->len = qmp_member_int (obj, "len", -1);
  info->speed = qmp_member_int (obj, "speed", 0);
  return info;
}

static GPtrArray *
qmp_block_jobs_parse (JsonNode *ret)
{
  if (ret == NULL)
    return NULL;
  return qmp_parse_list (ret, (QmpParseFunc) qmp_block_job_info_parse,
                         (GDestroyNotify) qmp_block_job_info_free);
}

GPtrArray *
qmp_query_block_jobs (QmpClient *qmp, GCancellable *cancellable, GError **error)
{
  g_autoptr(JsonNode) ret = qmp_client_execute_sync (qmp, "query-block-jobs", NULL,
                                                     cancellable, error);

  return qmp_block_jobs_parse (ret);
}

void
qmp_query_block_jobs_async (QmpClient *qmp, GCancellable *cancellable,
                            GAsyncReadyCallback callback, gpointer user_data)
{
  qmp_client_execute_async (qmp, "query-block-jobs", NULL, -1, 0, cancellable, callback,
                            user_data);
}

GPtrArray *
qmp_query_block_jobs_finish (QmpClient *qmp, GAsyncResult *result, GError **error)
{
  g_autoptr(JsonNode) ret = qmp_client_execute_finish (qmp, result, error);

  return qmp_block_jobs_parse (ret);
}

/* ---- NBD server and exports ------------------------------------------------ */

gboolean
qmp_nbd_server_start (QmpClient *qmp, const QmpNbdServer *args, GCancellable *cancellable,
                      GError **error)
{
  gboolean handshake = qmp_client_has_argument (qmp, "nbd-server-start", "handshake-max-seconds");

  return qmp_run (qmp, "nbd-server-start",
                  qmp_args_new ("addr", qmp_address_legacy (&args->addr),
                                "tls-creds", qmp_opt_str (args->tls_creds),
                                "tls-authz", qmp_opt_str (args->tls_authz),
                                "max-connections", qmp_int (args->max_connections),
                                "handshake-max-seconds", handshake
                                  ? qmp_int (args->handshake_max_seconds) : NULL,
                                NULL),
                  cancellable, error);
}

gboolean
qmp_nbd_server_stop (QmpClient *qmp, GCancellable *cancellable, GError **error)
{
  return qmp_run (qmp, "nbd-server-stop", NULL, cancellable, error);
}

gboolean
qmp_nbd_server_add (QmpClient *qmp, const char *device, const char *name, gboolean writable,
                    GCancellable *cancellable, GError **error)
{
  return qmp_run (qmp, "nbd-server-add",
                  qmp_args_new ("device", qmp_str (device), "name", qmp_str (name),
                                "writable", qmp_bool (writable), NULL),
                  cancellable, error);
}

gboolean
qmp_nbd_server_remove (QmpClient *qmp, const char *name, gboolean hard,
                       GCancellable *cancellable, GError **error)
{
  return qmp_run (qmp, "nbd-server-remove",
                  qmp_args_new ("name", qmp_str (name),
                                "mode", qmp_str (hard ? "hard" : "safe"), NULL),
                  cancellable, error);
}

gboolean
qmp_block_export_add_nbd (QmpClient *qmp, const char *id, const char *node_name,
                          const char *name, gboolean writable, GCancellable *cancellable,
                          GError **error)
{
  return qmp_run (qmp, "block-export-add",
                  qmp_args_new ("type", qmp_str ("nbd"), "id", qmp_str (id),
                                "node-name", qmp_str (node_name),
                                "name", qmp_str (name),
                                "writable", qmp_bool (writable), NULL),
                  cancellable, error);
}

gboolean
qmp_block_export_del (QmpClient *qmp, const char *id, gboolean hard,
                      GCancellable *cancellable, GError **error)
{
  return qmp_run (qmp, "block-export-del",
                  qmp_args_new ("id", qmp_str (id),
                                "mode", qmp_str (hard ? "hard" : "safe"), NULL),
                  cancellable, error);
}

GStrv
qmp_query_block_exports (QmpClient *qmp, GCancellable *cancellable, GError **error)
{
  g_autoptr(GStrvBuilder) ids = g_strv_builder_new ();
  g_autoptr(JsonNode) ret = qmp_client_execute_sync (qmp, "query-block-exports", NULL,
                                                     cancellable, error);
  JsonArray *list = qmp_node_array (ret);

  if (ret == NULL)
    return NULL;
  for (guint i = 0; i < qmp_array_length (list); i++)
    g_strv_builder_add (ids, qmp_member_string_or (qmp_array_object (list, i), "id", ""));
  return g_strv_builder_end (ids);
}

/* ---- migration ------------------------------------------------------------- */

gboolean
qmp_migrate_set_capabilities (QmpClient *qmp, const char *const *caps,
                              GCancellable *cancellable, GError **error)
{
  JsonArray *list = json_array_new ();

  for (gsize i = 0; caps[i] != NULL; i++)
    json_array_add_element (list, qmp_args_new ("capability", qmp_str (caps[i]),
                                                 "state", qmp_bool (TRUE), NULL));
  return qmp_run (qmp, "migrate-set-capabilities",
                  qmp_args_new ("capabilities", qmp_array_node (list), NULL),
                  cancellable, error);
}

gboolean
qmp_migrate_set_parameters (QmpClient *qmp, const QmpMigrateParameters *params,
                            GCancellable *cancellable, GError **error)
{
  return qmp_run (qmp, "migrate-set-parameters",
                  qmp_args_new ("tls-creds", qmp_opt_str (params->tls_creds),
                                "tls-hostname", qmp_opt_str (params->tls_hostname),
                                "tls-authz", qmp_opt_str (params->tls_authz),
                                "max-bandwidth", params->max_bandwidth > 0
                                                 ? qmp_int (params->max_bandwidth) : NULL,
                                NULL),
                  cancellable, error);
}

void
qmp_migrate_parameters_info_free (QmpMigrateParametersInfo *info)
{
  if (info == NULL)
    return;
  g_free (info->tls_creds);
  g_free (info->tls_hostname);
  g_free (info->tls_authz);
  g_free (info);
}

QmpMigrateParametersInfo *
qmp_query_migrate_parameters (QmpClient *qmp, GCancellable *cancellable, GError **error)
{
  g_autoptr(JsonNode) ret = NULL;
  JsonObject *obj;
  QmpMigrateParametersInfo *info;

  if (!qmp_client_has_command (qmp, "query-migrate-parameters"))
    {
      info = g_new0 (QmpMigrateParametersInfo, 1);
      info->max_bandwidth = -1;
      return info;
    }
  ret = qmp_client_execute_sync (qmp, "query-migrate-parameters", NULL, cancellable, error);
  obj = qmp_node_object (ret);
  if (ret == NULL)
    return NULL;
  info = g_new0 (QmpMigrateParametersInfo, 1);
  info->tls_creds = qmp_dup (obj, "tls-creds");
  info->tls_hostname = qmp_dup (obj, "tls-hostname");
  info->tls_authz = qmp_dup (obj, "tls-authz");
  info->max_bandwidth = qmp_member_int (obj, "max-bandwidth", -1);
  return info;
}

void
qmp_migrate_info_free (QmpMigrateInfo *info)
{
  if (info == NULL)
    return;
  g_free (info->status);
  g_free (info->error_desc);
  g_free (info);
}

QmpMigrateInfo *
qmp_query_migrate (QmpClient *qmp, GCancellable *cancellable, GError **error)
{
  g_autoptr(JsonNode) ret = qmp_client_execute_sync (qmp, "query-migrate", NULL, cancellable,
                                                     error);
  JsonObject *obj = qmp_node_object (ret);
  JsonObject *ram = qmp_member_object (obj, "ram");
  QmpMigrateInfo *info;

  if (ret == NULL)
    return NULL;
  info = g_new0 (QmpMigrateInfo, 1);
  info->status = qmp_dup (obj, "status");
  info->error_desc = qmp_dup (obj, "error-desc");
  info->transferred = qmp_member_int (ram, "transferred", -1);
  info->remaining = qmp_member_int (ram, "remaining", -1);
  info->downtime = qmp_member_int (obj, "downtime", -1);
  return info;
}

gboolean
qmp_migrate (QmpClient *qmp, const char *uri, GCancellable *cancellable, GError **error)
{
  return qmp_run (qmp, "migrate", qmp_args_new ("uri", qmp_str (uri), NULL), cancellable,
                  error);
}

gboolean
qmp_migrate_incoming (QmpClient *qmp, const char *uri, GCancellable *cancellable,
                      GError **error)
{
  return qmp_run (qmp, "migrate-incoming", qmp_args_new ("uri", qmp_str (uri), NULL),
                  cancellable, error);
}

gboolean
qmp_migrate_continue (QmpClient *qmp, const char *state, GCancellable *cancellable,
                      GError **error)
{
  return qmp_run (qmp, "migrate-continue", qmp_args_new ("state", qmp_str (state), NULL),
                  cancellable, error);
}

gboolean
qmp_migrate_cancel (QmpClient *qmp, GCancellable *cancellable, GError **error)
{
  return qmp_run (qmp, "migrate_cancel", NULL, cancellable, error);
}
