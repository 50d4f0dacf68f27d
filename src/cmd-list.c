/* blkmig list: the disks of a running QEMU and its block jobs, as a table or JSON. */
#include <stdio.h>

#include "common/error.h"
#include "common/escape.h"
#include "common/json.h"
#include "qmp/qmp-commands.h"
#include "src/commands.h"
#include "src/disks.h"
#include "src/util.h"

#define LIST_JSON_VERSION 1
#define LIST_MAX_COLUMNS 8

typedef struct {
  const char *header;
  int min_width;          /* columns never get narrower, so short tables line up */
  gboolean right;         /* right-aligned (sizes) */
} ListColumn;

static const ListColumn disk_columns[] = {
  { "NAME", 6, FALSE }, { "NODE", 12, FALSE }, { "FORMAT", 6, FALSE },
  { "SIZE", 10, TRUE }, { "ALLOCATED", 10, TRUE }, { "DEVICE", 8, FALSE },
  { "FILE", 0, FALSE },
};

static const ListColumn job_columns[] = {
  { "ID", 8, FALSE }, { "TYPE", 8, FALSE }, { "STATUS", 8, FALSE },
  { "PROGRESS", 24, FALSE }, { "SPEED", 0, FALSE },
};

/* One table line: its cells, and an optional indented line printed below it. */
typedef struct {
  char *cells[LIST_MAX_COLUMNS];
  char *note;
} ListRow;

static void
list_row_free (ListRow *row)
{
  for (guint i = 0; i < LIST_MAX_COLUMNS; i++)
    g_free (row->cells[i]);
  g_free (row->note);
  g_free (row);
}

/* ---- the human table ----------------------------------------------------- */

static void
list_print_cells (const ListColumn *columns, guint n, const int *widths,
                  const char *const *cells, const char *indent)
{
  g_autoptr(GString) line = g_string_new (indent);

  /* The last column is not padded: no trailing blanks. */
  for (guint i = 0; i + 1 < n; i++)
    g_string_append_printf (line, columns[i].right ? "%*s  " : "%-*s  ", widths[i], cells[i]);
  g_string_append (line, cells[n - 1]);
  printf ("%s\n", line->str);
}

/* Header, then each row (and its note); column widths fit the widest cell. */
static void
list_print_table (const ListColumn *columns, guint n, GPtrArray *rows, const char *indent)
{
  int widths[LIST_MAX_COLUMNS];
  const char *headers[LIST_MAX_COLUMNS];

  g_assert (n <= LIST_MAX_COLUMNS);
  for (guint i = 0; i < n; i++)
    {
      headers[i] = columns[i].header;
      widths[i] = MAX (columns[i].min_width, (int) strlen (columns[i].header));
      for (guint r = 0; r < rows->len; r++)
        widths[i] = MAX (widths[i], (int) strlen (((ListRow *) rows->pdata[r])->cells[i]));
    }
  list_print_cells (columns, n, widths, headers, indent);
  for (guint r = 0; r < rows->len; r++)
    {
      ListRow *row = rows->pdata[r];
      list_print_cells (columns, n, widths, (const char *const *) row->cells, indent);
      if (row->note != NULL)
        printf ("%s  %s\n", indent, row->note);
    }
}

/* "backing: /b.qcow2 [node mid] -> /a.raw [node #block123]", top first */
static char *
list_backing_note (const DiskInfo *disk)
{
  g_autoptr(GArray) layers = disk_info_layers (disk);
  g_autoptr(GString) note = g_string_new ("backing:");

  for (guint i = 1; i < layers->len; i++)
    {
      const DiskLayer *layer = &g_array_index (layers, DiskLayer, i);
      g_autofree char *file = blkmig_escape_controls (layer->file);
      g_autofree char *node = blkmig_escape_controls (layer->node);

      g_string_append_printf (note, "%s %s", i > 1 ? " ->" : "", file);
      if (*layer->node != '\0')
        g_string_append_printf (note, " [node %s]", node);
    }
  return g_string_free (g_steal_pointer (&note), FALSE);
}

