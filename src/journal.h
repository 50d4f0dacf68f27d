/* The crash-safe journal: what a command is about to do, written before it does it. */
#pragma once

#include "cookie/cookie.h"

/* What one journal file says.  Steps, in order, for each kind of command:
 *   migrate: begin → prepare → mirror → switch → [pre-switchover] →
 *            completed|copied|moved (then the journal goes)
 *   perform: mirror → switch → [pre-switchover] → (gone)
 *   prepare: prepare → prepared (gone after finish or abort)
 *   begin:   offered (gone when perform is done or rolled back, or by abort/recover)
 *   move:    mirror → superseded (old leaf marked, pivot about to be asked) →
 *            pivoted (then the journal goes)
 *   snapshot: snapshot (overlays about to be made) → transaction (about to be
 *            sent) → (gone)
 *   merge:   commit (job about to start) → [active layer: ready (READY, the
 *            guest about to be paused) → superseded (guest paused, pivot about to
 *            be asked) → pivoted (guest resumed next)] → committed (only what
 *            --delete-merged removes is left) → (gone)
 * Each step is one JournalStep; its name on disk comes from one table in journal.c. */
typedef enum {
  JOURNAL_STEP_NONE,            /* nothing written yet (never on disk) */
  JOURNAL_STEP_BEGIN,           /* "begin" */
  JOURNAL_STEP_OFFERED,         /* "offered" */
  JOURNAL_STEP_PREPARE,         /* "prepare" */
  JOURNAL_STEP_PREPARED,        /* "prepared" */
  JOURNAL_STEP_MIRROR,          /* "mirror" */
  JOURNAL_STEP_SWITCH,          /* "switch" */
  JOURNAL_STEP_PRE_SWITCHOVER,  /* "pre-switchover" */
  JOURNAL_STEP_COMPLETED,       /* "completed" */
  JOURNAL_STEP_COPIED,          /* "copied" */
  JOURNAL_STEP_MOVED,           /* "moved" */
  JOURNAL_STEP_SUPERSEDED,      /* "superseded" */
  JOURNAL_STEP_PIVOTED,         /* "pivoted" */
  JOURNAL_STEP_SNAPSHOT,        /* "snapshot" */
  JOURNAL_STEP_TRANSACTION,     /* "transaction" */
  JOURNAL_STEP_COMMIT,          /* "commit" */
  JOURNAL_STEP_COMMITTED,       /* "committed" */
  JOURNAL_STEP_READY,           /* "ready" */
  JOURNAL_STEP_LAST
} JournalStep;

/* The step's name on disk; NULL for JOURNAL_STEP_NONE and out of range. */
const char *journal_step_to_string (JournalStep step);
/* FALSE for a name no step has. */
gboolean journal_step_from_string (const char *str, JournalStep *step);

typedef struct {
  char *path;
  char *id;                /* migration id (or the move's random id) */
  char *command;           /* "migrate", "perform", "prepare", "move" */
  char *op_id;             /* --op-id, or NULL: names the control socket */
  gboolean keep_targets;   /* --keep-target: a rollback keeps the targets (ID.kept) */
  JournalStep step;
  char *source_qmp;        /* QMP sockets of the sides this process drove */
  char *dest_qmp;
  Cookie *cookie;          /* the newest cookie, NULL for move */
  GPtrArray *created;      /* files blkmig created or is about to create */
  /* move (and merge) */
  char *disk;
  char *old_image;         /* move: the leaf the guest ran on; merge: the top */
  char *new_image;         /* move: the target blkmig created; merge: the base */
  char *new_node;          /* move: our node; merge: the base's node */
  char *job;
  /* merge */
  char *top_node;
  GStrv chain;             /* the disk's files before the merge, active first */
  gboolean active;         /* the top was the active layer */
  gboolean paused_guest;   /* blkmig stopped a running guest for the pivot */
  gboolean delete_merged;
  /* snapshot: disks[i] gets the overlay created[i], opened as node nodes[i] */
  GStrv disks;
  GStrv nodes;
} Journal;

void journal_free (Journal *journal);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (Journal, journal_free)

/* $BLKMIG_STATE_DIR, else /var/lib/blkmig as root, else $XDG_STATE_HOME/blkmig. */
char *journal_dir (void);
/* The state directory must be a directory of the effective user that others cannot
 * enter (0700): whoever can write there decides what recover removes.  @create
 * makes it (0700) when missing. */
gboolean journal_dir_check (const char *dir, gboolean create, GError **error);
Journal *journal_new (const char *id, const char *command);
void journal_add_created (Journal *journal, const char *path);
/* Removes what the journal says blkmig created, if it still looks like blkmig's:
 * sockets and private directories (util_is_private_dir, with the files in them)
 * always, regular files of the effective user (targets) only with @targets (a
 * rollback) — unless journal->keep_targets: then they stay and are listed in
 * STATE_DIR/ID.kept.  Nothing through a link, no other directory, no relative path. */
void journal_remove_created (const Journal *journal, gboolean targets);
/* Records @step (and the journal's current fields) atomically: temp file, fsync,
 * rename, fsync of the directory.  For tests, BLKMIG_TEST_KILL_AT=STEP makes the
 * process SIGKILL itself right after STEP is on disk, BLKMIG_TEST_PAUSE_AT=STEP
 * makes it SIGSTOP itself there (fault injection at a known point). */
gboolean journal_write (Journal *journal, JournalStep step, GError **error);
/* The operation ended (done or fully rolled back): the journal goes away. */
void journal_remove (Journal *journal);
/* Removes the journal @command wrote for migration @id, if there is one. */
void journal_forget (const char *id, const char *command);
Journal *journal_load (const char *path, GError **error);
/* The journal @command wrote for migration @id: NULL without an error when there is
 * none; an error when the state directory or the journal cannot be trusted. */
Journal *journal_find (const char *id, const char *command, GError **error);
/* Any state file: @text stored at @path (in journal_dir()) as a journal is, and read
 * back only from a regular file of the effective user, not through a link, bounded. */
gboolean journal_store (const char *path, const char *text, GError **error);
char *journal_read (const char *path, GError **error);
/* Every journal in journal_dir(), oldest first. */
GPtrArray *journal_load_all (GError **error);
