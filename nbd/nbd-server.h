/* Destination side: QEMU's NBD server, writable exports, and their teardown. */
#pragma once

#include "qmp/qmp-client.h"

typedef struct {
  char *unix_path;   /* either a UNIX socket path ... */
  char *host;        /* ... or a TCP host and port (0 = let the system pick) */
  int port;
} NbdEndpoint;

void nbd_endpoint_clear (NbdEndpoint *ep);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (NbdEndpoint, nbd_endpoint_clear)
/* "unix:PATH" or "tcp:HOST:PORT" ([v6]:PORT allowed). */
gboolean nbd_endpoint_parse (const char *spec, NbdEndpoint *ep, GError **error);
/* "nbd+unix:///EXPORT?socket=PATH" or "nbd://HOST:PORT/EXPORT" */
char *nbd_endpoint_uri (const NbdEndpoint *ep, const char *export_name);

/* nbd-server-start.  A TCP port 0 is bound here and handed to QEMU with getfd;
 * ep->port then holds the real port. */
gboolean nbd_server_start (QmpClient *qmp, NbdEndpoint *ep, const char *tls_creds,
                           const char *tls_authz, GCancellable *cancellable, GError **error);
/* An export of @node named @name (block-export-add, or nbd-server-add where the
 * probe says block-export-add is missing). */
gboolean nbd_export_add (QmpClient *qmp, const char *id, const char *node, const char *name,
                         gboolean writable, GCancellable *cancellable, GError **error);
/* Removes the export and waits until QEMU reports it gone.  @hard drops clients. */
gboolean nbd_export_del (QmpClient *qmp, const char *id, gboolean hard,
                         GCancellable *cancellable, GError **error);
gboolean nbd_server_stop (QmpClient *qmp, GCancellable *cancellable, GError **error);
/* Names of the exports QEMU currently has (query-block-exports). */
GStrv nbd_export_list (QmpClient *qmp, GCancellable *cancellable, GError **error);
