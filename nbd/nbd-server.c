/* Destination side: QEMU's NBD server, writable exports, and their teardown. */
#include "nbd/nbd-server.h"

#include <gio/gunixsocketaddress.h>
#include <sys/stat.h>

#include "common/error.h"
#include "qmp/qmp-commands.h"
#include "qmp/qmp-wait.h"

#define NBD_EXPORT_DEL_TIMEOUT_MS (30 * 1000)
#define NBD_LISTEN_FD_NAME "blkmig-nbd-listen"
/* Who connects: one client per disk (a reconnect replaces it), --verify's reader,
 * or a tunnel-endpoint's channels (TUNNEL_MAX_CHANNELS, 64).  Explicit because
 * QEMU 9.1 changed the default (unlimited before, 100 since). */
#define NBD_SERVER_MAX_CONNECTIONS 128
/* QEMU 10.0 drops a client whose NBD handshake takes more than 10 s; through a
 * busy tunnel or a slow TLS handshake that can be too short. */
#define NBD_SERVER_HANDSHAKE_SECONDS 120

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
static gboolean
nbd_listen_fd_addr (QmpClient *qmp, NbdEndpoint *ep, GCancellable *cancellable,
                    GError **error)
{
  g_autoptr(GSocket) sock = nbd_bind (ep, error);

  return sock != NULL
         && qmp_getfd (qmp, NBD_LISTEN_FD_NAME, g_socket_get_fd (sock), cancellable, error);
}

static gboolean
nbd_server_addr (QmpClient *qmp, NbdEndpoint *ep, QmpSocketAddress *addr,
                 GCancellable *cancellable, GError **error)
{
  if (qmp_can_getfd (qmp))
    {
      *addr = (QmpSocketAddress) { .type = QMP_ADDRESS_FD, .fd_name = NBD_LISTEN_FD_NAME };
      return nbd_listen_fd_addr (qmp, ep, cancellable, error);
    }
  if (ep->unix_path == NULL && ep->port == 0)  /* e.g. qemu-storage-daemon */
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "%s has no getfd: give an explicit TCP port",
                        qmp_client_get_label (qmp)), FALSE;
  if (ep->unix_path != NULL)
    *addr = (QmpSocketAddress) { .type = QMP_ADDRESS_UNIX, .path = ep->unix_path };
  else
    *addr = (QmpSocketAddress) { .type = QMP_ADDRESS_INET, .host = ep->host, .port = ep->port };
  return TRUE;
}

gboolean
nbd_server_start (QmpClient *qmp, NbdEndpoint *ep, const char *tls_creds, const char *tls_authz,
                  GCancellable *cancellable, GError **error)
{
  QmpNbdServer args = {
    .tls_creds = tls_creds,
    .tls_authz = tls_authz,
    .max_connections = NBD_SERVER_MAX_CONNECTIONS,
    .handshake_max_seconds = NBD_SERVER_HANDSHAKE_SECONDS,
  };

  return nbd_server_addr (qmp, ep, &args.addr, cancellable, error)
         && qmp_nbd_server_start (qmp, &args, cancellable, error);
}

gboolean
nbd_export_add (QmpClient *qmp, const char *id, const char *node, const char *name,
                gboolean writable, GCancellable *cancellable, GError **error)
{
  if (qmp_can_block_export (qmp))
    return qmp_block_export_add_nbd (qmp, id, node, name, writable, cancellable, error);
  return qmp_nbd_server_add (qmp, node, name, writable, cancellable, error);
}

gboolean
nbd_export_del (QmpClient *qmp, const char *id, gboolean hard, GCancellable *cancellable,
                GError **error)
{
  const char *const ids[] = { id, NULL };
  g_autoptr(QmpEventWait) wait = NULL;
  g_autoptr(JsonObject) done = NULL;

  if (!qmp_can_block_export (qmp))
    return qmp_nbd_server_remove (qmp, id, hard, cancellable, error);
  wait = qmp_event_wait_new (qmp, "BLOCK_EXPORT_DELETED", "id", ids);
  if (!qmp_block_export_del (qmp, id, hard, cancellable, error))
    return FALSE;
  done = qmp_event_wait_sync (wait, NBD_EXPORT_DEL_TIMEOUT_MS, cancellable, error);
  return done != NULL;
}

gboolean
nbd_server_stop (QmpClient *qmp, GCancellable *cancellable, GError **error)
{
  return qmp_nbd_server_stop (qmp, cancellable, error);
}

GStrv
nbd_export_list (QmpClient *qmp, GCancellable *cancellable, GError **error)
{
  return qmp_query_block_exports (qmp, cancellable, error);
}
