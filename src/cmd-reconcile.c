/* blkmig reconcile: after a crash, decide from storage and the journal which leaf is authoritative. */
#include <glib/gstdio.h>
#include <stdio.h>

#include "common/error.h"
#include "qmp/qmp-json.h"
#include "src/commands.h"
#include "src/journal.h"

typedef struct {
  const char *authoritative;
  const char *stale;          /* a blkmig-created target to remove, or NULL */
  const char *reason;
} Decision;

/* qemu-img info [--backing-chain] --output=json; @force_share FALSE checks the lock. */
static JsonNode *
reconcile_qemu_img_info (const char *image, gboolean chain, gboolean force_share, GError **error)
{
  g_autoptr(GSubprocess) proc = NULL;
  g_autoptr(GPtrArray) argv = g_ptr_array_new ();
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;

  g_ptr_array_add (argv, "qemu-img");
  g_ptr_array_add (argv, "info");
  g_ptr_array_add (argv, "--output=json");
  if (force_share)
    g_ptr_array_add (argv, "-U");
  if (chain)
    g_ptr_array_add (argv, "--backing-chain");
  g_ptr_array_add (argv, (char *) image);
  g_ptr_array_add (argv, NULL);
  proc = g_subprocess_newv ((const char *const *) argv->pdata,
                            G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_PIPE, error);
  if (proc == NULL || !g_subprocess_communicate_utf8 (proc, NULL, NULL, &out, &err, error))
    return NULL;
  if (g_subprocess_get_successful (proc))
    return json_from_string (out, error);
  g_strstrip (err);
  if (strstr (err, "lock") != NULL)
    g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                 "%s is in use (a QEMU holds its lock): reconcile works on offline images; "
                 "for a running VM use blkmig recover", image);
  else
    g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK, "cannot read %s: %s", image, err);
  return NULL;
}

static gboolean
reconcile_same_file (const char *a, const char *b)
{
  GStatBuf sa, sb;

  if (a == NULL || b == NULL)
    return FALSE;
  if (g_stat (a, &sa) == 0 && g_stat (b, &sb) == 0)
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
  return g_str_equal (a, b);
}

/* The move journal that names @image as its old leaf or its new target. */
static Journal *
reconcile_find_journal (const char *image, const char *path, GError **error)
{
  g_autoptr(GPtrArray) all = NULL;

  if (path != NULL)
    return journal_load (path, error);
  all = journal_load_all (error);
  if (all == NULL)
    return NULL;
  for (guint i = 0; i < all->len; i++)
    {
      Journal *journal = all->pdata[i];
      if (g_str_equal (journal->command, "move")
          && (reconcile_same_file (image, journal->old_image)
              || reconcile_same_file (image, journal->new_image)))
        return g_ptr_array_steal_index (all, i);
    }
  return NULL;
}

/* The rule, as vdsm's ILLEGAL leaf: until blkmig marked the old leaf superseded the
 * pivot was never asked for, so the old leaf holds every write.  Once marked, the
 * write-blocking mirror had the new image in sync and every later write reached it,
 * so the new image is never behind: it is authoritative, if it is there to read. */
static Decision
reconcile_decide (const Journal *journal, gboolean new_readable)
{
  gboolean marked = journal->step == JOURNAL_STEP_SUPERSEDED
                    || journal->step == JOURNAL_STEP_PIVOTED;

  if (!marked)
    return (Decision) { journal->old_image, journal->new_image,
                        "the pivot was never asked for: the old leaf has every write" };
  if (!new_readable)
    return (Decision) { journal->old_image, NULL,
                        "the pivot was asked for but the new image cannot be read: the old "
                        "leaf is the only copy left" };
  return (Decision) { journal->new_image, NULL,
                      journal->step == JOURNAL_STEP_PIVOTED
                        ? "the pivot completed: the guest ran on the new image"
                        : "the pivot was asked for: the new image was in sync and may hold "
                          "writes the old leaf lacks" };
}

static gboolean
reconcile_readable (const char *image, gint64 want_size)
{
  g_autoptr(JsonNode) info = image != NULL && g_file_test (image, G_FILE_TEST_EXISTS)
                             ? reconcile_qemu_img_info (image, FALSE, TRUE, NULL) : NULL;

  return qmp_member_int (qmp_node_object (info), "virtual-size", -1) == want_size;
}

