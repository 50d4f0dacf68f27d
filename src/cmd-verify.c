/* blkmig verify: compare two disks (images or NBD URIs) and report the differences. */
#include "common/error.h"
#include "src/commands.h"

gboolean
cmd_verify (int argc, char **argv, GCancellable *cancellable, GError **error)
{
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED, "verify is not implemented yet");
  return FALSE;
}
