/* From an error of any domain blkmig uses to its exit code and failure class. */
#pragma once

#include <glib.h>

/* Exit code for an error from any domain blkmig uses (docs/exit-codes.md). */
int blkmig_error_exit_code (const GError *error);
/* The failure class as a word: "usage", "cookie", "disk", "qmp", ... */
const char *blkmig_error_class (const GError *error);
