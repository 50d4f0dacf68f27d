/* TLS for QEMU's NBD traffic: x509 credentials and client-DN authorization objects. */
#include "nbd/nbd-tls.h"

#include "qmp/qmp-commands.h"

gboolean
nbd_tls_add_creds (QmpClient *qmp, const char *id, gboolean server, const char *dir,
                   GCancellable *cancellable, GError **error)
{
  return qmp_object_add_tls_creds_x509 (qmp, id, server, dir, cancellable, error);
}

gboolean
nbd_tls_add_authz (QmpClient *qmp, const char *id, const char *const *dns,
                   GCancellable *cancellable, GError **error)
{
  return qmp_object_add_authz_list (qmp, id, dns, cancellable, error);
}

void
nbd_tls_del (QmpClient *qmp, const char *id)
{
  if (qmp_client_get_state (qmp) == QMP_STATE_READY)
    qmp_object_del (qmp, id, NULL, NULL);
}

gboolean
nbd_host_is_loopback (const char *host)
{
  g_autoptr(GInetAddress) addr = g_inet_address_new_from_string (host);

  if (addr == NULL)
    return g_str_equal (host, "localhost");
  return g_inet_address_get_is_loopback (addr);
}
