/* From an error of any domain blkmig uses to its exit code and failure class. */
#include "src/exit-code.h"

#include <string.h>

#include <gio/gio.h>

#include "common/error.h"
#include "qmp/qmp-client.h"

int
blkmig_error_exit_code (const GError *error)
{
  if (error == NULL)
    return 0;
  if (error->domain == BLKMIG_ERROR)
    return error->code;
  if (error->domain == QMP_ERROR)
    return BLKMIG_ERROR_QMP;
  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return BLKMIG_ERROR_INTERRUPTED;
  if (error->domain == G_OPTION_ERROR)
    return BLKMIG_ERROR_USAGE;
  return BLKMIG_ERROR_FAILED;
}

const char *
blkmig_error_class (const GError *error)
{
  switch (blkmig_error_exit_code (error))
    {
    case BLKMIG_ERROR_USAGE: return "usage";
    case BLKMIG_ERROR_COOKIE: return "cookie";
    case BLKMIG_ERROR_DISK: return "disk";
    case BLKMIG_ERROR_QMP: return "qmp";
    case BLKMIG_ERROR_JOB: return "job";
    case BLKMIG_ERROR_MIGRATION: return "migration";
    case BLKMIG_ERROR_DEGRADED: return "degraded";
    case BLKMIG_ERROR_PRIMARY_LOST: return "primary-lost";
    case BLKMIG_ERROR_BUSY: return "busy";
    case BLKMIG_ERROR_INTERRUPTED: return "interrupted";
    default: return "failed";
    }
}

/* A job's failure says what failed: the target's storage (full) or a mirror that
 * cannot converge without another --copy-mode will fail again the same way. */
static gboolean
blkmig_job_error_retryable (const char *message)
{
  static const char *const permanent[] = {
    "No space left on device", "Disk quota exceeded", "cannot switch a running mirror", NULL
  };

  for (guint i = 0; permanent[i] != NULL; i++)
    if (strstr (message, permanent[i]) != NULL)
      return FALSE;
  return TRUE;
}

gboolean
blkmig_error_retryable (const GError *error)
{
  if (error == NULL)
    return FALSE;
  if (error->domain == QMP_ERROR)  /* a lost or silent QEMU, not one that said no */
    return error->code == QMP_ERROR_CLOSED || error->code == QMP_ERROR_TIMEOUT;
  switch (blkmig_error_exit_code (error))
    {
    case BLKMIG_ERROR_QMP:         /* cannot connect: the QEMU is not (yet) there */
    case BLKMIG_ERROR_MIGRATION:   /* the memory stream failed or stalled */
    case BLKMIG_ERROR_DEGRADED:    /* replicate resync picks it up */
    case BLKMIG_ERROR_BUSY:        /* the id is in use for now */
      return TRUE;
    case BLKMIG_ERROR_JOB:
      return blkmig_job_error_retryable (error->message);
    default:                       /* usage, cookie, disk, primary lost, interrupted */
      return FALSE;
    }
}
