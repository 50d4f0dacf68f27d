/* The content identity of one layer of a backing chain, hashed through qemu-nbd. */
#pragma once

#include <gio/gio.h>

/* The content identity of ONE layer of a backing chain, independent of its backing
 * files: "sha256:" + 64 lowercase hex digits over the layer's own extents, each
 * maximal run of one kind (data, zero, unallocated) hashed as its kind, offset and
 * length, and for data its bytes.  Read through qemu-nbd with the layer opened
 * alone (backing: null), read-only and sharing the image (a running VM may use it
 * as a backing file).  Same bytes and same allocation give the same identity: a
 * zero cluster differs from an unallocated one (it hides the backing file), and a
 * raw image's holes are its zero extents.  @format is "qcow2" or "raw" (never
 * probed); @path a file or a block device.  Errors: BLKMIG_ERROR_DISK, one line
 * naming @path (qemu-nbd prints its own reasons to stderr); G_IO_ERROR_CANCELLED
 * between reads when @cancellable fires. */
char *nbd_layer_identity (const char *path, const char *format, GCancellable *cancellable,
                          GError **error);
