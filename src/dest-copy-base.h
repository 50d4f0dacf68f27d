/* --chain copy-base on the destination: copies of the source's layers, made, exported and composed. */
#pragma once

#include "src/disks.h"
#include "src/session.h"

/* Where disk @i's layers are copied to (--base-dir, else beside its target: a new
 * file, or @have, the destination QEMU's disk), each checked not to exist yet and
 * not to be another disk's, and their exports' names; refuses what this
 * destination cannot receive (move mode; into @have without what composing under
 * a running disk needs). */
gboolean dest_copy_base_plan (QmpClient *dst, Cookie *reply, guint i, const DiskInfo *have,
                              const PrepareOptions *opts, GError **error);
/* Makes each layer's empty copy (listed in the journal once it exists), opens it
 * without backing and exports it writable for the source's copy. */
gboolean dest_copy_base_export (QmpClient *dst, const PrepareOptions *opts, Cookie *reply,
                                guint i, GCancellable *cancellable, GError **error);
/* Once every layer is copied and no QEMU has them open: links each copy onto the
 * one below it (qemu-img rebase -u), then a new target onto the nearest the same
 * way, or a disk of the running QEMU by attaching the chain under it
 * (blockdev-reopen); the destination then holds the source's chain.  Doing it
 * again changes nothing.  Only files @journal (this host's) lists as created,
 * and disks its cookie names, are touched. */
gboolean dest_copy_base_compose (QmpClient *dst, const Cookie *result, const Journal *journal,
                                 GCancellable *cancellable, GError **error);
/* After compose, with the disks active (after cont when they were migrated):
 * writes the chain into each running disk's header (change-backing-file), so a
 * restarted VM opens it too. */
gboolean dest_copy_base_record (QmpClient *dst, const Cookie *result,
                                GCancellable *cancellable, GError **error);

/* session-dest.c: makes @path (@format, @size) new through a staging directory,
 * journalled as created once it exists; with @backing, a qcow2 overlay on it. */
gboolean dest_make_file (Journal *journal, const Cookie *reply, const char *path,
                         const char *format, gint64 size, const char *backing,
                         const char *backing_format, GCancellable *cancellable, GError **error);
