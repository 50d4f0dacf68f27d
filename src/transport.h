/* Byte streams for the tunnel: a TCP connection, a command's stdin/stdout, our own stdio. */
#pragma once

#include <gio/gio.h>

/* "tcp:HOST:PORT" → a connected stream. */
GIOStream *transport_connect (const char *spec, GCancellable *cancellable, GError **error);
/* Accepts one connection on "tcp:HOST:PORT" (port 0: any; @on_listening gets the
 * real port before the wait). */
GIOStream *transport_accept (const char *spec, void (*on_listening) (guint16 port),
                             GCancellable *cancellable, GError **error);
/* `sh -c COMMAND` with its stdin and stdout as the stream. */
GIOStream *transport_spawn (const char *command, GSubprocess **proc, GError **error);
/* This process's stdin and stdout. */
GIOStream *transport_stdio (void);
