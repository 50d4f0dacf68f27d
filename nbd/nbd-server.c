/* Destination side: QEMU's NBD server, writable exports, and their teardown. */
#include "nbd/nbd-server.h"

#include <gio/gunixsocketaddress.h>
#include <sys/stat.h>

#include "common/error.h"
#include "qmp/qmp-json.h"
#include "qmp/qmp-wait.h"

#define NBD_EXPORT_DEL_TIMEOUT_MS (30 * 1000)

void
nbd_endpoint_clear (NbdEndpoint *ep)
{
  g_clear_pointer (&ep->unix_path, g_free);
  g_clear_pointer (&ep->host, g_free);
  ep->port = 0;
}

static gboolean
nbd_endpoint_parse_tcp (const char *spec, NbdEndpoint *ep, GError **error)
{
  const char *colon = strrchr (spec, ':');
  g_autofree char *host = colon != NULL ? g_strndup (spec, colon - spec) : NULL;
  guint64 port = 0;

  if (host == NULL || *host == '\0'
      || !g_ascii_string_to_unsigned (colon + 1, 10, 0, 65535, &port, NULL))
    {
      g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                   "listen address tcp:%s: expected tcp:HOST:PORT with PORT 0-65535", spec);
      return FALSE;
    }
  if (host[0] == '[' && host[strlen (host) - 1] == ']')
    {
      char *inner = g_strndup (host + 1, strlen (host) - 2);
      g_free (host);
      host = inner;
    }
  ep->host = g_steal_pointer (&host);
  ep->port = port;
  return TRUE;
}

gboolean
nbd_endpoint_parse (const char *spec, NbdEndpoint *ep, GError **error)
{
  nbd_endpoint_clear (ep);
  if (g_str_has_prefix (spec, "unix:") && spec[5] != '\0')
    {
      ep->unix_path = g_strdup (spec + 5);
      return TRUE;
    }
  if (g_str_has_prefix (spec, "tcp:"))
    return nbd_endpoint_parse_tcp (spec + 4, ep, error);
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
               "listen address %s: expected unix:PATH or tcp:HOST:PORT", spec);
  return FALSE;
}

/* The export name and the socket path come from the peer's cookie: escaped, a
 * '?', '#', '&' or '%' in them cannot change which socket or export libnbd uses. */
char *
nbd_endpoint_uri (const NbdEndpoint *ep, const char *export_name)
{
  g_autofree char *name = g_uri_escape_string (export_name, NULL, FALSE);
  g_autofree char *socket = NULL;
  g_autofree char *host = NULL;

  if (ep->unix_path != NULL)
    {
      socket = g_uri_escape_string (ep->unix_path, "/", FALSE);
      return g_strdup_printf ("nbd+unix:///%s?socket=%s", name, socket);
    }
  host = g_uri_escape_string (ep->host, ":", FALSE);
  if (strchr (ep->host, ':') != NULL)
    return g_strdup_printf ("nbd://[%s]:%d/%s", host, ep->port, name);
  return g_strdup_printf ("nbd://%s:%d/%s", host, ep->port, name);
}

/* The listening socket, made here: a UNIX one is 0600 before anyone can connect,
 * and for TCP port 0 the system's choice is known at once. */
static GSocket *
nbd_bind (NbdEndpoint *ep, GError **error)
{
  g_autoptr(GInetAddress) inet = ep->host != NULL ? g_inet_address_new_from_string (ep->host) : NULL;
  g_autoptr(GSocketAddress) addr = NULL;
  g_autoptr(GSocketAddress) bound = NULL;
  g_autoptr(GSocket) sock = NULL;
  mode_t old_umask;
  gboolean ok;

  if (ep->unix_path == NULL && inet == NULL)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "listen address %s: needs a numeric IP address", ep->host), NULL;
  addr = ep->unix_path != NULL ? g_unix_socket_address_new (ep->unix_path)
                               : g_inet_socket_address_new (inet, ep->port);
  sock = g_socket_new (g_socket_address_get_family (addr), G_SOCKET_TYPE_STREAM,
                       G_SOCKET_PROTOCOL_DEFAULT, error);
  if (sock == NULL)
    return NULL;
  old_umask = umask (0177);
  ok = g_socket_bind (sock, addr, TRUE, error);
  umask (old_umask);
  if (!ok || !g_socket_listen (sock, error))
    return NULL;
  if (ep->unix_path == NULL && (bound = g_socket_get_local_address (sock, error)) == NULL)
    return NULL;
  if (bound != NULL)
    ep->port = g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (bound));
  return g_steal_pointer (&sock);
}

/* Hands QEMU a listening socket we made (getfd): QEMU needs no access to the path. */
static JsonNode *
nbd_listen_fd_addr (QmpClient *qmp, NbdEndpoint *ep, GCancellable *cancellable,
                    GError **error)
{
  g_autoptr(GSocket) sock = nbd_bind (ep, error);
  g_autoptr(JsonNode) ret = NULL;

  if (sock == NULL)
    return NULL;
  ret = qmp_client_execute_full_sync (qmp, "getfd",
                                      qmp_args_new ("fdname", qmp_str ("blkmig-nbd-listen"), NULL),
                                      g_socket_get_fd (sock), 0, cancellable, error);
  if (ret == NULL)
    return NULL;
  return qmp_json ("{\"type\":\"fd\",\"data\":{\"str\":\"blkmig-nbd-listen\"}}");
}

