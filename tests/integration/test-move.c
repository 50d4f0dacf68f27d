/* Integration tests of `blkmig move`: a live local disk move with pivot. */
#include "tests/integration/harness.h"

static Vm *
start_vm (Rig *rig, char **image)
{
  VmDisk disks[] = { { "vda", NULL, "qcow2" }, { NULL } };

  *image = rig_path (rig, "vda.qcow2");
  img_create (*image, "qcow2", "128M");
  img_write (*image, "qcow2", 0xab, "0", "16M");
  img_write (*image, "qcow2", 0xcd, "100M", "4M");
  disks[0].path = *image;
  return vm_start (rig, "vm", disks, NULL);
}

static void
test_move_keeps_source (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *old = NULL;
  g_autofree char *new_path = rig_path (rig, "moved.qcow2");
  g_autofree char *file = NULL;
  Vm *vm = start_vm (rig, &old);

  g_assert_cmpint (blkmig_run (NULL, NULL, "move", "--qmp", vm->qmp_path, "--disk", "vda",
                               "--to", new_path, NULL), ==, 0);
  file = vm_disk_file (vm, "vda");
  g_assert_cmpstr (file, ==, new_path);
  g_assert_true (g_file_test (old, G_FILE_TEST_EXISTS));
  g_assert_true (img_identical (old, new_path));
  g_assert_cmpuint (vm_count_jobs (vm), ==, 0);
  /* The guest now writes to the new image only. */
  vm_guest_write (vm, "vda", 0x42, "1M", "1M");
  g_assert_true (img_has_pattern (new_path, "qcow2", 0x42, "1M", "1M"));
  g_assert_true (img_has_pattern (old, "qcow2", 0xab, "1M", "1M"));
}

static void
test_move_delete_source_raw (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *old = NULL;
  g_autofree char *new_path = rig_path (rig, "moved.raw");
  g_autofree char *file = NULL;
  g_autofree char *err = NULL;
  Vm *vm = start_vm (rig, &old);

  g_assert_cmpint (blkmig_run (NULL, &err, "move", "--qmp", vm->qmp_path, "--disk", "vda",
                               "--to", new_path, "--format", "raw", "--delete-source", NULL),
                   ==, 0);
  file = vm_disk_file (vm, "vda");
  g_assert_cmpstr (file, ==, new_path);
  g_assert_false (g_file_test (old, G_FILE_TEST_EXISTS));
  g_assert_true (img_has_pattern (new_path, "raw", 0xcd, "100M", "4M"));
  g_assert_cmpuint (vm_count_blkmig_nodes (vm), ==, 1);  /* the new image's node */
}

/* --verify: the guest pauses for the pivot, old and new are compared, it runs again. */
static void
test_move_verify (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *old = NULL;
  g_autofree char *new_path = rig_path (rig, "moved.qcow2");
  g_autofree char *err = NULL;
  g_autofree char *file = NULL;
  g_autofree char *status = NULL;
  Vm *vm = start_vm (rig, &old);

  g_assert_cmpint (blkmig_run (NULL, &err, "move", "--verify", "--qmp", vm->qmp_path, "--disk",
                               "vda", "--to", new_path, NULL), ==, 0);
  g_assert_nonnull (strstr (err, "\nblkmig: verified 1 disk: identical ("));
  file = vm_disk_file (vm, "vda");
  g_assert_cmpstr (file, ==, new_path);
  status = vm_status (vm);
  g_assert_cmpstr (status, ==, "running");
  g_assert_cmpuint (vm_count_exports (vm), ==, 0);
  g_assert_true (img_identical (old, new_path));
}

static void
test_move_target_exists (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *old = NULL;
  g_autofree char *err = NULL;
  g_autofree char *file = NULL;
  g_autofree char *expected = NULL;
  Vm *vm = start_vm (rig, &old);

  expected = g_strdup_printf ("blkmig move: vda: %s already exists; move creates its target\n", old);
  g_assert_cmpint (blkmig_run (NULL, &err, "move", "--qmp", vm->qmp_path, "--disk", "vda",
                               "--to", old, NULL), ==, 4);
  g_assert_cmpstr (err, ==, expected);
  file = vm_disk_file (vm, "vda");
  g_assert_cmpstr (file, ==, old);
  g_assert_cmpuint (vm_count_blkmig_nodes (vm), ==, 0);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/move/keeps-source", test_move_keeps_source);
  g_test_add_func ("/move/delete-source-raw", test_move_delete_source_raw);
  g_test_add_func ("/move/target-exists", test_move_target_exists);
  g_test_add_func ("/move/verify", test_move_verify);
  return g_test_run ();
}
