/* Unit tests for the names blkmig gives what it creates in QEMU (src/names.c). */
#include <glib.h>

#include "src/names.h"

#define ID "0f3c1a2b4d5e6f708192a3b4c5d6e7f8"
#define OTHER "0f3c1a2c4d5e6f708192a3b4c5d6e7f8"

static void
assert_name (char *name, const char *expected)
{
  g_assert_cmpstr (name, ==, expected);
  g_assert_true (names_owns (ID, name));
  g_assert_false (names_owns (OTHER, name));
  g_free (name);
}

/* The forms design.md documents; QEMU and old journals know them by these. */
static void
test_forms (void)
{
  assert_name (names_job (ID, 0), "blkmig-0f3c1a2b-0");
  assert_name (names_export (ID, 3), "blkmig-0f3c1a2b-3");
  assert_name (names_move_job (ID), "blkmig-0f3c1a2b-move");
  assert_name (names_node (ID, NAMES_NBD_CLIENT, 1), "blkmig0f3c1a2bn1");
  assert_name (names_node (ID, NAMES_FILE_TARGET, 0), "blkmig0f3c1a2bd0");
  assert_name (names_node (ID, NAMES_MOVE_TARGET, 0), "blkmig0f3c1a2bm0");
  assert_name (names_node (ID, NAMES_TLS_SERVER, 0), "blkmig0f3c1a2bt0");
  assert_name (names_node (ID, NAMES_TLS_AUTHZ, 0), "blkmig0f3c1a2bz0");
  assert_name (names_layer_node (ID, 1, 2), "blkmig0f3c1a2bb1.2");
  assert_name (names_layer_export (ID, 1, 2), "blkmig-0f3c1a2b-1.b2");
  g_assert_true (names_owns (ID, "blkmig-0f3c1a2b-1.b2"));
  assert_name (names_node (ID, NAMES_TLS_CLIENT, 0), "blkmig0f3c1a2bc0");
  assert_name (names_verify_export (ID, FALSE), "blkmig0f3c1a2bvo");
  assert_name (names_verify_export (ID, TRUE), "blkmig0f3c1a2bvn");
}

/* replicate's names: the standby's epoch layers, the primary's bitmaps and
 * filters, the standby's commit jobs and resync's backups. */
static void
test_replicate (void)
{
  assert_name (names_epoch_node (ID, 0, 1), "blkmig0f3c1a2be0.1");
  assert_name (names_epoch_node (ID, 3, 12), "blkmig0f3c1a2be3.12");
  assert_name (names_node (ID, NAMES_EPOCH, 2), "blkmig0f3c1a2be2");
  assert_name (names_bitmap (ID, 0), "blkmig-0f3c1a2b-r0");
  assert_name (names_bitmap (ID, 7), "blkmig-0f3c1a2b-r7");
  assert_name (names_bitmap (ID, G_MAXUINT), "blkmig-0f3c1a2b-r4294967295");
  assert_name (names_commit_job (ID, 0, 3), "blkmig-0f3c1a2b-0.c3");
  assert_name (names_commit_job (ID, 2, 10), "blkmig-0f3c1a2b-2.c10");
  assert_name (names_resync_job (ID, 0), "blkmig-0f3c1a2b-0.r");
  assert_name (names_resync_job (ID, 5), "blkmig-0f3c1a2b-5.r");
  assert_name (names_node (ID, NAMES_MIRROR_FILTER, 0), "blkmig0f3c1a2bf0");
  assert_name (names_node (ID, NAMES_MIRROR_FILTER, 4), "blkmig0f3c1a2bf4");
  /* resync's rounds name their bitmaps after the checkpoint's */
  g_assert_true (names_owns (ID, "blkmig-0f3c1a2b-r7.1"));
  g_assert_false (names_owns (OTHER, "blkmig-0f3c1a2b-r7.1"));
  /* distinct from what other steps of the same disk are called */
  {
    g_autofree char *epoch = names_epoch_node (ID, 1, 2);
    g_autofree char *layer = names_layer_node (ID, 1, 2);
    g_autofree char *commit = names_commit_job (ID, 1, 2);
    g_autofree char *export = names_layer_export (ID, 1, 2);
    g_autofree char *resync = names_resync_job (ID, 1);
    g_autofree char *job = names_job (ID, 1);
    g_autofree char *filter = names_node (ID, NAMES_MIRROR_FILTER, 1);
    g_autofree char *client = names_node (ID, NAMES_NBD_CLIENT, 1);

    g_assert_cmpstr (epoch, !=, layer);
    g_assert_cmpstr (commit, !=, export);
    g_assert_cmpstr (resync, !=, job);
    g_assert_cmpstr (filter, !=, client);
  }
}

/* Names that are not ours: another id, the user's own, a near miss, none. */
static void
test_owns (void)
{
  g_assert_false (names_owns (ID, NULL));
  g_assert_false (names_owns (ID, ""));
  g_assert_false (names_owns (ID, "drive0"));
  g_assert_false (names_owns (ID, "blkmig"));
  g_assert_false (names_owns (ID, "blkmig-0f3c1a2b"));
  g_assert_false (names_owns (ID, "blkmig-0f3c1a2"));
  g_assert_false (names_owns (ID, "xblkmig0f3c1a2bn0"));
  g_assert_true (names_owns (ID, "blkmig-0f3c1a2b-"));
}

/* Every name blkmig gives has its id's prefix; other names have none. */
static void
test_id_prefix (void)
{
  const char *id = "0f3c5e2a9b1d4c7e8f60a1b2c3d4e5f6";
  g_autofree char *job = names_job (id, 1);
  g_autofree char *node = names_node (id, NAMES_NBD_CLIENT, 0);
  g_autofree char *layer = names_layer_node (id, 0, 2);
  g_autofree char *bitmap = names_bitmap (id, 3);
  g_autofree char *verify = names_verify_export (id, TRUE);
  const char *const ours[] = { job, node, layer, bitmap, verify };
  const char *const others[] = { "drive-vda", "blkmig", "blkmig-", "blkmig-0f3c5e2a",
                                 "blkmig-0f3c5e2aX", "blkmigXYZ0000000", "blkmig-0F3C5E2A-1",
                                 "#block123", "" };

  for (guint i = 0; i < G_N_ELEMENTS (ours); i++)
    {
      g_autofree char *prefix = names_id_prefix (ours[i]);
      g_assert_cmpstr (prefix, ==, "0f3c5e2a");
    }
  for (guint i = 0; i < G_N_ELEMENTS (others); i++)
    {
      g_autofree char *prefix = names_id_prefix (others[i]);
      g_assert_null (prefix);
    }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/names/forms", test_forms);
  g_test_add_func ("/names/replicate", test_replicate);
  g_test_add_func ("/names/owns", test_owns);
  g_test_add_func ("/names/id-prefix", test_id_prefix);
  return g_test_run ();
}
