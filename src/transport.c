/* Byte streams for the tunnel: a TCP connection, a command's stdin/stdout, our own stdio. */
#include "src/transport.h"

#include <gio/gunixinputstream.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <gio/gunixoutputstream.h>

#include "common/async.h"
#include "common/error.h"
#include "nbd/nbd-server.h"

static gboolean
transport_parse (const char *spec, NbdEndpoint *ep, GError **error)
{
  if (!nbd_endpoint_parse (spec, ep, error))
    return FALSE;
  if (ep->host != NULL)
    return TRUE;
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE, "tunnel address %s: expected tcp:HOST:PORT",
               spec);
  return FALSE;
}

GIOStream *
transport_connect (const char *spec, GCancellable *cancellable, GError **error)
{
  g_auto(NbdEndpoint) ep = { 0 };
  g_autoptr(GSocketClient) client = g_socket_client_new ();
  GSocketConnection *conn;

  if (!transport_parse (spec, &ep, error))
    return NULL;
  conn = g_socket_client_connect_to_host (client, ep.host, ep.port, cancellable, error);
  if (conn == NULL)
    return g_prefix_error (error, "tunnel: cannot connect to %s: ", spec), NULL;
  g_socket_set_option (g_socket_connection_get_socket (conn), IPPROTO_TCP, TCP_NODELAY, 1, NULL);
  return G_IO_STREAM (conn);
}

GIOStream *
transport_accept (const char *spec, void (*on_listening) (guint16 port),
                  GCancellable *cancellable, GError **error)
{
  g_auto(NbdEndpoint) ep = { 0 };
  g_autoptr(GSocketListener) listener = g_socket_listener_new ();
  g_autoptr(GInetAddress) inet = NULL;
  g_autoptr(GSocketAddress) addr = NULL;
  g_autoptr(GSocketAddress) bound = NULL;
  g_autoptr(GAsyncResult) result = NULL;

  if (!transport_parse (spec, &ep, error))
    return NULL;
  inet = g_inet_address_new_from_string (ep.host);
  if (inet == NULL)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "tunnel address %s: HOST must be a numeric IP address", spec), NULL;
  addr = g_inet_socket_address_new (inet, ep.port);
  if (!g_socket_listener_add_address (listener, addr, G_SOCKET_TYPE_STREAM,
                                      G_SOCKET_PROTOCOL_TCP, NULL, &bound, error))
    return g_prefix_error (error, "tunnel: cannot listen on %s: ", spec), NULL;
  if (on_listening != NULL)
    on_listening (g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (bound)));
  g_socket_listener_accept_async (listener, cancellable, blkmig_store_result_cb, &result);
  return G_IO_STREAM (g_socket_listener_accept_finish (listener, blkmig_await (&result), NULL,
                                                       error));
}

GIOStream *
transport_spawn (const char *command, GSubprocess **proc, GError **error)
{
  *proc = g_subprocess_new (G_SUBPROCESS_FLAGS_STDIN_PIPE | G_SUBPROCESS_FLAGS_STDOUT_PIPE, error,
                            "/bin/sh", "-c", command, NULL);
  if (*proc == NULL)
    return g_prefix_error (error, "tunnel: cannot run %s: ", command), NULL;
  return g_simple_io_stream_new (g_subprocess_get_stdout_pipe (*proc),
                                 g_subprocess_get_stdin_pipe (*proc));
}

GIOStream *
transport_stdio (void)
{
  g_autoptr(GInputStream) in = g_unix_input_stream_new (0, FALSE);
  g_autoptr(GOutputStream) out = g_unix_output_stream_new (1, FALSE);

  return g_simple_io_stream_new (in, out);
}
