/* Unit tests of the exit codes' retryable flag: each class of failure, as docs/exit-codes.md tables them. */
#include <gio/gio.h>

#include "common/error.h"
#include "qmp/qmp-client.h"
#include "src/exit-code.h"

typedef struct {
  GQuark domain;
  int code;
  const char *message;
  gboolean retryable;
} Case;

static void
test_retryable (void)
{
  const Case cases[] = {
    { BLKMIG_ERROR, BLKMIG_ERROR_FAILED, "anything else", FALSE },
    { BLKMIG_ERROR, BLKMIG_ERROR_USAGE, "--source is required", FALSE },
    { BLKMIG_ERROR, BLKMIG_ERROR_COOKIE, "cookie: bad id", FALSE },
    { BLKMIG_ERROR, BLKMIG_ERROR_DISK, "vdb: destination target is 16 MiB", FALSE },
    { BLKMIG_ERROR, BLKMIG_ERROR_QMP, "cannot connect to QMP: refused", TRUE },
    { QMP_ERROR, QMP_ERROR_CLOSED, "prepare: destination: QMP connection closed by QEMU", TRUE },
    { QMP_ERROR, QMP_ERROR_TIMEOUT, "switch: no reply within 10 s", TRUE },
    { QMP_ERROR, QMP_ERROR_GENERIC, "blockdev-add: Could not open", FALSE },
    { QMP_ERROR, QMP_ERROR_DEVICE_NOT_FOUND, "Device 'x' not found", FALSE },
    { BLKMIG_ERROR, BLKMIG_ERROR_JOB, "mirror: vda: block job blkmig-1 failed: "
                                      "Input/output error", TRUE },
    { BLKMIG_ERROR, BLKMIG_ERROR_JOB, "mirror: vda: no progress for 60 s", TRUE },
    { BLKMIG_ERROR, BLKMIG_ERROR_JOB, "mirror: vdb: block job blkmig-1 failed: "
                                      "No space left on device", FALSE },
    { BLKMIG_ERROR, BLKMIG_ERROR_JOB, "mirror: vda: not converging: ... the source QEMU "
                                      "cannot switch a running mirror to write-blocking", FALSE },
    { BLKMIG_ERROR, BLKMIG_ERROR_MIGRATION, "switch: migration failed", TRUE },
    { BLKMIG_ERROR, BLKMIG_ERROR_DEGRADED, "the standby was lost", TRUE },
    { BLKMIG_ERROR, BLKMIG_ERROR_PRIMARY_LOST, "the primary is gone", FALSE },
    { BLKMIG_ERROR, BLKMIG_ERROR_BUSY, "operation vm1 is already running", TRUE },
    { G_IO_ERROR, G_IO_ERROR_CANCELLED, "Operation was cancelled", FALSE },
    { G_OPTION_ERROR, G_OPTION_ERROR_UNKNOWN_OPTION, "Unknown option --x", FALSE },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr(GError) error = g_error_new_literal (cases[i].domain, cases[i].code,
                                                     cases[i].message);

      g_test_message ("%s", cases[i].message);
      g_assert_cmpint (blkmig_error_retryable (error), ==, cases[i].retryable);
    }
  g_assert_false (blkmig_error_retryable (NULL));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/exit-code/retryable", test_retryable);
  return g_test_run ();
}
