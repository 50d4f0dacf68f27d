/* The source end of --tunnel: QEMU's NBD clients connect here, one stream carries them. */
#pragma once

#include "jobs/job-group.h"
#include "nbd/tunnel.h"

typedef struct {
  Tunnel *tunnel;
  GSubprocess *proc;        /* --tunnel-command */
  char *dir;                /* private directory holding the socket */
  char *path;               /* the UNIX socket QEMU's NBD clients use */
  JobGroup *group;          /* failed at once when the stream breaks */
  char *broken;             /* why the stream broke, once it did */
  TunnelCompress compress;  /* set before source_tunnel_open */
} SourceTunnel;

/* Opens the stream (@addr "tcp:HOST:PORT", or the program @argv, run without a
 * shell) and listens for QEMU. */
gboolean source_tunnel_open (SourceTunnel *st, const char *addr, const char *const *argv,
                             const char *tls_dir, const char *tls_hostname, JobGroup *group,
                             GCancellable *cancellable, GError **error);
/* Closes the stream, waits (bounded) for the command, removes the socket. */
void source_tunnel_close (SourceTunnel *st);