static ListRow *
list_disk_row (const DiskInfo *disk)
{
  ListRow *row = g_new0 (ListRow, 1);
  g_autofree char *device = disk_info_attached_device (disk);

  row->cells[0] = blkmig_escape_controls (disk->name);
  row->cells[1] = blkmig_escape_controls (*disk->node ? disk->node : "-");
  row->cells[2] = blkmig_escape_controls (disk->format);
  row->cells[3] = util_human_size (disk->virtual_size);
  row->cells[4] = util_human_size (disk->allocated);
  row->cells[5] = blkmig_escape_controls (device != NULL ? device : "-");
  row->cells[6] = blkmig_escape_controls (*disk->file ? disk->file : "-");
  if (disk->backing != NULL)
    row->note = list_backing_note (disk);
  return row;
}

/* "1.0 MiB / 16 MiB (6%)"; the percentage rounds down, so 100% means done. */
static char *
list_job_progress (gint64 offset, gint64 len)
{
  g_autofree char *done = util_human_size (offset);
  g_autofree char *total = util_human_size (len);
  int percent = len > 0 ? (int) (MIN (offset, len) * 100 / len) : 0;

  return g_strdup_printf ("%s / %s (%d%%)", done, total, percent);
}

/* offset and len as QEMU gave them, 0 when it did not. */
#define LIST_JOB_NUMBER(n) ((n) >= 0 ? (n) : 0)

static ListRow *
list_job_row (const QmpBlockJobInfo *job)
{
  ListRow *row = g_new0 (ListRow, 1);
  g_autofree char *rate = job->speed > 0 ? util_human_size (job->speed) : NULL;

  row->cells[0] = blkmig_escape_controls (job->device ?: "-");
  row->cells[1] = blkmig_escape_controls (job->type ?: "-");
  row->cells[2] = blkmig_escape_controls (job->status ?: "-");
  row->cells[3] = list_job_progress (LIST_JOB_NUMBER (job->offset),
                                     LIST_JOB_NUMBER (job->len));
  row->cells[4] = rate != NULL ? g_strdup_printf ("%s/s", rate) : g_strdup ("unlimited");
  return row;
}

static void
list_print_human (GPtrArray *disks, GPtrArray *jobs)
{
  g_autoptr(GPtrArray) disk_rows = g_ptr_array_new_with_free_func ((GDestroyNotify) list_row_free);
  g_autoptr(GPtrArray) job_rows = g_ptr_array_new_with_free_func ((GDestroyNotify) list_row_free);

  for (guint i = 0; i < disks->len; i++)
    g_ptr_array_add (disk_rows, list_disk_row (disks->pdata[i]));
  list_print_table (disk_columns, G_N_ELEMENTS (disk_columns), disk_rows, "");
  if (jobs->len == 0)
    {
      printf ("\nBlock jobs: none\n");
      return;
    }
  for (guint i = 0; i < jobs->len; i++)
    g_ptr_array_add (job_rows, list_job_row (jobs->pdata[i]));
  printf ("\nBlock jobs:\n");
  list_print_table (job_columns, G_N_ELEMENTS (job_columns), job_rows, "  ");
}

/* ---- JSON ---------------------------------------------------------------- */

/* "chain": every layer, the active one first: file, node (null: unknown), format */
static void
list_json_chain (JsonBuilder *b, const DiskInfo *disk)
{
  g_autoptr(GArray) layers = disk_info_layers (disk);

  json_builder_set_member_name (b, "chain");
  json_builder_begin_array (b);
  for (guint i = 0; i < layers->len; i++)
    {
      const DiskLayer *layer = &g_array_index (layers, DiskLayer, i);

      json_builder_begin_object (b);
      blkmig_json_add_string (b, "file", layer->file);
      blkmig_json_add_string (b, "node", *layer->node ? layer->node : NULL);
      blkmig_json_add_string (b, "format", layer->format);
      json_builder_end_object (b);
    }
  json_builder_end_array (b);
}

