/* Backing chains across hosts (--chain top): describing the source's, verifying the destination's. */
#pragma once

#include "cookie/cookie.h"
#include "src/disks.h"

/* What --chain asks for a disk with backing files. */
typedef enum {
  CHAIN_FULL,       /* one flattened image (the default) */
  CHAIN_TOP,        /* the active layer, onto the destination's verified chain */
  CHAIN_COPY_BASE,  /* the active layer mirrored, the chain below copied beside it */
} ChainMode;

/* -q: no line on stderr while a layer is read for its identity (the "hashing" event
 * stays).  Set once by command_parse. */
void chain_set_quiet (gboolean quiet);

/* The layers below @disk's active layer as the cookie carries them (CookieLayer,
 * nearest first): base name, format, virtual size, allocation on the host and,
 * with @identities, content identity (which reads every allocated byte of each layer).  A layer whose
 * file is not a plain absolute path, or whose base name the cookie cannot carry, is
 * a BLKMIG_ERROR_DISK. */
GPtrArray *chain_describe (const DiskInfo *disk, gboolean identities, GCancellable *cancellable,
                           GError **error);

/* The chain that starts at the local file @base (opened as @format, never probed):
 * its files and formats, @base first, from qemu-img info --backing-chain. */
gboolean chain_local (const char *base, const char *format, GStrv *files, GStrv *formats,
                      GCancellable *cancellable, GError **error);

/* Whether the destination's layers @files (formats @formats, nearest first) are the
 * source's @layers: as many, each of the same format, virtual size and content
 * identity.  A difference is a BLKMIG_ERROR_DISK naming disk @name and the layer. */
gboolean chain_verify (const char *name, const GPtrArray *layers, const char *const *files,
                       const char *const *formats, GCancellable *cancellable, GError **error);
