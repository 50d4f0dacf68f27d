/* blkmig list: the disks of a running QEMU and its block jobs. */
#include "common/error.h"
#include "src/commands.h"

gboolean
cmd_list (int argc, char **argv, GCancellable *cancellable, GError **error)
{
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED, "list is not implemented yet");
  return FALSE;
}
