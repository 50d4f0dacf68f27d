/* From an error of any domain blkmig uses to its exit code and failure class. */
#include "src/exit-code.h"

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
