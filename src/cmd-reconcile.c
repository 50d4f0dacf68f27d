/* blkmig reconcile: after a crash, decide from storage and the journal which leaf is authoritative. */
#include <glib/gstdio.h>
#include <stdio.h>

#include "common/error.h"
#include "common/json.h"
#include "qmp/qmp-json.h"
#include "src/commands.h"
#include "src/journal.h"
#include "src/util.h"

typedef struct {
  const char *authoritative;
  const char *stale;          /* a file that lost, to remove with --fix, or NULL */
  const char *reason;
  int completed;              /* merge: 1 done, 0 not, -1 not a merge */
} Decision;

/* qemu-img info [--backing-chain] (probed, as vdsm does); @force_share FALSE checks the
 * lock, and a lock taken says what to do instead. */
static JsonNode *
reconcile_qemu_img_info (const char *image, gboolean chain, gboolean force_share, GError **error)
{
  g_autoptr(GError) local = NULL;
  g_autofree char *prefix = g_strdup_printf ("cannot read %s: ", image);
  JsonNode *info = util_qemu_img_info (image, NULL, chain, force_share, NULL, &local);

  if (info != NULL)
    return info;
  /* qemu-img's words, not the file's name, say whether a lock was the reason */
  if (g_str_has_prefix (local->message, prefix)
      && strstr (local->message + strlen (prefix), "lock") != NULL)
    g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                 "%s is in use (a QEMU holds its lock): reconcile works on offline images; "
                 "for a running VM use blkmig recover", image);
  else
    g_propagate_error (error, g_steal_pointer (&local));
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

/* Whether @journal is about @image: a move's old leaf or target, any layer a merge
 * saw in the chain. */
static gboolean
reconcile_names (const Journal *journal, const char *image)
{
  if (g_str_equal (journal->command, "move"))
    return reconcile_same_file (image, journal->old_image)
           || reconcile_same_file (image, journal->new_image);
  if (!g_str_equal (journal->command, "merge"))
    return FALSE;
  for (guint i = 0; journal->chain != NULL && journal->chain[i] != NULL; i++)
    if (reconcile_same_file (image, journal->chain[i]))
      return TRUE;
  return FALSE;
}

/* The move or merge journal that names @image. */
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
      if (reconcile_names (journal, image))
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
                        "the pivot was never asked for: the old leaf has every write", -1 };
  if (!new_readable)
    return (Decision) { journal->old_image, NULL,
                        "the pivot was asked for but the new image cannot be read: the old "
                        "leaf is the only copy left", -1 };
  return (Decision) { journal->new_image, NULL,
                      journal->step == JOURNAL_STEP_PIVOTED
                        ? "the pivot completed: the guest ran on the new image"
                        : "the pivot was asked for: the new image was in sync and may hold "
                          "writes the old leaf lacks", -1 };
}

/* An active-layer merge.  The guest was paused from before the superseded mark until
 * "pivoted" was on disk (src/cmd-merge.c): until then the old chain (top over base)
 * holds every write, pivot or not; once recorded, the guest ran on the base, and the
 * top holds nothing the base lacks (they were in sync at the pivot). */
static Decision
reconcile_decide_active (const Journal *journal)
{
  if (journal->step == JOURNAL_STEP_PIVOTED || journal->step == JOURNAL_STEP_COMMITTED)
    return (Decision) { journal->new_image, journal->old_image,
                        "the pivot completed and the guest ran on the base: the old top "
                        "holds nothing the base lacks", 1 };
  if (journal->step == JOURNAL_STEP_SUPERSEDED)
    return (Decision) { journal->old_image, NULL,
                        "the pivot was asked for with the guest paused and not recorded "
                        "as done: the old top over its base has every write either way", 0 };
  return (Decision) { journal->old_image, NULL,
                      "the pivot was never asked for: the top over its base has every write",
                      0 };
}

/* Whether @file is one of the layers @chain (qemu-img info --backing-chain) lists. */
static gboolean
reconcile_chain_has (JsonNode *chain, const char *file)
{
  JsonArray *layers = qmp_node_array (chain);

  for (guint i = 0; i < qmp_array_length (layers); i++)
    if (reconcile_same_file (qmp_member_string (qmp_array_object (layers, i), "filename"),
                             file))
      return TRUE;
  return FALSE;
}

/* An internal merge: QEMU rewrites the backing link above the top when the commit
 * completes, so the active layer's chain tells whether it did; either chain opens. */
