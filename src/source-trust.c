/* What the source takes from the destination's cookie, checked against its own options. */
#include "src/source-trust.h"

#include <stdarg.h>

#include "common/error.h"
#include "common/escape.h"
#include "nbd/nbd-tls.h"
#include "src/host-local.h"
#include "src/options.h"

/* A UNIX socket path's limit (sun_path less its NUL) bounds every peer path. */
#define PEER_PATH_MAX 107
/* A DNS name's limit bounds every peer host. */
#define PEER_HOST_MAX 253

void
source_plan_clear (SourcePlan *plan)
{
  g_clear_pointer (&plan->tunnel_argv, g_strfreev);
  g_clear_pointer (&plan->migrate_uri, g_free);
  g_clear_pointer (&plan->tls_hostname, g_free);
}

/* A BLKMIG_ERROR_COOKIE error "cookie: FIELD ..." with @value escaped. */
static gboolean G_GNUC_PRINTF (3, 4)
trust_fail (GError **error, const char *value, const char *fmt, ...)
{
  g_autofree char *shown = blkmig_escape (value);
  g_autofree char *message = NULL;
  va_list args;

  va_start (args, fmt);
  message = g_strdup_vprintf (fmt, args);
  va_end (args);
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_COOKIE, "cookie: %s: %s", message, shown);
  return FALSE;
}

static gboolean
trust_chars (const char *text, const char *extra)
{
  for (const char *p = text; *p != '\0'; p++)
    if (!g_ascii_isalnum (*p) && strchr (extra, *p) == NULL)
      return FALSE;
  return TRUE;
}

/* A path that may reach a command line (the tunnel's far end) or a socket: absolute,
 * only [A-Za-z0-9._/-], no "..", bounded.  No shell on either host can read more
 * into it, and it names one file. */
static gboolean
trust_peer_path (const char *field, const char *path, GError **error)
{
  if (path[0] == '/' && strlen (path) <= PEER_PATH_MAX && strstr (path, "..") == NULL
      && trust_chars (path, "._/-"))
    return TRUE;
  return trust_fail (error, path, "%s is not a plain absolute path", field);
}

/* A host name or IP address: [A-Za-z0-9.:_-], bounded. */
static gboolean
trust_peer_host (const char *field, const char *host, GError **error)
{
  if (*host != '\0' && strlen (host) <= PEER_HOST_MAX && trust_chars (host, ".:_-"))
    return TRUE;
  return trust_fail (error, host, "%s is not a host name or address", field);
}

static gboolean
trust_tunnelled (const SourceOptions *opts)
{
  return opts->tunnel_addr != NULL || opts->tunnel_command != NULL;
}

/* Where QEMU's NBD clients (or blkmig, --pass-fds and --verify) connect. */
static gboolean
trust_nbd_target (const Cookie *dest, const SourceOptions *opts, GError **error)
{
  if (dest->nbd_unix != NULL
      && !trust_peer_path ("destination.nbd.unix", dest->nbd_unix, error))
    return FALSE;
  if (dest->nbd_host != NULL
      && !trust_peer_host ("destination.nbd.host", dest->nbd_host, error))
    return FALSE;
  if (trust_tunnelled (opts))
    return TRUE;  /* the socket is the far end's business; the tunnel has its own rules */
  if (!opts->local_destination && dest->nbd_unix != NULL)
    return trust_fail (error, dest->nbd_unix, "destination.nbd.unix is a UNIX socket on this "
                       "host (pass --local-destination if the destination runs here)");
  if (!opts->local_destination && host_is_local (dest->nbd_host))
    return trust_fail (error, dest->nbd_host, "destination.nbd.host is this host (pass "
                       "--local-destination if the destination runs here)");
  return session_check_plaintext (dest->nbd_host, opts->tls_dir != NULL, opts->insecure,
                                  error);
}

/* The name the destination's certificate must carry: the operator's, or with a
 * local destination its loopback name.  Never a remote name from the cookie: the
 * peer would choose both the address and the name it is checked against. */
static gboolean
trust_tls_hostname (const Cookie *dest, const SourceOptions *opts, SourcePlan *plan,
                    GError **error)
{
  if (opts->tls_hostname != NULL || opts->tls_dir == NULL || trust_tunnelled (opts))
    return plan->tls_hostname = g_strdup (opts->tls_hostname), TRUE;
  if (dest->nbd_host == NULL)
    return plan->tls_hostname = g_strdup ("localhost"), TRUE;
  if (opts->local_destination && host_is_local (dest->nbd_host))
    return plan->tls_hostname = g_strdup (dest->nbd_host), TRUE;
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
               "--tls-creds needs --tls-hostname NAME, the name the destination's certificate "
               "carries (it is not taken from the destination's cookie)");
  return FALSE;
}

/* --tunnel-command is the operator's: split into words once, run without a shell.
 * {nbd-socket} may only be a whole word; it becomes a checked plain path. */
