/* TLS for QEMU's NBD traffic: x509 credentials and client-DN authorization objects. */
#include "nbd/nbd-tls.h"

gboolean
nbd_tls_add_creds (QmpClient *qmp, const char *id, gboolean server, const char *dir,
                   GCancellable *cancellable, GError **error)
{
  g_autoptr(JsonNode) ret = NULL;

  ret = qmp_client_execute_sync (qmp, "object-add",
                                 qmp_args_new ("qom-type", qmp_str ("tls-creds-x509"),
                                               "id", qmp_str (id),
                                               "endpoint", qmp_str (server ? "server" : "client"),
                                               "dir", qmp_str (dir),
                                               "verify-peer", qmp_bool (TRUE), NULL),
                                 cancellable, error);
  return ret != NULL;
}

gboolean
nbd_tls_add_authz (QmpClient *qmp, const char *id, const char *const *dns,
                   GCancellable *cancellable, GError **error)
{
  g_autoptr(JsonArray) rules = json_array_new ();
  JsonNode *rules_node = json_node_new (JSON_NODE_ARRAY);
  g_autoptr(JsonNode) ret = NULL;

  for (gsize i = 0; dns[i] != NULL; i++)
    json_array_add_element (rules, qmp_args_new ("match", qmp_str (dns[i]),
                                                 "policy", qmp_str ("allow"),
                                                 "format", qmp_str ("exact"), NULL));
  json_node_set_array (rules_node, rules);
  ret = qmp_client_execute_sync (qmp, "object-add",
                                 qmp_args_new ("qom-type", qmp_str ("authz-list"),
                                               "id", qmp_str (id),
                                               "policy", qmp_str ("deny"),
                                               "rules", rules_node, NULL),
                                 cancellable, error);
  return ret != NULL;
}

void
nbd_tls_del (QmpClient *qmp, const char *id)
{
  g_autoptr(JsonNode) ret = NULL;

  if (qmp_client_get_state (qmp) == QMP_STATE_READY)
    ret = qmp_client_execute_sync (qmp, "object-del", qmp_args_new ("id", qmp_str (id), NULL),
                                   NULL, NULL);
}

gboolean
nbd_host_is_loopback (const char *host)
{
  g_autoptr(GInetAddress) addr = g_inet_address_new_from_string (host);

  if (addr == NULL)
    return g_str_equal (host, "localhost");
  return g_inet_address_get_is_loopback (addr);
}
