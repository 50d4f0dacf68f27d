/* blkmig status: what became of operations, also once blkmig is gone: control sockets, journals, records, QEMU. */
#include <stdio.h>

#include "common/error.h"
#include "common/escape.h"
#include "qmp/qmp-commands.h"
#include "qmp/qmp-json.h"
#include "src/commands.h"
#include "src/control.h"
#include "src/names.h"
#include "src/op-id.h"

#define STATUS_QMP_CONNECT_MS 2000

/* The name an operation's control socket and `ctl` use. */
static const char *
status_name (const Journal *journal)
{
  return journal->op_id != NULL ? journal->op_id : journal->id;
}

static JsonObject *
status_running (const char *name)
{
  g_autoptr(JsonObject) request = json_object_new ();
  JsonObject *reply;

  json_object_set_string_member (request, "command", "status");
  reply = control_request (name, request, 5, NULL);
  if (reply == NULL || !qmp_member_bool (reply, "ok", FALSE))
    return reply != NULL ? (json_object_unref (reply), NULL) : NULL;
  json_object_remove_member (reply, "ok");
  json_object_set_string_member (reply, "state", "running");
  return reply;
}

/* The block jobs with the operation's names that the journal's QEMU still runs. */
static void
status_add_jobs (JsonObject *obj, const Journal *journal)
{
  g_autoptr(QmpClient) qmp = NULL;
  g_autoptr(GPtrArray) jobs = NULL;
  JsonArray *array = json_array_new ();

  qmp_client_set_connect_timeout_default (STATUS_QMP_CONNECT_MS);
  if (journal->source_qmp != NULL)
    qmp = qmp_client_connect_sync (journal->source_qmp, "qemu", NULL, NULL);
  if (qmp != NULL)
    jobs = qmp_query_block_jobs (qmp, NULL, NULL);
  json_object_set_boolean_member (obj, "qemu-reachable", jobs != NULL);
  for (guint i = 0; jobs != NULL && i < jobs->len; i++)
    {
      QmpBlockJobInfo *info = jobs->pdata[i];
      JsonObject *job;

      if (!names_owns (journal->id, info->device))
        continue;
      job = json_object_new ();
      json_object_set_string_member (job, "job", info->device);
      json_object_set_string_member (job, "status", info->status != NULL ? info->status : "?");
      json_object_set_int_member (job, "done", info->offset);
      json_object_set_int_member (job, "total", info->len);
      json_array_add_object_element (array, job);
    }
  json_object_set_array_member (obj, "jobs", array);
}

static JsonObject *
status_interrupted (const Journal *journal)
{
  JsonObject *obj = json_object_new ();
  g_autofree char *recover = g_strdup_printf ("blkmig recover --id %s", journal->id);

  json_object_set_string_member (obj, "id", status_name (journal));
  json_object_set_string_member (obj, "migration-id", journal->id);
  json_object_set_string_member (obj, "state", "interrupted");
  json_object_set_string_member (obj, "command", journal->command);
  json_object_set_string_member (obj, "step", journal_step_to_string (journal->step));
  json_object_set_string_member (obj, "recover", recover);
  status_add_jobs (obj, journal);
  return obj;
}

static JsonObject *
status_succeeded (const char *op_id, JsonObject *record)
{
  JsonObject *obj = json_object_new ();

  json_object_set_string_member (obj, "id", op_id);
  json_object_set_string_member (obj, "state", "succeeded");
  json_object_set_string_member (obj, "command", qmp_member_string_or (record, "command", "?"));
  json_object_set_string_member (obj, "status", qmp_member_string_or (record, "status", "?"));
  json_object_set_string_member (obj, "time", qmp_member_string_or (record, "time", "?"));
  return obj;
}

/* Journals of the operation @name: its op id or its migration id. */
static Journal *
status_find_journal (GPtrArray *journals, const char *name)
{
  for (guint i = 0; i < journals->len; i++)
    {
      Journal *journal = journals->pdata[i];

      if (g_str_equal (journal->id, name) || g_strcmp0 (journal->op_id, name) == 0)
        return journal;
    }
  return NULL;
}

static JsonObject *
status_of (const char *name, GPtrArray *journals, GError **error)
{
  Journal *journal = status_find_journal (journals, name);
  g_autoptr(JsonObject) record = NULL;
  g_autoptr(GError) local_error = NULL;
  JsonObject *obj;

  if ((obj = status_running (name)) != NULL
      || (journal != NULL && (obj = status_running (status_name (journal))) != NULL))
    return obj;
  if (journal != NULL)
    return status_interrupted (journal);
  if ((record = op_id_load_done (name, &local_error)) != NULL)
    return status_succeeded (name, record);
  if (local_error != NULL)
    return g_propagate_error (error, g_steal_pointer (&local_error)), NULL;
  return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED,
                      "no operation %s: not running, no journal, no record of a success", name),
         NULL;
}

static gint
status_compare (gconstpointer a, gconstpointer b)
{
  return strcmp (*(const char *const *) a, *(const char *const *) b);
}

