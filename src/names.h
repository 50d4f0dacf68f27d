/* The names blkmig gives what it creates in QEMU, and which names are its own. */
#pragma once

#include <glib.h>

/* Everything carries the first 8 hex digits of the operation's id (a migration's,
 * or a move's random one), so the id alone finds all of it again:
 *   jobs and exports  blkmig-ID8-N        (the export of disk N has job N's name)
 *   the move's job    blkmig-ID8-move
 *   the merge's job   blkmig-ID8-merge
 *   nodes, objects    blkmigID8<kind>N    (kinds below)
 *   move's --verify   blkmigID8vo, blkmigID8vn (exports of the old and new image) */
typedef enum {
  NAMES_NBD_CLIENT = 'n',   /* source: NBD client node of disk N */
  NAMES_FILE_TARGET = 'd',  /* destination: a file target blkmig opened */
  NAMES_MOVE_TARGET = 'm',  /* move: the new image's node */
  NAMES_OVERLAY = 's',      /* snapshot: the overlay node of disk N */
  NAMES_LAYER_TARGET = 'b', /* destination, copy-base: the copy of one layer (names_layer) */
  NAMES_LAYER_CHAIN = 'k',  /* destination, copy-base live: the copied chain of disk N */
  NAMES_EPOCH = 'e',        /* replicate, standby: an epoch layer of disk N (names_epoch_node) */
  NAMES_MIRROR_FILTER = 'f', /* replicate, primary: the filter node of disk N's mirror */
  NAMES_TLS_SERVER = 't',   /* destination: tls-creds-x509 of the NBD server */
  NAMES_TLS_AUTHZ = 'z',    /* destination: authz-list of the NBD server */
  NAMES_TLS_CLIENT = 'c',   /* source: tls-creds-x509 of the NBD clients */
} NamesKind;

char *names_job (const char *id, guint index);
char *names_export (const char *id, guint index);
char *names_move_job (const char *id);
char *names_merge_job (const char *id);
char *names_node (const char *id, NamesKind kind, guint index);
/* copy-base: layer @layer of disk @disk, as a node (NAMES_LAYER_TARGET) and as its
 * export (blkmig-ID8-N.bL). */
char *names_layer_node (const char *id, guint disk, guint layer);
char *names_layer_export (const char *id, guint disk, guint layer);
/* replicate: the standby's layer of disk @disk opened at checkpoint @epoch
 * (blkmigID8eN.K); the primary's dirty bitmap of checkpoint @epoch (blkmig-ID8-rK,
 * resync's rounds add .1, .2, ...); disk N's commit job on the standby
 * (blkmig-ID8-N.cK: its layers below epoch K); resync's backup job of disk N
 * (blkmig-ID8-N.r). */
char *names_epoch_node (const char *id, guint disk, guint epoch);
char *names_bitmap (const char *id, guint epoch);
char *names_commit_job (const char *id, guint disk, guint epoch);
char *names_resync_job (const char *id, guint disk);
/* @new_image: the export of the new image, else of the old one. */
char *names_verify_export (const char *id, gboolean new_image);
/* Whether @name (may be NULL) is one blkmig gives for operation @id. */
gboolean names_owns (const char *id, const char *name);
/* The 8 hex digits of the operation id a name blkmig gave carries ("blkmig-ID8-..."
 * or "blkmigID8..."), or NULL for a name of another shape. */
char *names_id_prefix (const char *name);
