/* blkmig ctl: status, set-speed, copy-mode, switchover and cancel of a running operation. */
#include <stdio.h>

#include "common/error.h"
#include "common/escape.h"
#include "qmp/qmp-json.h"
#include "src/commands.h"
#include "src/control.h"
#include "src/util.h"

typedef struct {
  gboolean json;
  int timeout;            /* seconds */
} CtlArgs;

/* ok:false → its message, with the exit code it names (1, 2 or 10). */
static gboolean
ctl_check_reply (JsonObject *reply, const char *command, GError **error)
{
  gint64 code = qmp_member_int (reply, "exit-code", BLKMIG_ERROR_FAILED);

  if (qmp_member_bool (reply, "ok", FALSE))
    return TRUE;
  if (code != BLKMIG_ERROR_USAGE && code != BLKMIG_ERROR_BUSY)
    code = BLKMIG_ERROR_FAILED;
  g_set_error (error, BLKMIG_ERROR, code, "%s: %s", command,
               qmp_member_string_or (reply, "error", "refused"));
  return FALSE;
}

static void
ctl_print_disk (JsonObject *disk)
{
  g_autofree char *name = blkmig_escape (qmp_member_string_or (disk, "disk", "?"));
  g_autofree char *state = blkmig_escape (qmp_member_string_or (disk, "state", "?"));
  gint64 done = qmp_member_int (disk, "done", 0), total = qmp_member_int (disk, "total", 0);
  gint64 rate = qmp_member_int (disk, "rate", 0), eta = qmp_member_int (disk, "eta-s", -1);
  g_autofree char *d = util_human_size (done);
  g_autofree char *t = util_human_size (total);
  g_autoptr(GString) line = g_string_new (NULL);

  g_string_printf (line, "  %s: %s of %s (%d%%)", name, d, t,
                   total > 0 ? (int) (done * 100 / total) : 0);
  if (rate > 0)
    g_string_append_printf (line, ", %.1f MB/s", rate / 1e6);
  if (eta >= 0)
    g_string_append_printf (line, ", ETA %" G_GINT64_FORMAT ":%02" G_GINT64_FORMAT, eta / 60,
                            eta % 60);
  g_string_append_printf (line, ", %s", state);
  if (qmp_member_bool (disk, "write-blocking", FALSE))
    g_string_append (line, ", write-blocking");
  if (!qmp_member_bool (disk, "converging", TRUE))
    g_string_append (line, ", not converging");
  printf ("%s\n", line->str);
}

/* The status as lines for people; the answer is our own user's process, but its
 * strings (disk names) may come from a peer: escaped. */
void
ctl_print_status (JsonObject *status)
{
  g_autofree char *id = blkmig_escape (qmp_member_string_or (status, "id", "?"));
  g_autofree char *command = blkmig_escape (qmp_member_string_or (status, "command", "?"));
  g_autofree char *phase = blkmig_escape (qmp_member_string_or (status, "phase", "?"));
  JsonNode *disks = json_object_get_member (status, "disks");
  JsonArray *array = disks != NULL && JSON_NODE_HOLDS_ARRAY (disks) ? json_node_get_array (disks)
                                                                      : NULL;

  printf ("%s: %s, phase %s%s", id, command, phase,
          qmp_member_bool (status, "held", FALSE) ? " (held: waiting for switchover)" : "");
  if (json_object_has_member (status, "speed"))
    printf (", speed %" G_GINT64_FORMAT " B/s per disk", qmp_member_int (status, "speed", 0));
  printf ("\n");
  for (guint i = 0; array != NULL && i < json_array_get_length (array); i++)
    {
      JsonNode *node = json_array_get_element (array, i);

      if (JSON_NODE_HOLDS_OBJECT (node))
        ctl_print_disk (json_node_get_object (node));
    }
}

/* After cancel: the operation has rolled back and gone once its socket is gone. */
static gboolean
ctl_wait_gone (const char *id, int timeout, GError **error)
{
  gint64 deadline = g_get_monotonic_time () + (gint64) timeout * G_USEC_PER_SEC;

  for (;;)
    {
      if (!control_answers (id))
        return TRUE;
      if (g_get_monotonic_time () >= deadline)
        return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED,
                            "cancel: operation %s has not ended within %d s", id, timeout), FALSE;
      g_usleep (100 * 1000);
    }
}

/* The request for COMMAND [VALUE] (argv after the id). */
static JsonObject *
ctl_request (int argc, char **argv, GError **error)
{
  g_autoptr(JsonObject) request = json_object_new ();
  const char *command = argv[0];
  guint64 bytes;

  json_object_set_string_member (request, "command", command);
  if (g_str_equal (command, "set-speed"))
    {
      if (argc != 2 || !g_ascii_string_to_unsigned (argv[1], 10, 0, G_MAXINT64, &bytes, NULL))
        return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                            "set-speed needs BYTES per second (a whole number, 0: unlimited)"),
               NULL;
      json_object_set_int_member (request, "bytes", (gint64) bytes);
    }
  else if (g_str_equal (command, "copy-mode"))
    {
      if (argc != 2)
        return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                            "copy-mode needs a mode (write-blocking)"), NULL;
      json_object_set_string_member (request, "mode", argv[1]);
    }
  else if (argc != 1)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "%s takes no value", command), NULL;
  return g_steal_pointer (&request);
}

gboolean
cmd_ctl (int argc, char **argv, GCancellable *cancellable, GError **error)
{
  CtlArgs args = { .timeout = 30 };
  const GOptionEntry entries[] = {
    { "json", 0, 0, G_OPTION_ARG_NONE, &args.json, "status: print the answer as JSON", NULL },
    { "timeout", 0, 0, G_OPTION_ARG_INT, &args.timeout,
      "Wait at most SECONDS for the answer (cancel: for the operation to end; default 30)",
      "SECONDS" },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr(JsonObject) request = NULL;
  g_autoptr(JsonObject) reply = NULL;

  if (!command_parse (&argc, &argv, "ID COMMAND [VALUE]",
                      "Control a running operation: status, set-speed BYTES, copy-mode "
                      "write-blocking, switchover (after --hold), cancel.", entries, error))
    return FALSE;
  if (argc < 3 || args.timeout <= 0)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "expected ID COMMAND [VALUE] and a --timeout above 0"), FALSE;
  if (!control_check_id (argv[1], error)
      || (request = ctl_request (argc - 2, argv + 2, error)) == NULL
      || (reply = control_request (argv[1], request, args.timeout, error)) == NULL
      || !ctl_check_reply (reply, argv[2], error))
    return FALSE;
  if (g_str_equal (argv[2], "status") && args.json)
    {
      g_autoptr(JsonNode) root = json_node_init_object (json_node_alloc (), reply);
      g_autofree char *text = json_to_string (root, FALSE);
      printf ("%s\n", text);
    }
  else if (g_str_equal (argv[2], "status"))
    ctl_print_status (reply);
  else if (g_str_equal (argv[2], "cancel"))
    return ctl_wait_gone (argv[1], args.timeout, error);
  return TRUE;
}
