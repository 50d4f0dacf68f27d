/* --chain copy-base on the source: each disk's backing layers copied into the destination's exports beside the mirrors. */
#pragma once

#include "cookie/cookie.h"
#include "jobs/job-group.h"

typedef struct _BaseCopy BaseCopy;

/* Where the destination's exports are reached: the tunnel's or the cookie's UNIX
 * socket, else host and port; with @tls_dir through TLS (the certificate checked
 * against the CA, and over TCP against @host, which must then be @tls_hostname:
 * libnbd 1.14 cannot check another name). */
typedef struct {
  const char *unix_path;
  const char *host;
  int port;
  const char *tls_dir;
  const char *tls_hostname;
  gint64 speed;          /* --speed: each layer's copy is capped like each mirror */
} BaseCopyTarget;

/* Starts copying the layers of every copy-base disk of @cookie (the destination's
 * answer), one thread per layer.  @files: per cookie disk, the source's current
 * backing files (GStrv, nearest first) and @formats theirs: they must be the
 * chain the cookie describes (same count, names and formats), else nothing starts.
 * A copy that fails makes @group fail at once.  NULL when no disk is copy-base
 * (and no error) or on error. */
BaseCopy *base_copy_start (const Cookie *cookie, GPtrArray *files, GPtrArray *formats,
                           const BaseCopyTarget *target, JobGroup *group, gboolean quiet,
                           GError **error);
/* Waits (iterating the main context) until every layer is copied. */
gboolean base_copy_wait (BaseCopy *copy, GCancellable *cancellable, GError **error);
/* Bytes of the layers dealt with and their total. */
void base_copy_totals (BaseCopy *copy, gint64 *done, gint64 *total);
/* Stops whatever still runs and waits for the threads. */
void base_copy_free (BaseCopy *copy);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BaseCopy, base_copy_free)