static JsonNode *
nbd_server_addr (QmpClient *qmp, NbdEndpoint *ep, GCancellable *cancellable, GError **error)
{
  g_autoptr(JsonNode) data = NULL;
  g_autofree char *port = g_strdup_printf ("%d", ep->port);

  if (qmp_client_has_command (qmp, "getfd"))
    return nbd_listen_fd_addr (qmp, ep, cancellable, error);
  if (ep->unix_path == NULL && ep->port == 0)  /* e.g. qemu-storage-daemon */
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "%s has no getfd: give an explicit TCP port",
                        qmp_client_get_label (qmp)), NULL;
  data = ep->unix_path != NULL ? qmp_args_new ("path", qmp_str (ep->unix_path), NULL)
                               : qmp_args_new ("host", qmp_str (ep->host), "port", qmp_str (port), NULL);
  return qmp_args_new ("type", qmp_str (ep->unix_path != NULL ? "unix" : "inet"),
                       "data", g_steal_pointer (&data), NULL);
}

gboolean
nbd_server_start (QmpClient *qmp, NbdEndpoint *ep, const char *tls_creds, const char *tls_authz,
                  GCancellable *cancellable, GError **error)
{
  JsonNode *addr = nbd_server_addr (qmp, ep, cancellable, error);
  g_autoptr(JsonNode) ret = NULL;

  if (addr == NULL)
    return FALSE;
  ret = qmp_client_execute_sync (qmp, "nbd-server-start",
                                 qmp_args_new ("addr", addr,
                                               "tls-creds", tls_creds != NULL ? qmp_str (tls_creds) : NULL,
                                               "tls-authz", tls_authz != NULL ? qmp_str (tls_authz) : NULL,
                                               NULL),
                                 cancellable, error);
  return ret != NULL;
}

gboolean
nbd_export_add (QmpClient *qmp, const char *id, const char *node, const char *name,
                gboolean writable, GCancellable *cancellable, GError **error)
{
  g_autoptr(JsonNode) ret = NULL;

  if (qmp_client_has_command (qmp, "block-export-add"))
    ret = qmp_client_execute_sync (qmp, "block-export-add",
                                   qmp_args_new ("type", qmp_str ("nbd"), "id", qmp_str (id),
                                                 "node-name", qmp_str (node),
                                                 "name", qmp_str (name),
                                                 "writable", qmp_bool (writable), NULL),
                                   cancellable, error);
  else
    ret = qmp_client_execute_sync (qmp, "nbd-server-add",
                                   qmp_args_new ("device", qmp_str (node),
                                                 "name", qmp_str (name),
                                                 "writable", qmp_bool (writable), NULL),
                                   cancellable, error);
  return ret != NULL;
}

gboolean
nbd_export_del (QmpClient *qmp, const char *id, gboolean hard, GCancellable *cancellable,
                GError **error)
{
  const char *const ids[] = { id, NULL };
  g_autoptr(QmpEventWait) wait = NULL;
  g_autoptr(JsonNode) ret = NULL;
  g_autoptr(JsonObject) done = NULL;

  if (!qmp_client_has_command (qmp, "block-export-del"))
    {
      ret = qmp_client_execute_sync (qmp, "nbd-server-remove",
                                     qmp_args_new ("name", qmp_str (id), "mode",
                                                   qmp_str (hard ? "hard" : "safe"), NULL),
                                     cancellable, error);
      return ret != NULL;
    }
  wait = qmp_event_wait_new (qmp, "BLOCK_EXPORT_DELETED", "id", ids);
  ret = qmp_client_execute_sync (qmp, "block-export-del",
                                 qmp_args_new ("id", qmp_str (id), "mode",
                                               qmp_str (hard ? "hard" : "safe"), NULL),
                                 cancellable, error);
  if (ret == NULL)
    return FALSE;
  done = qmp_event_wait_sync (wait, NBD_EXPORT_DEL_TIMEOUT_MS, cancellable, error);
  return done != NULL;
}

gboolean
nbd_server_stop (QmpClient *qmp, GCancellable *cancellable, GError **error)
{
  g_autoptr(JsonNode) ret = qmp_client_execute_sync (qmp, "nbd-server-stop", NULL,
                                                     cancellable, error);
  return ret != NULL;
}

GStrv
nbd_export_list (QmpClient *qmp, GCancellable *cancellable, GError **error)
{
  g_autoptr(GStrvBuilder) names = g_strv_builder_new ();
  g_autoptr(JsonNode) ret = qmp_client_execute_sync (qmp, "query-block-exports", NULL,
                                                     cancellable, error);
  JsonArray *list;

  if (ret == NULL)
    return NULL;
  list = qmp_node_array (ret);
  for (guint i = 0; i < qmp_array_length (list); i++)
    g_strv_builder_add (names, qmp_member_string_or (qmp_array_object (list, i), "id", ""));
  return g_strv_builder_end (names);
}
