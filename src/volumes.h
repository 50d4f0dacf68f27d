/* What recover needs from snapshot and merge: finishing or undoing them with QEMU alive. */
#pragma once

#include "qmp/qmp-client.h"
#include "src/journal.h"

/* A killed `snapshot`: kept if the transaction happened (the first disk runs on its
 * overlay), else our overlay nodes and files are removed.  *done says which. */
gboolean snapshot_recover (QmpClient *qmp, const Journal *journal, const char **done,
                           GError **error);
/* A killed `merge`: before the pivot was asked for, the commit is cancelled (the
 * chain stays); after, the pivot is finished; a guest blkmig paused runs again. */
gboolean merge_recover (QmpClient *qmp, const Journal *journal, const char **done,
                        GError **error);