static Decision
reconcile_decide_internal (const Journal *journal, JsonNode *chain)
{
  if (reconcile_chain_has (chain, journal->old_image))
    return (Decision) { journal->chain[0], NULL,
                        "the commit did not complete: the chain still holds the top (its "
                        "base may hold part of it, which the top covers)", 0 };
  return (Decision) { journal->chain[0],
                      journal->delete_merged ? journal->old_image : NULL,
                      "the commit completed: the top is out of the chain", 1 };
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

/* "volumes": vdsm's answer, the authoritative leaf first: file, format, virtual size,
 * backing (null at the bottom) */
static void
reconcile_print_volumes (JsonBuilder *b, JsonNode *chain)
{
  JsonArray *layers = qmp_node_array (chain);

  json_builder_set_member_name (b, "volumes");
  json_builder_begin_array (b);
  for (guint i = 0; i < qmp_array_length (layers); i++)
    {
      JsonObject *layer = qmp_array_object (layers, i);

      json_builder_begin_object (b);
      blkmig_json_add_string (b, "file", qmp_member_string (layer, "filename"));
      blkmig_json_add_string (b, "format", qmp_member_string (layer, "format"));
      blkmig_json_add_int (b, "virtual-size", qmp_member_int (layer, "virtual-size", -1));
      blkmig_json_add_string (b, "backing", qmp_member_string (layer, "full-backing-filename"));
      json_builder_end_object (b);
    }
  json_builder_end_array (b);
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
  blkmig_json_add_string (b, "operation", journal != NULL ? journal->command : NULL);
  json_builder_set_member_name (b, "completed");
  d->completed >= 0 ? json_builder_add_boolean_value (b, d->completed)
                    : json_builder_add_null_value (b);
  reconcile_print_volumes (b, chain);
  json_builder_set_member_name (b, "chain");
  json_builder_add_value (b, json_node_copy (chain));
  json_builder_end_object (b);
  root = json_builder_get_root (b);
  text = json_to_string (root, TRUE);
  printf ("%s\n", text);
}

/* --fix: remove the file that lost (a move's target, a merged top), close the journal. */
static void
reconcile_fix (Journal *journal, const Decision *d)
{
  GStatBuf st;

  if (d->stale != NULL && g_lstat (d->stale, &st) == 0 && S_ISREG (st.st_mode))
    g_unlink (d->stale);
  journal_remove (journal);
}

static gboolean
reconcile_decide_journal (const Journal *journal, Decision *d, GError **error)
{
  g_autoptr(JsonNode) active_chain = NULL;

  if (g_str_equal (journal->command, "move"))
    return *d = reconcile_decide (journal, reconcile_readable (journal->new_image,
                                                             reconcile_size (journal->old_image))),
           TRUE;
  if (journal->chain == NULL || journal->chain[0] == NULL || journal->old_image == NULL
      || journal->new_image == NULL)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED,
                        "journal %s: the merge's chain, top or base is missing", journal->path),
           FALSE;
  /* the active layer's lock: a QEMU running the disk again must be asked, not us */
  if (g_file_test (journal->chain[0], G_FILE_TEST_EXISTS)
      && (active_chain = reconcile_qemu_img_info (journal->chain[0], TRUE, FALSE, error)) == NULL)
    return FALSE;
  if (journal->active)
    return *d = reconcile_decide_active (journal), TRUE;
  if (active_chain == NULL)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK, "the active layer %s is gone",
                        journal->chain[0]), FALSE;
  if (active_chain == NULL)
    return FALSE;
  *d = reconcile_decide_internal (journal, active_chain);
  return TRUE;
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
    .completed = -1,
  };

  if (lock_check == NULL)
    return FALSE;
  journal = reconcile_find_journal (image, journal_path, journal_path != NULL ? error : &find_error);
  if (journal == NULL && journal_path != NULL)
    return FALSE;
  if (journal != NULL && !g_str_equal (journal->command, "move")
      && !g_str_equal (journal->command, "merge"))
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "%s is a %s journal: reconcile handles interrupted moves and merges; "
                        "use blkmig recover", journal->path, journal->command), FALSE;
  if (journal != NULL && !reconcile_decide_journal (journal, &d, error))
    return FALSE;
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
      "The move's or merge's journal (default: the one that names IMAGE)", "FILE" },
    { "fix", 0, 0, G_OPTION_ARG_NONE, &fix,
      "Remove the file that lost (a move's target, a merged top) and close the journal", NULL },
    G_OPTION_ENTRY_NULL
  };

  if (!command_parse (&argc, &argv, "IMAGE", "For an offline image whose move or merge was "
                      "interrupted, decide which leaf is authoritative and print its chain as "
                      "JSON.",
                      entries, error))
    return FALSE;
  if (argc != 2)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE, "expected one IMAGE"), FALSE;
  return reconcile_run (argv[1], journal, fix, error);
}
