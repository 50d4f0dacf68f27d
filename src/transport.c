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

static GTlsDatabase *
transport_ca (const char *dir, GError **error)
{
  g_autofree char *ca = g_build_filename (dir, "ca-cert.pem", NULL);

  return g_tls_file_database_new (ca, error);
}

static GTlsCertificate *
transport_cert (const char *dir, const char *role, GError **error)
{
  g_autofree char *cert_name = g_strdup_printf ("%s-cert.pem", role);
  g_autofree char *key_name = g_strdup_printf ("%s-key.pem", role);
  g_autofree char *cert = g_build_filename (dir, cert_name, NULL);
  g_autofree char *key = g_build_filename (dir, key_name, NULL);

  return g_tls_certificate_new_from_files (cert, key, error);
}

static GIOStream *
transport_handshake (GTlsConnection *tls, GCancellable *cancellable, GError **error)
{
  g_autoptr(GAsyncResult) result = NULL;

  g_tls_connection_handshake_async (tls, G_PRIORITY_DEFAULT, cancellable,
                                    blkmig_store_result_cb, &result);
  if (!g_tls_connection_handshake_finish (tls, blkmig_await (&result), error))
    return g_prefix_error (error, "tunnel: TLS handshake failed: "), NULL;
  return G_IO_STREAM (g_object_ref (tls));
}

static GIOStream *
transport_tls_client (GIOStream *base, const char *dir, const char *host,
                      GCancellable *cancellable, GError **error)
{
  g_autoptr(GSocketConnectable) identity = g_network_address_new (host, 0);
  g_autoptr(GTlsDatabase) ca = transport_ca (dir, error);
  g_autoptr(GTlsCertificate) cert = ca != NULL ? transport_cert (dir, "client", error) : NULL;
  g_autoptr(GIOStream) tls = NULL;

  if (cert == NULL)
    return g_prefix_error (error, "tunnel: %s: ", dir), NULL;
  tls = g_tls_client_connection_new (base, identity, error);
  if (tls == NULL)
    return NULL;
  g_tls_connection_set_database (G_TLS_CONNECTION (tls), ca);
  g_tls_connection_set_certificate (G_TLS_CONNECTION (tls), cert);
  return transport_handshake (G_TLS_CONNECTION (tls), cancellable, error);
}

/* A GIO TLS server asks about every client certificate; @errors holds what the
 * check against our CA found.  Accept exactly the ones that passed it. */
static gboolean
transport_accept_client_cb (GTlsConnection *tls, GTlsCertificate *cert,
                            GTlsCertificateFlags errors, gpointer user_data)
{
  return errors == 0;
}

GIOStream *
transport_tls_server (GIOStream *base, const char *dir, GCancellable *cancellable,
                      GError **error)
{
  g_autoptr(GTlsDatabase) ca = transport_ca (dir, error);
  g_autoptr(GTlsCertificate) cert = ca != NULL ? transport_cert (dir, "server", error) : NULL;
  g_autoptr(GIOStream) tls = NULL;

  if (cert == NULL)
    return g_prefix_error (error, "tunnel: %s: ", dir), NULL;
  tls = g_tls_server_connection_new (base, cert, error);
  if (tls == NULL)
    return NULL;
  g_tls_connection_set_database (G_TLS_CONNECTION (tls), ca);
  g_object_set (tls, "authentication-mode", G_TLS_AUTHENTICATION_REQUIRED, NULL);
  g_signal_connect (tls, "accept-certificate", G_CALLBACK (transport_accept_client_cb), NULL);
  return transport_handshake (G_TLS_CONNECTION (tls), cancellable, error);
}

GIOStream *
transport_connect (const char *spec, const char *tls_dir, const char *tls_hostname,
                   GCancellable *cancellable, GError **error)
{
  g_auto(NbdEndpoint) ep = { 0 };
  g_autoptr(GSocketClient) client = g_socket_client_new ();
  g_autoptr(GIOStream) base = NULL;
  GSocketConnection *conn;

  if (!transport_parse (spec, &ep, error))
    return NULL;
  conn = g_socket_client_connect_to_host (client, ep.host, ep.port, cancellable, error);
  if (conn == NULL)
    return g_prefix_error (error, "tunnel: cannot connect to %s: ", spec), NULL;
  g_socket_set_option (g_socket_connection_get_socket (conn), IPPROTO_TCP, TCP_NODELAY, 1, NULL);
  base = G_IO_STREAM (conn);
  if (tls_dir == NULL)
    return g_steal_pointer (&base);
  return transport_tls_client (base, tls_dir, tls_hostname != NULL ? tls_hostname : ep.host,
                               cancellable, error);
}

GIOStream *
transport_accept (const char *spec, const char *tls_dir, void (*on_listening) (guint16 port),
                  GCancellable *cancellable, GError **error)
{
  g_auto(NbdEndpoint) ep = { 0 };
  g_autoptr(GSocketListener) listener = g_socket_listener_new ();
  g_autoptr(GInetAddress) inet = NULL;
  g_autoptr(GSocketAddress) addr = NULL;
  g_autoptr(GSocketAddress) bound = NULL;
  g_autoptr(GAsyncResult) result = NULL;
  g_autoptr(GIOStream) conn = NULL;

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
  conn = G_IO_STREAM (g_socket_listener_accept_finish (listener, blkmig_await (&result), NULL,
                                                       error));
  if (conn == NULL || tls_dir == NULL)
    return g_steal_pointer (&conn);
  return transport_tls_server (conn, tls_dir, cancellable, error);
}

/* No shell: @argv is run as it is, so no word of it is ever interpreted. */
GIOStream *
transport_spawn (const char *const *argv, GSubprocess **proc, GError **error)
{
  *proc = g_subprocess_newv (argv, G_SUBPROCESS_FLAGS_STDIN_PIPE | G_SUBPROCESS_FLAGS_STDOUT_PIPE,
                             error);
  if (*proc == NULL)
    return g_prefix_error (error, "tunnel: cannot run %s: ", argv[0]), NULL;
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
