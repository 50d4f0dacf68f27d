/* Byte streams for the tunnel: a TCP connection, a command's stdin/stdout, our own stdio. */
#pragma once

#include <gio/gio.h>

/* "tcp:HOST:PORT" → a connected stream.  With @tls_dir (ca-cert.pem,
 * client-cert.pem, client-key.pem) it is TLS, the server's certificate checked
 * against the CA and against @tls_hostname (default HOST). */
GIOStream *transport_connect (const char *spec, const char *tls_dir, const char *tls_hostname,
                              GCancellable *cancellable, GError **error);
/* Accepts one connection on "tcp:HOST:PORT" (port 0: any; @on_listening gets the
 * real port before the wait).  With @tls_dir (ca-cert.pem, server-cert.pem,
 * server-key.pem) the client must present a certificate the CA signed and, with
 * @authz, whose subject DN is listed; clients that fail (or take over 10 s) are
 * dropped and the wait goes on, so nobody uses up the endpoint by connecting
 * first.  Without @tls_dir the first client wins. */
GIOStream *transport_accept (const char *spec, const char *tls_dir, const char *const *authz,
                             void (*on_listening) (guint16 port),
                             GCancellable *cancellable, GError **error);
/* The program @argv (no shell) with its stdin and stdout as the stream. */
GIOStream *transport_spawn (const char *const *argv, GSubprocess **proc, GError **error);
/* This process's stdin and stdout. */
GIOStream *transport_stdio (void);
/* The server side of TLS over any stream (e.g. stdio under systemd's Accept=yes),
 * the client checked as by transport_accept. */
GIOStream *transport_tls_server (GIOStream *base, const char *tls_dir, const char *const *authz,
                                 GCancellable *cancellable, GError **error);
