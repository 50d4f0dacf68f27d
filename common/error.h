/* blkmig's error domain: one code per failure class, each mapped to an exit code. */
#pragma once

#include <glib.h>

#define BLKMIG_ERROR (blkmig_error_quark ())
GQuark blkmig_error_quark (void);

/* The values are the process exit codes documented in docs/exit-codes.md. */
typedef enum {
  BLKMIG_ERROR_FAILED = 1,      /* anything not covered below */
  BLKMIG_ERROR_USAGE = 2,       /* bad command line */
  BLKMIG_ERROR_COOKIE = 3,      /* cookie unreadable, invalid or from another migration */
  BLKMIG_ERROR_DISK = 4,        /* unknown disk, size mismatch, target cannot be made */
  BLKMIG_ERROR_QMP = 5,         /* QMP connection lost or a command failed */
  BLKMIG_ERROR_JOB = 6,         /* a block job failed */
  BLKMIG_ERROR_MIGRATION = 7,   /* the memory migration failed */
  BLKMIG_ERROR_DEGRADED = 8,    /* replicate: the standby or the link was lost */
  BLKMIG_ERROR_PRIMARY_LOST = 9, /* replicate: the primary QEMU is gone */
  BLKMIG_ERROR_BUSY = 10,       /* the operation id is in use by a running blkmig */
  BLKMIG_ERROR_INTERRUPTED = 130, /* SIGINT or SIGTERM: cleaned up and stopped */
} BlkmigErrorCode;
