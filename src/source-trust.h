/* What the source takes from the destination's cookie, checked against its own options. */
#pragma once

#include "cookie/cookie.h"
#include "nbd/tunnel.h"
#include "src/session.h"

/* The decisions perform makes before anything starts. */
typedef struct {
  GStrv tunnel_argv;        /* --tunnel-command as words, {nbd-socket} substituted */
  TunnelCompress tunnel_compress; /* --tunnel-compress */
  char *migrate_uri;        /* the memory stream's URI; NULL when there is none */
  char *tls_hostname;       /* the name the destination's certificate must carry */
  gboolean migration_tls;   /* the memory stream uses TLS (the NBD client's creds) */
} SourcePlan;

void source_plan_clear (SourcePlan *plan);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (SourcePlan, source_plan_clear)

/* Checks what the destination cookie @dest asks of this host and fills @plan:
 * paths must be plain absolute paths, a UNIX socket or a loopback address only
 * with opts->local_destination, the memory stream only tcp:/unix: to the host the
 * disks go to (@migrate_uri, the operator's, overrides), plaintext TCP only on
 * loopback or with --insecure.  Nothing is started. */
gboolean source_trust_check (const Cookie *dest, const SourceOptions *opts,
                             const char *migrate_uri, gboolean no_migrate, SourcePlan *plan,
                             GError **error);
