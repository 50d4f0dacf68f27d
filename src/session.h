/* The migration steps on each side, shared by `migrate` and the phase commands. */
#pragma once

#include "cookie/cookie.h"
#include "jobs/job-group.h"
#include "jobs/mirror.h"
#include "nbd/nbd-server.h"
#include "qmp/qmp-client.h"
#include "src/chain.h"
#include "src/journal.h"

typedef struct {
  MirrorTuning mirror;      /* speed, buf-size, granularity, copy mode */
  gboolean quiet;           /* no progress lines */
  guint progress_ms;        /* interval between progress lines */
  gboolean verify;          /* compare source and destination while both are quiescent */
  Journal *journal;         /* steps are recorded here before they happen; may be NULL */
  const char *tunnel_addr;  /* --tunnel tcp:HOST:PORT */
  const char *tunnel_command; /* --tunnel-command CMD */
  const char *tunnel_compress; /* --tunnel-compress MODE; NULL: auto */
  const char *tls_dir;      /* x509 credentials for the NBD client */
  const char *tls_hostname; /* the name the server certificate must carry */
  gboolean insecure;        /* allow plaintext TCP to a non-loopback address */
  gboolean pass_fds;        /* connect here and hand QEMU the sockets (getfd) */
  gboolean local_destination; /* the operator says the destination runs on this host */
  /* Called once every mirror has ended without pivot (live, copy): a caller that
   * also drives the destination removes its exports at once. */
  gboolean (*mirrors_ended) (gpointer data, GError **error);
  gpointer mirrors_ended_data;
  /* Called with every mirror READY, before anything is switched: a caller that
   * also drives the destination checks it is still there. */
  gboolean (*before_switch) (gpointer data, GError **error);
  /* replicate: called with every mirror READY, before the switch; holds the
   * mirrors as long as it runs; FALSE fails perform (rolled back), TRUE goes on to
   * the switch (copy mode: the mirrors end without pivot). */
  gboolean (*hold) (gpointer data, JobGroup *group, GCancellable *cancellable, GError **error);
  gpointer hold_data;
  gboolean name_filters;    /* replicate: the mirror filters get blkmig's names */
  /* resync: the mirrors send only new writes and a backup per disk copies what
   * this bitmap of the disk marks (*resync_bytes: how much), before hold. */
  const char *resync_bitmap;
  gint64 *resync_bytes;
} SourceOptions;

typedef struct {
  NbdEndpoint listen;       /* where the NBD server listens */
  char *create_dir;         /* create missing targets here (copy/move only) */
  char *incoming_uri;       /* migrate-incoming URI (live only) */
  Journal *journal;         /* may be NULL */
  const char *tls_dir;      /* x509 credentials: the NBD server requires TLS */
  const char *const *tls_authz; /* client certificate DNs allowed, NULL = any the CA signed */
  gboolean insecure;        /* allow plaintext TCP to a non-loopback address */
  const char *const *targets; /* --target NAME=PATH: the file for disk NAME, may exist */
  const char *base_dir;     /* --chain top: the source's backing layers are here by name */
  const char *const *bases; /* --base NAME=PATH: disk NAME's nearest backing layer */
} PrepareOptions;

/* Begin: the source cookie for the selected disks (all when @disks is empty).
 * @chain: for a disk with backing files, CHAIN_TOP moves only its active layer (sync
 * top) and the cookie describes the chain below it for the destination to verify;
 * CHAIN_COPY_BASE describes it for the destination to receive a copy. */
Cookie *session_begin (QmpClient *src, CookieMode mode, const char *const *disks,
                       ChainMode chain, GCancellable *cancellable, GError **error);

/* Prepare: validates @offer, starts the NBD server and one writable export per
 * disk (creating missing targets in create_dir), and returns the destination
 * cookie.  On failure everything it did is undone. */
Cookie *session_prepare (QmpClient *dst, Cookie *offer, const PrepareOptions *opts,
                         GCancellable *cancellable, GError **error);

/* Perform: mirrors every disk of the destination cookie, waits for READY, then
 * switches as the cookie's mode says.  @migrate_uri: the memory stream's URI
 * (NULL = the cookie's); @no_migrate: live mode ends the mirrors at READY like copy.
 * Returns the result cookie; on failure the source is rolled back. */
Cookie *session_perform (QmpClient *src, const Cookie *dest, const SourceOptions *opts,
                         const char *migrate_uri, gboolean no_migrate,
                         GCancellable *cancellable, GError **error);

/* Finish: waits for the incoming migration (live), removes exports, stops the
 * NBD server, detaches targets blkmig created (copy), composes copy-base chains
 * from the files @journal (this host's, may be NULL) lists as created, resumes the
 * guest (live or @resume).  Removes no file: the caller removes the sockets its
 * journal lists. */
gboolean session_finish (QmpClient *dst, const Cookie *result, const Journal *journal,
                         gboolean resume, GCancellable *cancellable, GError **error);

/* Removes this migration's exports and stops the NBD server (nothing if they are
 * already gone). */
gboolean session_remove_exports (QmpClient *dst, const Cookie *cookie,
                                 GCancellable *cancellable, GError **error);

/* Abort: best-effort cleanup of whatever this migration left on the QEMU behind
 * @qmp, on either side: jobs, NBD client nodes, exports, server, TLS objects, all
 * found by the migration id's prefix.  No file is removed: that is done from this
 * side's own journal (journal_remove_created), whatever a cookie says. */
void session_abort (QmpClient *qmp, const Cookie *cookie);

/* Records @step with a copy of @cookie in @journal (a no-op without a journal). */
gboolean session_journal (Journal *journal, JournalStep step, const Cookie *cookie,
                          GError **error);

/* Deletes the TLS objects of this migration (server, authz, client), quietly. */
void session_del_tls_objects (QmpClient *qmp, const Cookie *cookie);
/* Refuses plaintext NBD over TCP to @host unless it is loopback or @insecure. */
gboolean session_check_plaintext (const char *host, gboolean tls, gboolean insecure,
                                  GError **error);

/* Only the block jobs and nodes whose names carry @id (a move has no migration). */
void session_abort_blockdevs (QmpClient *qmp, const char *id);
/* The destination half of session_abort; @stop_server also when no export of
 * ours is left (prepare's own rollback). */
void session_abort_dest (QmpClient *dst, const Cookie *cookie, gboolean stop_server);
/* Turns on the named migration capabilities. */
gboolean session_set_capabilities (QmpClient *qmp, const char *const *caps,
                                   GCancellable *cancellable, GError **error);
/* Whether disk @index's target is a node blkmig opened from a file. */
gboolean session_is_file_target (const Cookie *cookie, guint index);
