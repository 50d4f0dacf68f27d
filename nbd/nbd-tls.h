/* TLS for QEMU's NBD traffic: x509 credentials and client-DN authorization objects. */
#pragma once

#include "qmp/qmp-client.h"

/* object-add tls-creds-x509 from DIR (ca-cert.pem, server-*.pem or client-*.pem);
 * the peer's certificate is always verified. */
gboolean nbd_tls_add_creds (QmpClient *qmp, const char *id, gboolean server, const char *dir,
                            GCancellable *cancellable, GError **error);
/* object-add authz-list allowing exactly the client certificate DNs in @dns. */
gboolean nbd_tls_add_authz (QmpClient *qmp, const char *id, const char *const *dns,
                            GCancellable *cancellable, GError **error);
/* object-del, quietly: for cleanup paths. */
void nbd_tls_del (QmpClient *qmp, const char *id);
/* Whether @host is a loopback address (127.0.0.0/8, ::1, localhost). */
gboolean nbd_host_is_loopback (const char *host);
