/* Whether an NBD export reads as zeroes throughout, from its block status alone. */
#pragma once

#include <gio/gio.h>
#include <stdint.h>

/* Asks, in a thread of its own, whether the export at @uri ("nbd://..." or
 * "nbd+unix://...") is @size bytes and its base:allocation block status says
 * every byte reads as zeroes, answered within @timeout_ms.  Small extents of
 * data are read (QEMU writes the first 4 KiB of a new raw image, zeroes, to learn
 * its alignment), at most 1 MiB in all.  @callback runs in the caller's main
 * context, which must keep running (through --tunnel it serves the connection). */
void nbd_export_reads_zeroes_async (const char *uri, gint64 size, int timeout_ms,
                                    GCancellable *cancellable, GAsyncReadyCallback callback,
                                    gpointer user_data);
/* TRUE only when it does.  Anything else — no block status, data, another size,
 * an error, a server too slow, a cancel — is FALSE, with the reason in *why (may
 * be NULL): the caller then does what it would do without asking. */
gboolean nbd_export_reads_zeroes_finish (GAsyncResult *result, char **why);

/* One base:allocation reply's entries for the range from *pos to @end: advances
 * *pos over the leading extents that read as zeroes and stops at entries[*next],
 * the first that does not (its length, clipped at @end, in *data_len), or at the
 * end (*data_len 0).  FALSE for a malformed reply: no entries, an odd count, an
 * empty extent.  For tests. */
gboolean nbd_zeroes_walk (gint64 *pos, gint64 end, const uint32_t *entries, size_t nr_entries,
                          size_t *next, gint64 *data_len);
