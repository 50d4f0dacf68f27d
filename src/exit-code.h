/* From an error of any domain blkmig uses to its exit code and failure class. */
#pragma once

#include <glib.h>

/* Exit code for an error from any domain blkmig uses (docs/exit-codes.md). */
int blkmig_error_exit_code (const GError *error);
/* The failure class as a word: "usage", "cookie", "disk", "qmp", ... */
const char *blkmig_error_class (const GError *error);
/* Whether running the same operation again may succeed without changing anything
 * (network, stall, dead peer, busy id) or not (usage, cookie, size, format, space):
 * the table in docs/exit-codes.md. */
gboolean blkmig_error_retryable (const GError *error);