static void
list_json_disk (JsonBuilder *b, const DiskInfo *disk)
{
  g_autofree char *device = disk_info_attached_device (disk);

  json_builder_begin_object (b);
  blkmig_json_add_string (b, "name", disk->name);
  blkmig_json_add_string (b, "node", disk->node);
  blkmig_json_add_string (b, "format", disk->format);
  blkmig_json_add_int (b, "virtual-size", disk->virtual_size);
  blkmig_json_add_int (b, "allocated", disk->allocated);
  blkmig_json_add_string (b, "device", device);
  blkmig_json_add_string (b, "file", disk->file);
  blkmig_json_add_strv (b, "backing", (const char *const *) disk->backing);
  list_json_chain (b, disk);
  json_builder_end_object (b);
}

/* query-block-jobs calls the job id "device". */
static void
list_json_job (JsonBuilder *b, const QmpBlockJobInfo *job)
{
  json_builder_begin_object (b);
  blkmig_json_add_string (b, "id", job->device ?: "");
  blkmig_json_add_string (b, "type", job->type ?: "");
  blkmig_json_add_string (b, "status", job->status ?: "");
  blkmig_json_add_int (b, "offset", LIST_JOB_NUMBER (job->offset));
  blkmig_json_add_int (b, "len", LIST_JOB_NUMBER (job->len));
  blkmig_json_add_int (b, "speed", job->speed);
  json_builder_end_object (b);
}

/* The document docs/list.md describes:
 *   {"version": 1,
 *    "disks": [{"name", "node", "format", "virtual-size", "allocated",
 *               "device" (qdev id, QOM path or null), "file", "backing": [top first],
 *               "chain": [{"file", "node" (or null), "format"}, the active layer first]}],
 *    "jobs": [{"id", "type", "status", "offset", "len", "speed"}]}
 * Keys come in this order; sizes are bytes. */
static void
list_print_json (GPtrArray *disks, GPtrArray *jobs)
{
  g_autoptr(JsonBuilder) b = json_builder_new ();
  g_autoptr(JsonGenerator) gen = json_generator_new ();
  g_autoptr(JsonNode) root = NULL;
  g_autofree char *text = NULL;

  json_builder_begin_object (b);
  blkmig_json_add_int (b, "version", LIST_JSON_VERSION);
  json_builder_set_member_name (b, "disks");
  json_builder_begin_array (b);
  for (guint i = 0; i < disks->len; i++)
    list_json_disk (b, disks->pdata[i]);
  json_builder_end_array (b);
  json_builder_set_member_name (b, "jobs");
  json_builder_begin_array (b);
  for (guint i = 0; i < jobs->len; i++)
    list_json_job (b, jobs->pdata[i]);
  json_builder_end_array (b);
  json_builder_end_object (b);
  root = json_builder_get_root (b);
  json_generator_set_pretty (gen, TRUE);
  json_generator_set_root (gen, root);
  text = json_generator_to_data (gen, NULL);
  printf ("%s\n", text);
}

/* ---- the command --------------------------------------------------------- */

gboolean
cmd_list (int argc, char **argv, GCancellable *cancellable, GError **error)
{
  g_autofree char *path = NULL;
  gboolean json = FALSE;
  const GOptionEntry entries[] = {
    { "qmp", 0, 0, G_OPTION_ARG_FILENAME, &path, "QMP socket of the running QEMU", "PATH" },
    { "json", 0, 0, G_OPTION_ARG_NONE, &json, "Print one JSON document (see docs/list.md)",
      NULL },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr(QmpClient) qmp = NULL;
  g_autoptr(GPtrArray) disks = NULL;
  g_autoptr(GPtrArray) jobs = NULL;

  if (!command_parse (&argc, &argv, "",
                      "Show a running QEMU's disks (with their backing chains and devices)\n"
                      "and its block jobs.",
                      entries, error)
      || !command_require ("--qmp", path, error))
    return FALSE;
  if (argc > 1)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "unexpected argument '%s'", argv[1]), FALSE;
  qmp = qmp_client_connect_sync (path, "qemu", cancellable, error);
  if (qmp == NULL
      || (disks = disks_query (qmp, TRUE, cancellable, error)) == NULL
      || (jobs = qmp_query_block_jobs (qmp, cancellable, error)) == NULL)
    return FALSE;
  if (json)
    list_print_json (disks, jobs);
  else
    list_print_human (disks, jobs);
  return TRUE;
}
