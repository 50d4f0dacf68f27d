/* blkmig qmp: run one QMP command and print its reply, for scripts and tests. */
#include <stdio.h>

#include "common/error.h"
#include "src/commands.h"

gboolean
cmd_qmp (int argc, char **argv, GCancellable *cancellable, GError **error)
{
  g_autofree char *path = NULL;
  const GOptionEntry entries[] = {
    { "qmp", 0, 0, G_OPTION_ARG_FILENAME, &path, "QMP socket", "PATH" },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr(QmpClient) qmp = NULL;
  g_autoptr(JsonNode) args = NULL;
  g_autoptr(JsonNode) ret = NULL;
  g_autofree char *text = NULL;

  if (!command_parse (&argc, &argv, "COMMAND [ARGUMENTS-JSON]",
                      "Run one QMP command and print its \"return\" value as JSON.",
                      entries, error)
      || !command_require ("--qmp", path, error))
    return FALSE;
  if (argc < 2 || argc > 3)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "expected COMMAND [ARGUMENTS-JSON]"), FALSE;
  if (argc == 3 && ((args = json_from_string (argv[2], NULL)) == NULL
                    || !JSON_NODE_HOLDS_OBJECT (args)))
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "arguments must be a JSON object: %s", argv[2]), FALSE;
  qmp = qmp_client_connect_sync (path, "qemu", cancellable, error);
  if (qmp == NULL)
    return FALSE;
  ret = qmp_client_execute_sync (qmp, argv[1], g_steal_pointer (&args), cancellable, error);
  if (ret == NULL)
    return FALSE;
  text = json_to_string (ret, TRUE);
  printf ("%s\n", text);
  return TRUE;
}
