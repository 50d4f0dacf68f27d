/* blkmig's entry point: picks the command, runs it, maps errors to exit codes. */
#include <locale.h>
#include <malloc.h>
#include <stdio.h>

#include "common/debug.h"
#include "common/error.h"
#include "common/escape.h"
#include "src/chain.h"
#include "src/commands.h"
#include "src/events.h"
#include "src/exit-code.h"
#include "src/util.h"

CommonOptions common_options;

static const struct {
  const char *name;
  CommandFunc func;
  const char *summary;
} commands[] = {
  { "migrate", cmd_migrate, "drive a whole migration between two QEMUs (live, copy or move)" },
  { "begin", cmd_begin, "source phase: describe the disks in a source cookie" },
  { "prepare", cmd_prepare, "destination phase: NBD server and exports from a source cookie" },
  { "perform", cmd_perform, "source phase: mirror into the exports and switch" },
  { "finish", cmd_finish, "destination phase: tear down the exports and resume the guest" },
  { "abort", cmd_abort, "clean up one side of a failed migration, given any of its cookies" },
  { "move", cmd_move, "move one disk to new storage on the same host, live" },
  { "snapshot", cmd_snapshot, "external snapshot of running disks (one transaction for all)" },
  { "merge", cmd_merge, "live merge of a layer of a running disk's chain into a lower one" },
  { "list", cmd_list, "show a running QEMU's disks and block jobs" },
  { "verify", cmd_verify, "compare two disks (images or NBD URIs); exit 0 only if identical" },
  { "recover", cmd_recover, "finish or roll back what an interrupted blkmig left (its journal)" },
  { "reconcile", cmd_reconcile, "after a crash, decide offline which leaf of an interrupted move or merge is authoritative" },
  { "replicate", cmd_replicate, "keep a standby's copy of a running VM's disks, with checkpoints and failover" },
  { "tunnel-endpoint", cmd_tunnel_endpoint, "far end of --tunnel: hand its NBD connections to the destination" },
  { "ctl", cmd_ctl, "control a running operation: status, set-speed, copy-mode, switchover, cancel" },
  { "status", cmd_status, "running, interrupted and finished operations, also once blkmig is gone" },
  { "gc", cmd_gc, "remove what dead operations left (QEMU, journals, sockets), sparing live ones" },
  { "qmp", cmd_qmp, "run one QMP command and print its reply (for scripts)" },
};

static void
usage (FILE *out)
{
  fprintf (out, "Usage: blkmig COMMAND [OPTION...]\n\n"
                "Move virtual-machine disks while the VM runs, by driving QEMU over QMP.\n\n"
                "Commands:\n");
  for (gsize i = 0; i < G_N_ELEMENTS (commands); i++)
    fprintf (out, "  %-16s %s\n", commands[i].name, commands[i].summary);
  fprintf (out, "\nblkmig COMMAND --help shows a command's options.\n"
                "Exit codes: 0 ok, 1 other failure, 2 usage, 3 cookie, 4 disk, 5 QMP,\n"
                "6 block job, 7 migration, 8 degraded, 9 primary lost, 10 busy,\n"
                "130 interrupted (see docs/exit-codes.md).\n");
}

gboolean
command_parse (int *argc, char ***argv, const char *params, const char *summary,
               const GOptionEntry *entries, GError **error)
{
  static const GOptionEntry common[] = {
    { "debug", 0, 0, G_OPTION_ARG_NONE, &common_options.debug,
      "Trace the QMP conversation and job events on stderr", NULL },
    { "quiet", 'q', 0, G_OPTION_ARG_NONE, &common_options.quiet, "Print only errors", NULL },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr(GOptionContext) ctx = g_option_context_new (params);

  g_option_context_set_summary (ctx, summary);
  g_option_context_add_main_entries (ctx, entries, NULL);
  g_option_context_add_main_entries (ctx, common, NULL);
  if (!g_option_context_parse (ctx, argc, argv, error))
    return FALSE;
  chain_set_quiet (common_options.quiet);
  if (common_options.debug)
    blkmig_debug_init (BLKMIG_DEBUG_QMP | BLKMIG_DEBUG_JOBS | BLKMIG_DEBUG_TUNNEL);
  if (common_options.json)
    return events_open ("-", error);
  if (common_options.events_path != NULL)
    return events_open (common_options.events_path, error);
  return TRUE;
}

gboolean
command_require (const char *option, const void *value, GError **error)
{
  if (value != NULL)
    return TRUE;
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE, "%s is required", option);
  return FALSE;
}

/* One line on stderr, and the same as an event for machines. */
static void
report_error (const char *command, const GError *error)
{
  g_autofree char *message = NULL;
  g_autofree char *escaped = NULL;

  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    message = g_strdup ("interrupted by a signal; what it had started was undone");
  else if (g_str_has_prefix (error->message, command)
           && g_str_has_prefix (error->message + strlen (command), ": "))
    message = g_strdup (error->message + strlen (command) + 2);  /* "prepare: prepare: " */
  else
    message = g_strdup (error->message);
  /* messages carry peer strings: nothing reaches the terminal unescaped */
  escaped = blkmig_escape_controls (message);
  g_printerr ("blkmig %s: %s\n", command, escaped);
  events_emit ("error", "message", qmp_str (message),
               "exit-code", qmp_int (blkmig_error_exit_code (error)),
               "class", qmp_str (blkmig_error_class (error)),
               "retryable", qmp_bool (blkmig_error_retryable (error)), NULL);
  events_close ();
}

int
main (int argc, char **argv)
{
  g_autoptr(GCancellable) cancellable = g_cancellable_new ();
  g_autoptr(GError) error = NULL;

  setlocale (LC_ALL, "");
  /* The tunnel allocates a buffer per 1 MiB frame: from mmap (glibc's default
   * above 128 KiB, or after trimming the heap) every one of them page-faulted
   * in on first write; measured, that was the largest share of the tunnel's CPU. */
  mallopt (M_MMAP_THRESHOLD, 16 * 1024 * 1024);
  mallopt (M_TRIM_THRESHOLD, 64 * 1024 * 1024);
  blkmig_debug_init (0);
  if (argc < 2)
    {
      usage (stderr);
      return BLKMIG_ERROR_USAGE;
    }
  if (g_str_equal (argv[1], "--help") || g_str_equal (argv[1], "-h")
      || g_str_equal (argv[1], "help"))
    {
      usage (stdout);
      return 0;
    }
  if (g_str_equal (argv[1], "--version"))
    {
      printf ("blkmig %s\n", PACKAGE_VERSION);
      return 0;
    }
  util_cancel_on_signals (cancellable);
  for (gsize i = 0; i < G_N_ELEMENTS (commands); i++)
    {
      g_autofree char *prgname = NULL;

      if (!g_str_equal (argv[1], commands[i].name))
        continue;
      prgname = g_strdup_printf ("blkmig %s", commands[i].name);
      g_set_prgname (prgname);  /* --help then says "blkmig move [OPTION...]" */
      if (commands[i].func (argc - 1, argv + 1, cancellable, &error))
        {
          events_close ();
          return 0;
        }
      report_error (commands[i].name, error);
      return blkmig_error_exit_code (error);
    }
  g_printerr ("blkmig: unknown command '%s' (try blkmig --help)\n", argv[1]);
  return BLKMIG_ERROR_USAGE;
}