/* The names of every operation the state directory knows, sorted, each once. */
static GPtrArray *
status_names (GPtrArray *journals)
{
  g_autofree char *dir = journal_dir ();
  g_autoptr(GDir) d = g_dir_open (dir, 0, NULL);
  GPtrArray *names = g_ptr_array_new_with_free_func (g_free);
  const char *file;

  for (guint i = 0; i < journals->len; i++)
    g_ptr_array_add (names, g_strdup (status_name (journals->pdata[i])));
  while (d != NULL && (file = g_dir_read_name (d)) != NULL)
    {
      g_autofree char *name = NULL;

      if (g_str_has_suffix (file, ".ctl") || g_str_has_suffix (file, ".done"))
        name = g_strndup (file, strrchr (file, '.') - file);
      if (name != NULL && control_check_id (name, NULL)
          && !g_ptr_array_find_with_equal_func (names, name, g_str_equal, NULL))
        g_ptr_array_add (names, g_steal_pointer (&name));
    }
  g_ptr_array_sort (names, status_compare);
  return names;
}

static JsonArray *
status_all (GPtrArray *journals)
{
  g_autoptr(GPtrArray) names = status_names (journals);
  JsonArray *all = json_array_new ();

  for (guint i = 0; i < names->len; i++)
    {
      JsonObject *obj = status_of (names->pdata[i], journals, NULL);

      if (obj != NULL)  /* a dead socket with nothing else: gc's, not an operation */
        json_array_add_object_element (all, obj);
    }
  return all;
}

/* An interrupted operation: its step, what its QEMU still runs, how to clean it. */
static void
status_print_interrupted (JsonObject *obj, const char *id, const char *command)
{
  g_autofree char *step = blkmig_escape (qmp_member_string_or (obj, "step", "?"));
  g_autofree char *recover = blkmig_escape (qmp_member_string_or (obj, "recover", "?"));
  JsonArray *jobs = json_object_has_member (obj, "jobs")
                    ? json_object_get_array_member (obj, "jobs") : NULL;
  const char *qemu = !qmp_member_bool (obj, "qemu-reachable", FALSE) ? "its QEMU does not answer"
                     : jobs != NULL && json_array_get_length (jobs) > 0
                     ? "its block jobs still run" : "no block job of it runs";

  printf ("%s: interrupted, %s at step %s; %s; run %s\n", id, command, step, qemu, recover);
}

/* One operation for people (running: with its disks); names may be a peer's: escaped. */
static void
status_print (JsonObject *obj)
{
  const char *state = qmp_member_string_or (obj, "state", "?");
  g_autofree char *id = blkmig_escape (qmp_member_string_or (obj, "id", "?"));
  g_autofree char *command = blkmig_escape (qmp_member_string_or (obj, "command", "?"));

  if (g_str_equal (state, "running"))
    ctl_print_status (obj);
  else if (g_str_equal (state, "interrupted"))
    status_print_interrupted (obj, id, command);
  else
    {
      g_autofree char *status = blkmig_escape (qmp_member_string_or (obj, "status", "?"));
      g_autofree char *time = blkmig_escape (qmp_member_string_or (obj, "time", "?"));
      printf ("%s: succeeded, %s %s at %s\n", id, command, status, time);
    }
}

static void
status_print_json (JsonNode *root)
{
  g_autofree char *text = json_to_string (root, FALSE);

  printf ("%s\n", text);
}

gboolean
cmd_status (int argc, char **argv, GCancellable *cancellable, GError **error)
{
  gboolean json = FALSE;
  const GOptionEntry entries[] = {
    { "json", 0, 0, G_OPTION_ARG_NONE, &json, "Print JSON", NULL },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr(GPtrArray) journals = NULL;
  g_autoptr(JsonNode) root = json_node_alloc ();

  if (!command_parse (&argc, &argv, "[ID]", "Show running, interrupted and finished operations "
                      "(one, by operation or migration id), from their control sockets, journals "
                      "and records, and what their QEMU still runs.", entries, error))
    return FALSE;
  if (argc > 2)
    return g_set_error_literal (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE, "expected [ID]"), FALSE;
  if ((argc == 2 && !control_check_id (argv[1], error))
      || (journals = journal_load_all (error)) == NULL)
    return FALSE;
  if (argc == 2)
    {
      JsonObject *obj = status_of (argv[1], journals, error);

      if (obj == NULL)
        return FALSE;
      json_node_take_object (json_node_init (root, JSON_NODE_OBJECT), obj);
      if (json)
        status_print_json (root);
      else
        status_print (obj);
      return TRUE;
    }
  json_node_take_array (json_node_init (root, JSON_NODE_ARRAY), status_all (journals));
  if (json)
    status_print_json (root);
  for (guint i = 0; !json && i < json_array_get_length (json_node_get_array (root)); i++)
    status_print (json_array_get_object_element (json_node_get_array (root), i));
  return TRUE;
}
