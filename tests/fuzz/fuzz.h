/* The libFuzzer entry points every harness in tests/fuzz defines (replay.c calls them too). */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Called once before the first input (optional: replay.c checks for it). */
int LLVMFuzzerInitialize (int *argc, char ***argv);
/* Runs one input; returns 0.  A bug shows as a crash, a sanitizer report or a leak. */
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

/* Aborts with @what when @cond is false (a harness invariant, also without NDEBUG). */
#define FUZZ_CHECK(cond, what)                                              \
  do {                                                                      \
    if (!(cond))                                                            \
      fuzz_fail (__FILE__, __LINE__, (what));                               \
  } while (0)

void fuzz_fail (const char *file, int line, const char *what) __attribute__ ((noreturn));
/* Common set-up: no GSlice caching (leaks show per input); a GLib critical or
 * warning aborts (a finding libFuzzer keeps). */
void fuzz_init_glib (void);
