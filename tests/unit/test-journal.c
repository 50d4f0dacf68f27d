/* Unit tests for the journal: the step table and what loading a journal accepts. */
#include <string.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "common/error.h"
#include "src/journal.h"

#define TEST_ID "0f3c1a2b4d5e6f708192a3b4c5d6e7f8"

static char *state_dir;        /* BLKMIG_STATE_DIR of this program, 0700 */

/* Every step has a name, names are distinct and read back as their step. */
static void
test_step_table (void)
{
  g_assert_null (journal_step_to_string (JOURNAL_STEP_NONE));
  g_assert_null (journal_step_to_string (JOURNAL_STEP_LAST));
  for (JournalStep step = JOURNAL_STEP_NONE + 1; step < JOURNAL_STEP_LAST; step++)
    {
      const char *name = journal_step_to_string (step);
      JournalStep back = JOURNAL_STEP_NONE;

      g_assert_nonnull (name);
      g_assert_true (journal_step_from_string (name, &back));
      g_assert_cmpint (back, ==, step);
    }
}

/* The names on disk are the ones journals have always had. */
static void
test_step_names (void)
{
  static const char *const names[] = { "begin", "offered", "prepare", "prepared", "mirror",
                                       "switch", "pre-switchover", "completed", "copied",
                                       "moved", "superseded", "pivoted", "snapshot",
                                       "transaction", "commit", "committed", "ready" };
  JournalStep step;

  g_assert_cmpuint (G_N_ELEMENTS (names), ==, JOURNAL_STEP_LAST - 1);
  for (guint i = 0; i < G_N_ELEMENTS (names); i++)
    g_assert_true (journal_step_from_string (names[i], &step));
  g_assert_false (journal_step_from_string ("superseeded", &step));
  g_assert_false (journal_step_from_string ("", &step));
  g_assert_false (journal_step_from_string (NULL, &step));
}

static void
test_write_load (void)
{
  g_autoptr(Journal) journal = journal_new (TEST_ID, "move");
  g_autoptr(Journal) loaded = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree char *text = NULL;

  g_assert_cmpint (journal->step, ==, JOURNAL_STEP_NONE);
  g_assert_true (journal_write (journal, JOURNAL_STEP_SUPERSEDED, &error));
  g_assert_no_error (error);
  g_assert_true (g_file_get_contents (journal->path, &text, NULL, NULL));
  g_assert_nonnull (strstr (text, "\"superseded\""));
  loaded = journal_load (journal->path, &error);
  g_assert_no_error (error);
  g_assert_cmpint (loaded->step, ==, JOURNAL_STEP_SUPERSEDED);
  journal_remove (journal);
}

/* A step no version of blkmig writes: refused, not taken for "anything else". */
static void
test_unknown_step (void)
{
  g_autofree char *path = g_build_filename (state_dir, TEST_ID "-move.json", NULL);
  g_autofree char *expected = g_strdup_printf ("journal %s: unknown step 'pivoted\\x01'", path);
  g_autoptr(Journal) loaded = NULL;
  g_autoptr(GError) error = NULL;
  const char *text = "{\"version\": 1, \"id\": \"" TEST_ID "\", \"command\": \"move\", "
                     "\"step\": \"pivoted\\u0001\"}";

  g_assert_true (g_file_set_contents (path, text, -1, NULL));
  loaded = journal_load (path, &error);
  g_assert_null (loaded);
  g_assert_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED);
  g_assert_cmpstr (error->message, ==, expected);
  g_assert_cmpint (g_unlink (path), ==, 0);
}

int
main (int argc, char **argv)
{
  int ret;

  g_test_init (&argc, &argv, NULL);
  state_dir = g_dir_make_tmp ("test-journal-state-XXXXXX", NULL);
  g_assert_nonnull (state_dir);
  g_assert_cmpint (g_chmod (state_dir, 0700), ==, 0);
  g_setenv ("BLKMIG_STATE_DIR", state_dir, TRUE);
  g_test_add_func ("/journal/step/table", test_step_table);
  g_test_add_func ("/journal/step/names", test_step_names);
  g_test_add_func ("/journal/step/write-load", test_write_load);
  g_test_add_func ("/journal/step/unknown", test_unknown_step);
  ret = g_test_run ();
  g_rmdir (state_dir);
  g_free (state_dir);
  return ret;
}