static gboolean
trust_tunnel_argv (const Cookie *dest, const SourceOptions *opts, SourcePlan *plan,
                   GError **error)
{
  g_autoptr(GError) local_error = NULL;

  if (opts->tunnel_command == NULL)
    return TRUE;
  if (!g_shell_parse_argv (opts->tunnel_command, NULL, &plan->tunnel_argv, &local_error))
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE, "--tunnel-command: %s",
                        local_error->message), FALSE;
  for (gsize i = 0; plan->tunnel_argv[i] != NULL; i++)
    {
      char **word = &plan->tunnel_argv[i];

      if (strstr (*word, "{nbd-socket}") == NULL)
        continue;
      if (!g_str_equal (*word, "{nbd-socket}"))
        return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE, "--tunnel-command: "
                            "{nbd-socket} must be a word of its own"), FALSE;
      if (dest->nbd_unix == NULL)
        return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                            "{nbd-socket} in --tunnel-command needs a destination that "
                            "listens on a UNIX socket"), FALSE;
      g_free (*word);
      *word = g_strdup (dest->nbd_unix);
    }
  return TRUE;
}

static gboolean
trust_tunnel_compress (const SourceOptions *opts, SourcePlan *plan, GError **error)
{
  return options_tunnel_compress (opts->tunnel_compress, opts->tunnel_addr, opts->tunnel_command,
                                  &plan->tunnel_compress, error);
}

/* The host the disks go to, as far as this host already trusts it. */
static const char *
trust_disk_host (const Cookie *dest, const SourceOptions *opts, NbdEndpoint *tunnel)
{
  if (opts->tunnel_addr != NULL)
    return nbd_endpoint_parse (opts->tunnel_addr, tunnel, NULL) ? tunnel->host : NULL;
  return opts->tunnel_command != NULL ? NULL : dest->nbd_host;
}

/* The cookie's memory stream URI: tcp: to the host the disks go to, or unix: for a
 * local destination.  Never exec:, fd:, rdma:, file: ... */
static gboolean
trust_peer_uri (const Cookie *dest, const SourceOptions *opts, GError **error)
{
  const char *uri = dest->migrate_uri;
  g_auto(NbdEndpoint) ep = { 0 };
  g_auto(NbdEndpoint) tunnel = { 0 };

  if (g_str_has_prefix (uri, "unix:"))
    return opts->local_destination
           ? trust_peer_path ("destination.migrate-uri", uri + 5, error)
           : trust_fail (error, uri, "destination.migrate-uri is a UNIX socket on this host "
                         "(pass --local-destination if the destination runs here, or "
                         "--migrate-uri)");
  if (!g_str_has_prefix (uri, "tcp:") || !nbd_endpoint_parse (uri, &ep, NULL) || ep.port == 0
      || !trust_chars (ep.host, ".:_-"))
    return trust_fail (error, uri, "destination.migrate-uri is not tcp:HOST:PORT or unix:PATH "
                       "(choose the memory stream with --migrate-uri)");
  if (host_is_local (ep.host) ? opts->local_destination
      : g_strcmp0 (ep.host, trust_disk_host (dest, opts, &tunnel)) == 0)
    return TRUE;
  return trust_fail (error, uri, "destination.migrate-uri is not on the host the disks go to "
                     "(choose the memory stream with --migrate-uri)");
}

/* Plaintext TCP for the memory stream follows the NBD rule. */
static gboolean
trust_memory_plaintext (const SourceOptions *opts, const SourcePlan *plan, GError **error)
{
  g_auto(NbdEndpoint) ep = { 0 };
  g_autofree char *shown = NULL;

  if (!g_str_has_prefix (plan->migrate_uri, "tcp:") || plan->migration_tls || opts->insecure)
    return TRUE;
  if (!nbd_endpoint_parse (plan->migrate_uri, &ep, error))
    return g_prefix_error (error, "--migrate-uri: "), FALSE;
  if (nbd_host_is_loopback (ep.host))
    return TRUE;
  shown = blkmig_escape (ep.host);
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
               "refusing a plaintext memory stream over TCP to %s: give --tls-creds DIR%s, or "
               "--insecure if the network is trusted", shown,
               trust_tunnelled (opts) ? " without a tunnel" : "");
  return FALSE;
}

static gboolean
trust_migrate_uri (const Cookie *dest, const SourceOptions *opts, const char *migrate_uri,
                   gboolean no_migrate, SourcePlan *plan, GError **error)
{
  if (dest->mode != COOKIE_MODE_LIVE || no_migrate)
    return TRUE;
  if (migrate_uri == NULL && dest->migrate_uri == NULL)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "the destination cookie has no migrate URI: pass --migrate-uri"), FALSE;
  if (migrate_uri == NULL && !trust_peer_uri (dest, opts, error))
    return FALSE;
  plan->migrate_uri = g_strdup (migrate_uri != NULL ? migrate_uri : dest->migrate_uri);
  plan->migration_tls = opts->tls_dir != NULL && !trust_tunnelled (opts);
  return trust_memory_plaintext (opts, plan, error);
}

gboolean
source_trust_check (const Cookie *dest, const SourceOptions *opts, const char *migrate_uri,
                    gboolean no_migrate, SourcePlan *plan, GError **error)
{
  return trust_nbd_target (dest, opts, error)
         && trust_tls_hostname (dest, opts, plan, error)
         && trust_tunnel_argv (dest, opts, plan, error)
         && trust_tunnel_compress (opts, plan, error)
         && trust_migrate_uri (dest, opts, migrate_uri, no_migrate, plan, error);
}
