/* Regression mode: a harness as a plain program that runs every file of the given corpora once. */
#include "fuzz.h"

#include <glib.h>
#include <stdio.h>
#include <string.h>

/* A harness without set-up does not define it. */
int LLVMFuzzerInitialize (int *argc, char ***argv) __attribute__ ((weak));

static int
replay_file (const char *path)
{
  g_autofree char *data = NULL;
  gsize len = 0;
  g_autoptr(GError) error = NULL;
  g_autofree guint8 *copy = NULL;

  if (!g_file_get_contents (path, &data, &len, &error))
    {
      fprintf (stderr, "replay: %s\n", error->message);
      return -1;
    }
  /* an exact-size copy, so that reading past the end is caught under ASan */
  copy = g_memdup2 (data, len);
  LLVMFuzzerTestOneInput (copy, len);
  return 1;
}

static int
compare_paths (gconstpointer a, gconstpointer b)
{
  return strcmp (*(const char *const *) a, *(const char *const *) b);
}

static int
replay_dir (const char *dir)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GDir) d = g_dir_open (dir, 0, &error);
  g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
  const char *name;
  int count = 0;

  if (d == NULL)
    {
      fprintf (stderr, "replay: %s\n", error->message);
      return -1;
    }
  while ((name = g_dir_read_name (d)) != NULL)
    g_ptr_array_add (names, g_build_filename (dir, name, NULL));
  g_ptr_array_sort (names, compare_paths);
  for (guint i = 0; i < names->len; i++)
    {
      const char *path = g_ptr_array_index (names, i);
      int n = g_file_test (path, G_FILE_TEST_IS_DIR) ? replay_dir (path) : replay_file (path);

      if (n < 0)
        return -1;
      count += n;
    }
  return count;
}

int
main (int argc, char **argv)
{
  int total = 0;

  if (LLVMFuzzerInitialize != NULL)
    LLVMFuzzerInitialize (&argc, &argv);
  if (argc < 2)
    {
      fprintf (stderr, "usage: %s CORPUS-DIR-OR-FILE...\n", argv[0]);
      return 2;
    }
  for (int i = 1; i < argc; i++)
    {
      int n = g_file_test (argv[i], G_FILE_TEST_IS_DIR) ? replay_dir (argv[i])
                                                        : replay_file (argv[i]);
      if (n < 0)
        return 1;
      total += n;
    }
  if (total == 0)
    {
      fprintf (stderr, "replay: no inputs found\n");
      return 1;
    }
  printf ("replayed %d inputs without a failure\n", total);
  return 0;
}
