/* Copying one read-only layer of a backing chain into an NBD export, with libnbd. */
#pragma once

#include <gio/gio.h>

typedef struct {
  const char *path;      /* source layer file (absolute) */
  const char *format;    /* "qcow2" or "raw", never probed */
  const char *dest_uri;  /* destination export, any URI nbd_connect_uri takes
                          * (nbd+unix:///EXPORT?socket=PATH, nbd://H:P/EXPORT, nbds://...?tls-certificates=DIR) */
  gboolean bottom;       /* TRUE: nothing will be below this layer on the destination */
  guint max_requests;    /* requests in flight (0 = a default, e.g. 16) */
  gint64 *done;          /* NULL or: bytes of the layer's virtual size dealt with so far (g_atomic_pointer / __atomic store; read by another thread for progress) */
  gint64 *sent;          /* NULL or: data bytes written so far (same) */
  gint64 speed;          /* bytes per second of data read and written at most (0: no
                          * limit); a request may run ahead of it by its own size */
} LayerCopy;

/* Copies the layer @copy->path into the export @copy->dest_uri: a fresh, empty
 * image of the same virtual size that QEMU opened without backing.  The layer is
 * served by qemu-nbd read-only and shared (force-share=on: a running QEMU may have
 * it open as a backing file) with its own backing chain, and copied in 64 KiB
 * chunks (the destination's cluster size): a chunk with no byte allocated in this
 * layer is skipped; one that reads as zeroes is skipped when @copy->bottom, else
 * sent as NBD WRITE_ZEROES, which QEMU's qcow2 (v3) records as a zero cluster even
 * without backing, so it hides the layer below once the copy is rebased onto it
 * (a compat=0.10 destination drops it: not for copy-base); any other chunk is read
 * through the layer's backing and written whole.  Adjacent chunks of one kind go
 * in one request (up to 2 MiB), up to @copy->max_requests at once; the
 * destination is flushed at the end.  @copy->done and @copy->sent, when set, are
 * updated atomically as it goes (__atomic_load_n() them from another thread).
 * The URI is trusted (it may name local files: socket, tls-certificates); only its
 * export name may come from a peer.  Runs in any thread: it touches no main
 * context.  Errors: BLKMIG_ERROR_DISK, one line naming @copy->path (a destination
 * of another size or read-only; any libnbd failure); G_IO_ERROR_CANCELLED within
 * about 100 ms of @cancellable firing, even while waiting for a reply. */
gboolean nbd_copy_layer (const LayerCopy *copy, GCancellable *cancellable, GError **error);
