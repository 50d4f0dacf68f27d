/* Integration tests across QEMU versions and command lines: a source on one QEMU and a
 * destination on the other (run.sh: 7.2 and 10.0, both ways over its two runs), and
 * the four -drive/-blockdev combinations of the two sides. */
#include <glib/gstdio.h>

#include "tests/integration/harness.h"

typedef struct {
  Rig *rig;
  char *src_vda, *src_vdb, *dst_vda, *dst_vdb;
  Vm *src;
  Vm *dst;
} Pair;

/* A case: how each side gives its disks (harness flags), and its mode. */
typedef struct {
  const char *src_flags;
  const char *dst_flags;
  const char *mode;
  const char *dst_status;   /* the destination's afterwards */
} Case;

static void
pair_setup (Pair *p, gconstpointer data)
{
  p->rig = rig_new ();
  p->src_vda = rig_path (p->rig, "src-vda.qcow2");
  p->src_vdb = rig_path (p->rig, "src-vdb.raw");
  p->dst_vda = rig_path (p->rig, "dst-vda.qcow2");
  p->dst_vdb = rig_path (p->rig, "dst-vdb.raw");
  img_create (p->src_vda, "qcow2", "128M");
  img_write (p->src_vda, "qcow2", 0xab, "0", "16M");
  img_create (p->src_vdb, "raw", "32M");
  img_write (p->src_vdb, "raw", 0x11, "4M", "8M");
  img_create (p->dst_vda, "qcow2", "128M");
  img_create (p->dst_vdb, "raw", "32M");
}

static void
pair_teardown (Pair *p, gconstpointer data)
{
  rig_free (p->rig);
  g_free (p->src_vda);
  g_free (p->src_vdb);
  g_free (p->dst_vda);
  g_free (p->dst_vdb);
}

static void
pair_start (Pair *p, const char *src_flags, const char *dst_flags)
{
  VmDisk src_disks[] = { { "vda", p->src_vda, "qcow2" }, { "vdb", p->src_vdb, "raw" }, { NULL } };
  VmDisk dst_disks[] = { { "vda", p->dst_vda, "qcow2" }, { "vdb", p->dst_vdb, "raw" }, { NULL } };

  p->src = vm_start (p->rig, "src", src_disks, src_flags);
  p->dst = vm_start (p->rig, "dst", dst_disks, dst_flags);
}

static void
assert_status (Vm *vm, const char *want)
{
  g_autofree char *status = vm_status (vm);

  g_assert_cmpstr (status, ==, want);
}

/* A migration in @c->mode with guest writes while the mirrors run; the images end
 * identical and nothing of blkmig's is left on either side. */
static void
run_migration (Pair *p, const Case *c)
{
  g_autoptr(GSubprocess) proc = NULL;
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;
  int status;

  pair_start (p, c->src_flags, c->dst_flags);
  proc = blkmig_spawn ("migrate", "--mode", c->mode, "--source", p->src->qmp_path,
                       "--dest", p->dst->qmp_path, "--speed", "16777216", NULL);
  vm_wait_for_jobs (p->src);
  vm_guest_write (p->src, "vda", 0x5a, "100M", "1M");
  vm_guest_write (p->src, "vdb", 0x5c, "1M", "1M");
  status = blkmig_wait (proc, &out, &err);
  if (status != 0)
    g_test_message ("blkmig: %s", err);
  g_assert_cmpint (status, ==, 0);
  g_assert_true (g_str_has_prefix (out, g_str_equal (c->mode, "live") ? "blkmig: completed 2 disks"
                                                                     : "blkmig: copied 2 disks"));
  assert_status (p->src, g_str_equal (c->mode, "live") ? "postmigrate" : "running");
  assert_status (p->dst, c->dst_status);
  g_assert_cmpuint (vm_count_jobs (p->src), ==, 0);
  g_assert_cmpuint (vm_count_blkmig_nodes (p->src), ==, 0);
  g_assert_cmpuint (vm_count_exports (p->dst), ==, 0);
  g_assert_cmpuint (vm_count_blkmig_nodes (p->dst), ==, 0);
  g_assert_cmpuint (rig_count_journals (p->rig), ==, 0);
  g_assert_true (img_identical (p->src_vda, p->dst_vda));
  g_assert_true (img_identical (p->src_vdb, p->dst_vdb));
  g_assert_true (img_has_pattern (p->dst_vda, "qcow2", 0x5a, "100M", "1M"));
}

/* A refused migration: the source runs on, nothing of blkmig's is left anywhere. */
static void
assert_rolled_back (Pair *p)
{
  g_autofree char *status_text = vm_status (p->src);

  g_assert_cmpstr (status_text, ==, "running");
  g_assert_cmpuint (vm_count_blkmig_nodes (p->src), ==, 0);
  g_assert_cmpuint (vm_count_exports (p->dst), ==, 0);
  g_assert_cmpuint (vm_count_blkmig_nodes (p->dst), ==, 0);
  g_assert_cmpuint (rig_count_journals (p->rig), ==, 0);
}

/* An incoming QEMU reopens a disk to export it; a -drive image named by a relative
 * path is then looked up from "/" when QEMU has changed there (-daemonize does). */
