/* blkmig's error domain (the mapping to exit codes lives with main, in src/exit-code.c). */
#include "common/error.h"

G_DEFINE_QUARK (blkmig-error-quark, blkmig_error)
