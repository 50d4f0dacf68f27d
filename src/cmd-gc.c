/* blkmig gc: removes what dead operations left (QEMU jobs, nodes, exports; journals; sockets), sparing live ones. */
#include <stdio.h>
#include <unistd.h>

#include "common/error.h"
#include "common/escape.h"
#include "nbd/nbd-server.h"
#include "qmp/qmp-commands.h"
#include "qmp/qmp-json.h"
#include "src/commands.h"
#include "src/control.h"
#include "src/host-share.h"
#include "src/names.h"
#include "src/op-id.h"
#include "src/replicate.h"
#include "src/session.h"

#define GC_QMP_CONNECT_MS 3000

typedef struct {
  char **qmp;
  gboolean dry_run;
  GPtrArray *spared;   /* 8-hex prefixes of live operations, replications, open phases */
  guint removed;
} Gc;

static void
gc_spare (Gc *gc, const char *id)
{
  g_autofree char *prefix = g_strndup (id, 8);

  if (!g_ptr_array_find_with_equal_func (gc->spared, prefix, g_str_equal, NULL))
    g_ptr_array_add (gc->spared, g_steal_pointer (&prefix));
}

/* Whether operation @id (a whole id or its 8-digit prefix) is spared. */
static gboolean
gc_spared (Gc *gc, const char *id)
{
  g_autofree char *prefix = g_strndup (id, 8);

  return g_ptr_array_find_with_equal_func (gc->spared, prefix, g_str_equal, NULL);
}

static void
gc_say (Gc *gc, const char *what, const char *path)
{
  g_autofree char *quoted = blkmig_escape (path);

  printf ("gc: %s%s %s\n", gc->dry_run ? "would remove " : "removed ", what, quoted);
  gc->removed++;
}

/* A control socket: the operation of one that answers is spared (by its name, the
 * migration id an --op-id stands for, and the one its status names); one nobody
 * answers on is removed.  Connecting decides, not the status: a live operation
 * busy for a moment must not lose its socket or its QEMU objects. */
static void
gc_control_socket (Gc *gc, const char *dir, const char *name)
{
  g_autofree char *path = g_strdup_printf ("%s/%s.ctl", dir, name);
  g_autofree char *derived = op_id_migration_id (name);
  g_autoptr(JsonObject) request = json_object_new ();
  g_autoptr(JsonObject) reply = NULL;
  const char *id;

  if (control_remove_dead (name, gc->dry_run))
    {
      gc_say (gc, "the dead control socket", path);
      return;
    }
  if (!control_answers (name))
    return;  /* not a control socket of ours */
  gc_spare (gc, name);
  gc_spare (gc, derived);
  json_object_set_string_member (request, "command", "status");
  reply = control_request (name, request, 5, NULL);
  id = reply != NULL ? qmp_member_string (reply, "migration-id") : NULL;
  if (id != NULL && strlen (id) >= 8)
    gc_spare (gc, id);
}

static void
gc_budget_file (Gc *gc, const char *dir, const char *file)
{
  g_autofree char *path = g_build_filename (dir, file, NULL);

  if (host_budget_is_dead (path) && (gc->dry_run || unlink (path) == 0))
    gc_say (gc, "the dead budget file", path);
}

/* The state directory: live operations (spared), dead sockets and budget files. */
static void
gc_scan_state (Gc *gc)
{
  g_autofree char *dir = journal_dir ();
  g_autoptr(GDir) d = g_dir_open (dir, 0, NULL);
  const char *file;

  while (d != NULL && (file = g_dir_read_name (d)) != NULL)
    {
      const char *dot = strrchr (file, '.');
      g_autofree char *name = dot != NULL ? g_strndup (file, dot - file) : NULL;

      if (name == NULL || !control_check_id (name, NULL))
        continue;
      if (g_str_equal (dot, ".ctl"))
        gc_control_socket (gc, dir, name);
      else if (g_str_equal (dot, ".replica"))
        gc_spare (gc, name);  /* a replication lives across processes */
      else if (g_str_equal (dot, ".bw"))
        gc_budget_file (gc, dir, file);
    }
}

/* Journals of operations nobody runs any more are recovered (as `blkmig recover`
 * would).  Only those of commands with a control socket (migrate, perform, move,
 * merge): begin's and prepare's wait for the next phase, and a snapshot does not
 * say whether it runs: spared, left to `blkmig recover`. */
static gboolean
gc_journals (Gc *gc, GError **error)
{
  g_autoptr(GPtrArray) journals = journal_load_all (error);
  gboolean ok = TRUE;

  if (journals == NULL)
    return FALSE;
  for (guint i = 0; i < journals->len; i++)
    {
      Journal *journal = journals->pdata[i];
      gboolean completed;

      if (!g_str_equal (journal->command, "migrate") && !g_str_equal (journal->command, "perform")
          && !g_str_equal (journal->command, "move") && !g_str_equal (journal->command, "merge"))
        gc_spare (gc, journal->id);  /* no control socket says whether it runs: recover's */
      else if (!gc_spared (gc, journal->id) && gc->dry_run)
        gc_say (gc, "(by recovering it) the journal", journal->path);
      else if (!gc_spared (gc, journal->id))
        {
          gc->removed++;
          ok = recover_journal (journal, stdout, &completed, ok ? error : NULL) && ok;
        }
    }
  return ok;
}