static void
test_relative_after_chdir (Pair *p, gconstpointer data)
{
  g_autofree char *err = NULL;
  int status;

  pair_start (p, "drive relative", "incoming drive relative chdir-root");
  status = blkmig_run (NULL, &err, "migrate", "--source", p->src->qmp_path,
                       "--dest", p->dst->qmp_path, NULL);
  g_test_message ("blkmig: %s", err);
  g_assert_cmpint (status, ==, 5);
  g_assert_true (g_str_has_prefix (err, "blkmig migrate: prepare: vda (the destination QEMU could "
                                        "not reopen the image for writing: a -drive image given "
                                        "by a relative path cannot be reopened once QEMU has "
                                        "changed its directory, as -daemonize does; give the "
                                        "destination's images by absolute paths): destination: "
                                        "block-export-add: "));
  assert_rolled_back (p);
}

/* pc-i440fx-MAJOR.MINOR: what "pc" means for a QEMU of @version. */
static char *
pc_machine (const char *version)
{
  g_auto(GStrv) v = g_strsplit (version, ".", 3);

  return g_strdup_printf ("pc-i440fx-%s.%s", v[0], v[1]);
}

/* Both on plain "pc", which names another machine type in each QEMU: prepare
 * refuses before anything moves (QEMU itself would refuse only the memory stream,
 * after every disk was copied). */
static void
test_skew_machine (Pair *p, gconstpointer data)
{
  g_autofree char *err = NULL;
  g_autofree char *want = NULL;
  g_autofree char *mine = NULL;
  g_autofree char *other = NULL;
  g_autofree char *mine_version = NULL;
  g_autofree char *other_version = NULL;

  if (rig_other_qemu () == NULL)
    {
      g_test_skip ("BLKMIG_TEST_OTHER_QEMU is not set (./run.sh test sets it)");
      return;
    }
  mine = pc_machine (mine_version = rig_qemu_version (FALSE));
  other = pc_machine (other_version = rig_qemu_version (TRUE));
  pair_start (p, NULL, "incoming other-qemu");
  g_assert_cmpint (blkmig_run (NULL, &err, "migrate", "--source", p->src->qmp_path,
                               "--dest", p->dst->qmp_path, NULL), ==, 7);
  want = g_strdup_printf ("blkmig migrate: prepare: the source runs machine type %s, the "
                          "destination %s: a live migration needs the same one on both sides "
                          "(QEMU would refuse the stream after the disks are copied); start "
                          "the destination with -machine %s\n", mine, other, mine);
  g_assert_cmpstr (err, ==, want);
  assert_rolled_back (p);
}

/* The destination runs the other QEMU (BLKMIG_TEST_OTHER_QEMU). */
static void
test_skew (Pair *p, gconstpointer data)
{
  const Case *c = data;
  g_autofree char *mine = NULL;
  g_autofree char *other = NULL;

  if (rig_other_qemu () == NULL)
    {
      g_test_skip ("BLKMIG_TEST_OTHER_QEMU is not set (./run.sh test sets it)");
      return;
    }
  mine = rig_qemu_version (FALSE);
  other = rig_qemu_version (TRUE);
  g_test_message ("source QEMU %s, destination QEMU %s", mine, other);
  g_assert_cmpstr (mine, !=, other);
  run_migration (p, c);
}

static void
test_combination (Pair *p, gconstpointer data)
{
  run_migration (p, data);
}

static const Case skew_live = { "machine-7.2", "incoming other-qemu machine-7.2", "live", "running" };
static const Case skew_copy = { "machine-7.2", "paused nodevices other-qemu machine-7.2", "copy",
                                "prelaunch" };
static const Case drive_drive = { "drive", "incoming drive", "live", "running" };
static const Case drive_blockdev = { "drive", "incoming", "live", "running" };
static const Case blockdev_drive = { NULL, "incoming drive", "live", "running" };
static const Case nonode_nonode = { "drive-nonode", "incoming drive-nonode", "live", "running" };
static const Case relative = { "drive relative", "incoming drive relative", "live", "running" };
static const Case drive_copy = { "drive", "incoming drive", "copy", "inmigrate" };

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
#define ADD(path, c, fn) g_test_add (path, Pair, c, pair_setup, fn, pair_teardown)
  ADD ("/qemus/skew/live", &skew_live, test_skew);
  ADD ("/qemus/skew/copy", &skew_copy, test_skew);
  ADD ("/qemus/skew/machine-mismatch", NULL, test_skew_machine);
  ADD ("/qemus/drive/drive-to-drive", &drive_drive, test_combination);
  ADD ("/qemus/drive/drive-to-blockdev", &drive_blockdev, test_combination);
  ADD ("/qemus/drive/blockdev-to-drive", &blockdev_drive, test_combination);
  ADD ("/qemus/drive/no-node-names", &nonode_nonode, test_combination);
  ADD ("/qemus/drive/copy-to-drive", &drive_copy, test_combination);
  ADD ("/qemus/drive/relative-paths", &relative, test_combination);
  ADD ("/qemus/drive/relative-after-chdir", NULL, test_relative_after_chdir);
  return g_test_run ();
}
