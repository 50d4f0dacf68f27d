/* blkmig verify: compare two disks (images or NBD URIs) and report the differences. */
#include <stdio.h>

#include "common/error.h"
#include "nbd/verify.h"
#include "src/commands.h"

static gboolean
verify_report (const char *a, const char *b, const VerifyResult *result, GError **error)
{
  if (result->diff_bytes > 0)
    {
      g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                   "%s and %s differ: first difference at offset %" G_GINT64_FORMAT
                   ", %" G_GINT64_FORMAT " %s", a, b, result->first_diff, result->diff_bytes,
                   result->diff_bytes == 1 ? "byte differs" : "bytes differ");
      return FALSE;
    }
  if (!common_options.quiet)
    printf ("identical: %" G_GINT64_FORMAT " bytes compared (%" G_GINT64_FORMAT
            " in holes) in %.2f s\n", result->size, result->hole_bytes, result->seconds);
  return TRUE;
}

gboolean
cmd_verify (int argc, char **argv, GCancellable *cancellable, GError **error)
{
  const GOptionEntry entries[] = { G_OPTION_ENTRY_NULL };
  VerifyResult result;

  if (!command_parse (&argc, &argv, "A B",
                      "Compare two disks, each a local image (any format qemu-img knows)\n"
                      "or an NBD URI (nbd://HOST:PORT/EXPORT, nbd+unix:///EXPORT?socket=PATH).\n"
                      "Ranges that read as zeroes on both sides are skipped.  Exit status 0\n"
                      "when identical, 4 when they differ or cannot be compared.",
                      entries, error))
    return FALSE;
  if (argc != 3)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "expected two disks to compare: A B"), FALSE;
  if (!nbd_verify (argv[1], argv[2], &result, cancellable, error))
    return FALSE;
  return verify_report (argv[1], argv[2], &result, error);
}
