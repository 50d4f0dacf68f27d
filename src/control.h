/* The control socket of a running operation: what `blkmig ctl ID ...` talks to. */
#pragma once

#include <gio/gio.h>

#include "jobs/job-group.h"
#include "qmp/qmp-client.h"
#include "src/progress.h"

/* Requests and replies are one JSON object on one line each (docs/control.md);
 * a request longer than this is refused unread. */
#define CONTROL_MAX_REQUEST 4096
/* A reply (a status lists every disk) longer than this is refused by the client. */
#define CONTROL_MAX_REPLY (256 * 1024)

typedef struct _Control Control;

/* The socket for operation @id (whose QEMU names carry @migration_id: status
 * says so, gc spares them): STATE_DIR/ID.ctl, mode 0600, served on the
 * thread-default main context until control_close().  A stale socket of a dead
 * operation is replaced; one that answers means the operation runs elsewhere
 * (BLKMIG_ERROR_BUSY).  `cancel` cancels @cancellable (as SIGINT does).  While it
 * is open it is the process's one control (control_watch_jobs and friends). */
Control *control_open (const char *id, const char *migration_id, const char *command,
                       GCancellable *cancellable, GError **error);
/* Stops listening and removes the socket. */
void control_close (Control *control);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (Control, control_close)

/* The socket's path for operation @id; NULL with an error for an id that is not
 * a valid operation id (docs/control.md) or a path too long for a socket. */
char *control_socket_path (const char *id, GError **error);
/* FALSE (BLKMIG_ERROR_USAGE) unless @id is 1-40 of [A-Za-z0-9._-], not starting
 * with '.' or '-'. */
gboolean control_check_id (const char *id, GError **error);

/* The operation's mirrors, for status, set-speed and copy-mode (progress_start
 * and progress_stop call these; nothing happens without an open control). */
void control_watch_jobs (Progress *progress, JobGroup *group);
void control_unwatch_jobs (Progress *progress);
/* Live mode: set-speed also limits the memory stream of @qmp (the source). */
void control_set_memory_stream (QmpClient *qmp);
/* What an operation shares with the others on its host (COMMAND_HOST_ENTRIES). */
typedef struct {
  gint64 host_bandwidth;    /* --host-bandwidth BYTES, 0: none */
  int max_parallel;         /* --max-parallel N, 0: no queue */
} ControlHostOptions;

/* Before the operation touches a QEMU: with max_parallel, waits its turn (phase
 * `queued`; `ctl cancel` or a signal end the wait: G_IO_ERROR_CANCELLED), held
 * until control_close; with host_bandwidth, every second the budget is divided
 * among the mirrors copying on the whole host (host-share.h), this operation's
 * share capped by @cap (--speed, 0: none) and by set-speed. */
gboolean control_join_host (const ControlHostOptions *opts, gint64 cap, GError **error);
/* The speed a mirror starting now gets: its share of the host's budget, else the
 * last set-speed's, else @fallback. */
gint64 control_mirror_speed (gint64 fallback);

/* --hold: the operation will wait at READY for `ctl ID switchover` (@quiet: and
 * not say so on stderr). */
void control_enable_hold (gboolean quiet);
gboolean control_hold_enabled (void);
/* A SourceOptions.hold for --hold: with every mirror READY, waits for switchover
 * (TRUE), cancellation or a failed mirror (FALSE).  @data is unused. */
gboolean control_hold (gpointer data, JobGroup *group, GCancellable *cancellable,
                       GError **error);

/* Removes operation @id's control socket if it is this user's and nobody answers
 * on it (the operation died); TRUE when it was such a socket (@dry_run: left). */
gboolean control_remove_dead (const char *id, gboolean dry_run);

/* ---- the client side (control-client.c) ---- */

/* Sends @request to operation @id's control socket and returns its reply (any
 * JSON object, ok or not; bounded: CONTROL_MAX_REPLY, nesting); an error when
 * nobody answers within @timeout_s ("no running operation ID"). */
JsonObject *control_request (const char *id, JsonObject *request, int timeout_s, GError **error);
/* Whether a running operation listens on @id's control socket. */
gboolean control_answers (const char *id);
