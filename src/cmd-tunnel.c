/* blkmig tunnel-endpoint: the far end of --tunnel, next to the destination's NBD server. */
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/error.h"
#include "nbd/nbd-server.h"
#include "nbd/tunnel.h"
#include "src/commands.h"
#include "src/session.h"
#include "src/transport.h"

static void
tunnel_print_port (guint16 port)
{
  /* scripts read the port the system picked from our first line */
  printf ("%u\n", port);
  fflush (stdout);
}

/* Under inetd or systemd (Accept=yes) stdin is the accepted TCP connection: its
 * local address, as if it were --listen's; NULL for pipes and UNIX sockets. */
static char *
tunnel_stdin_tcp_host (void)
{
  struct sockaddr_storage native;
  socklen_t len = sizeof native;
  g_autoptr(GSocketAddress) addr = NULL;
  g_autofree char *host = NULL;

  if (getsockname (STDIN_FILENO, (struct sockaddr *) &native, &len) != 0
      || (native.ss_family != AF_INET && native.ss_family != AF_INET6))
    return NULL;
  addr = g_socket_address_new_from_native (&native, len);
  if (addr == NULL)
    return NULL;
  host = g_inet_address_to_string (
      g_inet_socket_address_get_address (G_INET_SOCKET_ADDRESS (addr)));
  if (g_str_has_prefix (host, "::ffff:") && strchr (host, '.') != NULL)
    return g_strdup (host + strlen ("::ffff:"));  /* IPv4 on a dual-stack socket */
  return g_steal_pointer (&host);
}

/* The NBD plaintext rule for --listen (or a TCP stdin): TLS, loopback, or --insecure. */
static gboolean
tunnel_check_options (const char *listen, const char *tls_dir, char **tls_authz,
                      gboolean insecure, GError **error)
{
  g_auto(NbdEndpoint) ep = { 0 };

  if (tls_authz != NULL && tls_dir == NULL)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "--tls-authz needs --tls-creds"), FALSE;
  if (listen == NULL)
    ep.host = tunnel_stdin_tcp_host ();
  else if (!nbd_endpoint_parse (listen, &ep, error))
    return FALSE;
  return session_check_plaintext (ep.host, tls_dir != NULL, insecure, error);
}

static GIOStream *
tunnel_open_stream (const char *listen, const char *tls_dir, char **tls_authz,
                    GCancellable *cancellable, GError **error)
{
  g_autoptr(GIOStream) stdio = NULL;

  if (listen != NULL)
    return transport_accept (listen, tls_dir, (const char *const *) tls_authz, tunnel_print_port,
                             cancellable, error);
  stdio = transport_stdio ();
  if (tls_dir == NULL)
    return g_steal_pointer (&stdio);
  return transport_tls_server (stdio, tls_dir, (const char *const *) tls_authz, cancellable,
                               error);
}

gboolean
cmd_tunnel_endpoint (int argc, char **argv, GCancellable *cancellable, GError **error)
{
  g_autofree char *nbd_socket = NULL;
  g_autofree char *listen = NULL;
  g_autofree char *tls_dir = NULL;
  g_auto(GStrv) tls_authz = NULL;
  gboolean insecure = FALSE;
  g_autofree char *compress = NULL;
  TunnelCompress mode = TUNNEL_COMPRESS_AUTO;
  const GOptionEntry entries[] = {
    { "nbd-socket", 0, 0, G_OPTION_ARG_FILENAME, &nbd_socket,
      "The destination QEMU's NBD server (a UNIX socket)", "PATH" },
    { "listen", 'l', 0, G_OPTION_ARG_STRING, &listen,
      "Accept the stream on tcp:HOST:PORT (port 0: any, printed on stdout) instead of "
      "using stdin/stdout; clients that fail TLS or --tls-authz are dropped and the next "
      "one is awaited", "ADDR" },
    { "tls-creds", 0, 0, G_OPTION_ARG_FILENAME, &tls_dir,
      "TLS with DIR's ca-cert.pem, server-cert.pem and server-key.pem (also over stdin/stdout, "
      "e.g. under systemd); the source must present a certificate the CA signed", "DIR" },
    COMMAND_TLS_AUTHZ_ENTRY (&tls_authz),
    { "insecure", 0, 0, G_OPTION_ARG_NONE, &insecure,
      "Allow --listen on a non-loopback address (or such a TCP connection as stdin) "
      "without --tls-creds; the first client to connect gets the stream", NULL },
    COMMAND_TUNNEL_COMPRESS_ENTRY (&compress),
    G_OPTION_ENTRY_NULL
  };
  g_autoptr(GIOStream) stream = NULL;
  g_autoptr(Tunnel) tunnel = NULL;

  if (!command_parse (&argc, &argv, "", "Carry the NBD connections of a --tunnel to the "
                      "destination's NBD server; ends when the stream ends.", entries, error)
      || !command_require ("--nbd-socket", nbd_socket, error)
      || !tunnel_check_options (listen, tls_dir, tls_authz, insecure, error)
      || (compress != NULL && !tunnel_compress_parse (compress, &mode, error)))
    return FALSE;
  stream = tunnel_open_stream (listen, tls_dir, tls_authz, cancellable, error);
  if (stream == NULL)
    return FALSE;
  tunnel = tunnel_new_connector (stream, nbd_socket);
  tunnel_set_compress (tunnel, mode);
  return tunnel_run (tunnel, cancellable, error);
}
