/* blkmig tunnel-endpoint: the far end of --tunnel, next to the destination's NBD server. */
#include <stdio.h>

#include "common/error.h"
#include "nbd/tunnel.h"
#include "src/commands.h"
#include "src/transport.h"

static void
tunnel_print_port (guint16 port)
{
  /* scripts read the port the system picked from our first line */
  printf ("%u\n", port);
  fflush (stdout);
}

gboolean
cmd_tunnel_endpoint (int argc, char **argv, GCancellable *cancellable, GError **error)
{
  g_autofree char *nbd_socket = NULL;
  g_autofree char *listen = NULL;
  g_autofree char *tls_dir = NULL;
  const GOptionEntry entries[] = {
    { "nbd-socket", 0, 0, G_OPTION_ARG_FILENAME, &nbd_socket,
      "The destination QEMU's NBD server (a UNIX socket)", "PATH" },
    { "listen", 'l', 0, G_OPTION_ARG_STRING, &listen,
      "Accept the stream on tcp:HOST:PORT (port 0: any, printed on stdout) instead of "
      "using stdin/stdout", "ADDR" },
    { "tls-creds", 0, 0, G_OPTION_ARG_FILENAME, &tls_dir,
      "TLS with DIR's ca-cert.pem, server-cert.pem and server-key.pem (also over stdin/stdout, "
      "e.g. under systemd); the source must present a certificate the CA signed", "DIR" },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr(GIOStream) stream = NULL;
  g_autoptr(Tunnel) tunnel = NULL;

  if (!command_parse (&argc, &argv, "", "Carry the NBD connections of a --tunnel to the "
                      "destination's NBD server; ends when the stream ends.", entries, error)
      || !command_require ("--nbd-socket", nbd_socket, error))
    return FALSE;
  if (listen != NULL)
    stream = transport_accept (listen, tls_dir, tunnel_print_port, cancellable, error);
  else if (tls_dir != NULL)
    {
      g_autoptr(GIOStream) stdio = transport_stdio ();
      stream = transport_tls_server (stdio, tls_dir, cancellable, error);
    }
  else
    stream = transport_stdio ();
  if (stream == NULL)
    return FALSE;
  tunnel = tunnel_new_connector (stream, nbd_socket);
  return tunnel_run (tunnel, cancellable, error);
}
