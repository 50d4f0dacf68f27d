/* move --verify: compare the old and new images through this QEMU right after the pivot. */
#pragma once

#include "qmp/qmp-client.h"

/* With the guest paused since before the pivot: exports @old_node and @new_node
 * read-only on a private NBD socket of this QEMU and compares them. */
gboolean move_verify_pivot (QmpClient *qmp, const char *disk, const char *old_node,
                            const char *new_node, const char *tag, gboolean quiet,
                            GCancellable *cancellable, GError **error);