static gint64
reconcile_size (const char *image)
{
  g_autoptr(JsonNode) info = reconcile_qemu_img_info (image, FALSE, TRUE, NULL);

  return qmp_member_int (qmp_node_object (info), "virtual-size", -1);
}

static void
reconcile_print (const char *image, const Journal *journal, const Decision *d, JsonNode *chain,
                 gboolean fixed)
{
  g_autoptr(JsonBuilder) b = json_builder_new ();
  g_autoptr(JsonNode) root = NULL;
  g_autofree char *text = NULL;

  json_builder_begin_object (b);
  json_builder_set_member_name (b, "image");
  json_builder_add_string_value (b, image);
  json_builder_set_member_name (b, "journal");
  journal != NULL ? json_builder_add_string_value (b, journal->path) : json_builder_add_null_value (b);
  json_builder_set_member_name (b, "step");
  journal != NULL ? json_builder_add_string_value (b, journal_step_to_string (journal->step)) : json_builder_add_null_value (b);
  json_builder_set_member_name (b, "authoritative");
  json_builder_add_string_value (b, d->authoritative);
  json_builder_set_member_name (b, "stale");
  d->stale != NULL && g_file_test (d->stale, G_FILE_TEST_EXISTS)
    ? json_builder_add_string_value (b, d->stale) : json_builder_add_null_value (b);
  json_builder_set_member_name (b, "reason");
  json_builder_add_string_value (b, d->reason);
  json_builder_set_member_name (b, "fixed");
  json_builder_add_boolean_value (b, fixed);
  json_builder_set_member_name (b, "chain");
  json_builder_add_value (b, json_node_copy (chain));
  json_builder_end_object (b);
  root = json_builder_get_root (b);
  text = json_to_string (root, TRUE);
  printf ("%s\n", text);
}

/* --fix: remove the target blkmig created if it lost, and close the journal. */
static void
reconcile_fix (Journal *journal, const Decision *d)
{
  if (d->stale != NULL)
    g_unlink (d->stale);
  journal_remove (journal);
}

static gboolean
reconcile_run (const char *image, const char *journal_path, gboolean fix, GError **error)
{
  g_autoptr(JsonNode) lock_check = reconcile_qemu_img_info (image, FALSE, FALSE, error);
  g_autoptr(Journal) journal = NULL;
  g_autoptr(JsonNode) chain = NULL;
  g_autoptr(GError) find_error = NULL;
  Decision d = {
    .authoritative = image, .reason = "no blkmig operation is recorded for this image",
  };

  if (lock_check == NULL)
    return FALSE;
  journal = reconcile_find_journal (image, journal_path, journal_path != NULL ? error : &find_error);
  if (journal == NULL && journal_path != NULL)
    return FALSE;
  if (journal != NULL && !g_str_equal (journal->command, "move"))
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "%s is a %s journal: reconcile handles interrupted moves; use blkmig "
                        "recover", journal->path, journal->command), FALSE;
  if (journal != NULL)
    d = reconcile_decide (journal, reconcile_readable (journal->new_image,
                                                       reconcile_size (journal->old_image)));
  chain = reconcile_qemu_img_info (d.authoritative, TRUE, TRUE, error);
  if (chain == NULL)
    return FALSE;
  if (fix && journal != NULL)
    reconcile_fix (journal, &d);
  reconcile_print (image, journal, &d, chain, fix && journal != NULL);
  return TRUE;
}

gboolean
cmd_reconcile (int argc, char **argv, GCancellable *cancellable, GError **error)
{
  g_autofree char *journal = NULL;
  gboolean fix = FALSE;
  const GOptionEntry entries[] = {
    { "journal", 'j', 0, G_OPTION_ARG_FILENAME, &journal,
      "The move's journal (default: the one that names IMAGE)", "FILE" },
    { "fix", 0, 0, G_OPTION_ARG_NONE, &fix,
      "Remove the target that lost and close the journal", NULL },
    G_OPTION_ENTRY_NULL
  };

  if (!command_parse (&argc, &argv, "IMAGE", "For an offline image whose move was interrupted, "
                      "decide which leaf is authoritative and print its chain as JSON.",
                      entries, error))
    return FALSE;
  if (argc != 2)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE, "expected one IMAGE"), FALSE;
  return reconcile_run (argv[1], journal, fix, error);
}
