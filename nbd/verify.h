/* Comparing two disks through libnbd: local images or NBD URIs, holes skipped. */
#pragma once

#include <gio/gio.h>

typedef struct {
  gint64 size;            /* bytes compared (the common size) */
  gint64 hole_bytes;      /* bytes skipped because both sides report a hole */
  gint64 first_diff;      /* offset of the first differing byte, -1 if none */
  gint64 diff_bytes;      /* number of differing bytes */
  double seconds;
} VerifyResult;

/* @a and @b: "nbd://...", "nbd+unix://..." or a local image path (served read-only
 * through qemu-nbd, sharing the image with a QEMU that has it open).  Returns TRUE
 * when the comparison ran (identical or not: see result->diff_bytes); FALSE with
 * an error when it could not run (sizes differ: BLKMIG_ERROR_DISK). */
gboolean nbd_verify (const char *a, const char *b, VerifyResult *result,
                     GCancellable *cancellable, GError **error);
