/* Caller-chosen operation ids: derived migration ids and "done" records in the state directory. */
#include "src/op-id.h"

#include <errno.h>
#include <stdio.h>

#include "common/error.h"
#include "common/escape.h"
#include "common/json.h"
#include "qmp/qmp-json.h"
#include "src/commands.h"
#include "src/events.h"
#include "src/journal.h"

#define OP_ID_DONE_MAX 4096

char *
op_id_migration_id (const char *op_id)
{
  g_autofree char *salted = g_strconcat ("blkmig operation id:", op_id, NULL);
  g_autofree char *hash = g_compute_checksum_for_string (G_CHECKSUM_SHA256, salted, -1);

  return g_strndup (hash, 32);
}

/* STATE_DIR/OP_ID.done (the record), STATE_DIR/OP_ID.result (the result cookie). */
static char *
op_id_path (const char *op_id, const char *suffix)
{
  g_autofree char *dir = journal_dir ();
  g_autofree char *name = g_strconcat (op_id, suffix, NULL);

  return g_build_filename (dir, name, NULL);
}

static gboolean
op_id_store_result (const char *op_id, const Cookie *result, GError **error)
{
  g_autofree char *path = op_id_path (op_id, ".result");
  g_autofree char *text = NULL;

  if (result == NULL)
    return TRUE;
  text = cookie_to_string (result);
  return journal_store (path, text, error);
}

Cookie *
op_id_load_result (const char *op_id, GError **error)
{
  g_autofree char *path = op_id_path (op_id, ".result");
  g_autofree char *text = journal_read (path, error);

  return text != NULL ? cookie_parse (text, -1, COOKIE_KIND_RESULT, error) : NULL;
}

void
op_id_record_done (const char *op_id, const char *command, const char *status,
                   const Cookie *result)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonBuilder) b = json_builder_new ();
  g_autoptr(JsonNode) root = NULL;
  g_autofree char *path = NULL;
  g_autofree char *text = NULL;
  g_autoptr(GDateTime) now = g_date_time_new_now_utc ();
  g_autofree char *when = g_date_time_format_iso8601 (now);

  if (op_id == NULL)
    return;
  path = op_id_path (op_id, ".done");
  json_builder_begin_object (b);
  blkmig_json_add_string (b, "op-id", op_id);
  blkmig_json_add_string (b, "command", command);
  blkmig_json_add_string (b, "status", status);
  blkmig_json_add_string (b, "time", when);
  json_builder_end_object (b);
  root = json_builder_get_root (b);
  text = json_to_string (root, TRUE);
  if (!op_id_store_result (op_id, result, &error) || !journal_store (path, text, &error))
    g_printerr ("blkmig: warning: %s\n", error->message);
}

JsonObject *
op_id_load_done (const char *op_id, GError **error)
{
  static const BlkmigJsonLimits limits = { OP_ID_DONE_MAX, 2, 16 };
  g_autofree char *path = op_id_path (op_id, ".done");
  g_autofree char *text = NULL;
  g_autoptr(JsonNode) root = NULL;
  g_autoptr(GError) local_error = NULL;

  if (!g_file_test (path, G_FILE_TEST_EXISTS | G_FILE_TEST_IS_SYMLINK))
    return NULL;
  if ((text = journal_read (path, error)) == NULL)
    return NULL;
  if ((root = blkmig_json_parse (text, -1, &limits, &local_error)) == NULL
      || !JSON_NODE_HOLDS_OBJECT (root))
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED, "%s: not a record of blkmig's%s%s",
                        path, local_error != NULL ? ": " : "",
                        local_error != NULL ? local_error->message : ""), NULL;
  return json_object_ref (json_node_get_object (root));
}

char *
op_id_find_done (const char *op_id, const char *command, GError **error)
{
  g_autoptr(JsonObject) record = op_id_load_done (op_id, error);
  const char *recorded;

  if (record == NULL)
    return NULL;
  recorded = qmp_member_string_or (record, "command", "");
  if (!g_str_equal (recorded, command))
    {
      g_autofree char *quoted = blkmig_escape (recorded);
      return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                          "operation id %s was already used by %s", op_id, quoted), NULL;
    }
  return g_strdup (qmp_member_string_or (record, "status", "done"));
}

gboolean
op_id_before_start (const char *op_id, const char *command, const char *id, char **done,
                    GError **error)
{
  g_autoptr(Journal) journal = NULL;
  g_autoptr(GError) local_error = NULL;
  g_autoptr(Cookie) result = NULL;
  gboolean completed;

  *done = op_id_find_done (op_id, command, &local_error);
  if (*done == NULL && local_error == NULL)
    journal = journal_find (id, command, &local_error);
  if (local_error != NULL)
    return g_propagate_error (error, g_steal_pointer (&local_error)), FALSE;
  if (journal == NULL)
    return TRUE;  /* done before, or nothing of a previous run */
  if (!recover_journal (journal, stderr, &completed, error))
    return FALSE;
  if (!completed)
    return TRUE;
  *done = g_strdup ("completed");
  if (journal->cookie != NULL && journal->cookie->kind != COOKIE_KIND_RESULT)
    result = cookie_new_result (journal->cookie, *done, NULL);  /* killed before it wrote one */
  op_id_record_done (op_id, command, *done, result != NULL ? result : journal->cookie);
  return TRUE;
}

void
op_id_report_done (const char *op_id, const char *status, FILE *out)
{
  events_emit ("completed", "status", qmp_str (status), "already", qmp_bool (TRUE), NULL);
  if (!common_options.quiet && !common_options.json)
    {
      g_autofree char *quoted = blkmig_escape (status);  /* from a file: printed escaped */
      fprintf (out, "blkmig: operation %s had already succeeded (%s): nothing to do\n", op_id,
               quoted);
    }
}