/* Adds the id prefix of @name, if blkmig gave it, to @prefixes (once). */
static void
gc_collect (GPtrArray *prefixes, const char *name)
{
  g_autofree char *prefix = name != NULL ? names_id_prefix (name) : NULL;

  if (prefix != NULL && !g_ptr_array_find_with_equal_func (prefixes, prefix, g_str_equal, NULL))
    g_ptr_array_add (prefixes, g_steal_pointer (&prefix));
}

/* Every operation whose names @qmp's jobs, nodes, bitmaps and exports carry. */
static GPtrArray *
gc_prefixes_in (QmpClient *qmp, GStrv exports)
{
  GPtrArray *prefixes = g_ptr_array_new_with_free_func (g_free);
  g_autoptr(GPtrArray) jobs = qmp_query_block_jobs (qmp, NULL, NULL);
  g_autoptr(GPtrArray) nodes = qmp_query_named_block_nodes (qmp, NULL, NULL);

  for (guint i = 0; jobs != NULL && i < jobs->len; i++)
    gc_collect (prefixes, ((QmpBlockJobInfo *) jobs->pdata[i])->device);
  for (guint i = 0; nodes != NULL && i < nodes->len; i++)
    {
      QmpBlockNodeInfo *node = nodes->pdata[i];

      gc_collect (prefixes, node->node_name);
      for (guint j = 0; node->bitmaps != NULL && node->bitmaps[j] != NULL; j++)
        gc_collect (prefixes, node->bitmaps[j]);
    }
  for (guint i = 0; exports != NULL && exports[i] != NULL; i++)
    gc_collect (prefixes, exports[i]);
  return prefixes;
}

/* Whether a spared operation exports from @qmp (then its NBD server stays). */
static gboolean
gc_spared_exports (Gc *gc, GStrv exports)
{
  for (guint i = 0; exports != NULL && exports[i] != NULL; i++)
    {
      g_autofree char *prefix = names_id_prefix (exports[i]);

      if (prefix != NULL && gc_spared (gc, prefix))
        return TRUE;
    }
  return FALSE;
}

/* Only the orphan's exports, when a live operation's share the NBD server. */
static void
gc_clean_beside_live (QmpClient *qmp, const char *prefix, GStrv exports)
{
  for (guint i = 0; exports != NULL && exports[i] != NULL; i++)
    if (names_owns (prefix, exports[i]))
      nbd_export_del (qmp, exports[i], TRUE, NULL, NULL);
  session_abort_blockdevs (qmp, prefix);
}

/* A QEMU whose monitor does not answer (another client holds it: a running blkmig
 * does) or that is gone is skipped, and gc says so. */
static void
gc_sweep_qemu (Gc *gc, const char *path)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(QmpClient) qmp = NULL;
  g_auto(GStrv) exports = NULL;
  g_autoptr(GPtrArray) prefixes = NULL;
  gboolean live_server;

  qmp_client_set_connect_timeout_default (GC_QMP_CONNECT_MS);
  qmp = qmp_client_connect_sync (path, "qemu", NULL, &error);
  if (qmp == NULL)
    {
      g_autofree char *quoted = blkmig_escape (path);
      g_autofree char *why = blkmig_escape (error->message);

      printf ("gc: skipped %s: %s (a running blkmig or another client may hold its monitor)\n",
              quoted, why);
      return;
    }
  exports = nbd_export_list (qmp, NULL, NULL);
  prefixes = gc_prefixes_in (qmp, exports);
  live_server = gc_spared_exports (gc, exports);
  for (guint i = 0; i < prefixes->len; i++)
    {
      const char *prefix = prefixes->pdata[i];
      g_autofree char *what = g_strdup_printf ("the jobs, nodes and exports of operation %s in",
                                               prefix);

      if (gc_spared (gc, prefix))
        continue;
      gc_say (gc, what, path);
      if (gc->dry_run)
        continue;
      if (live_server)
        gc_clean_beside_live (qmp, prefix, exports);
      else
        replicate_clean_qemu (qmp, prefix);  /* jobs, exports, server, nodes, TLS, bitmaps */
    }
}

gboolean
cmd_gc (int argc, char **argv, GCancellable *cancellable, GError **error)
{
  g_auto(GStrv) qmp = NULL;
  gboolean dry_run = FALSE;
  const GOptionEntry entries[] = {
    { "qmp", 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &qmp,
      "Also sweep this QEMU for jobs, nodes and exports with blkmig's names that no live "
      "operation owns; repeatable", "PATH" },
    { "dry-run", 'n', 0, G_OPTION_ARG_NONE, &dry_run, "Only say what would be removed", NULL },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr(GPtrArray) spared = g_ptr_array_new_with_free_func (g_free);
  Gc gc = { .spared = spared };
  g_autofree char *dir = journal_dir ();
  gboolean ok;

  if (!command_parse (&argc, &argv, "", "Remove what dead blkmig operations left: block jobs, "
                      "nodes, exports and NBD servers with blkmig's names (--qmp), journals "
                      "(recovered), dead control sockets and budget files; live operations, "
                      "replications and open phases are spared.", entries, error))
    return FALSE;
  gc.dry_run = dry_run;
  if (argc > 1)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE, "gc takes no arguments"), FALSE;
  if (g_file_test (dir, G_FILE_TEST_EXISTS) && !journal_dir_check (dir, FALSE, error))
    return FALSE;
  gc_scan_state (&gc);
  ok = gc_journals (&gc, error);
  for (guint i = 0; qmp != NULL && qmp[i] != NULL; i++)
    gc_sweep_qemu (&gc, qmp[i]);
  if (gc.removed == 0)
    printf ("gc: nothing to remove\n");
  return ok;
}
