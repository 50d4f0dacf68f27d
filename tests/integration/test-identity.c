/* Integration tests of nbd_layer_identity(): copies, one byte, overlays, raw, a running VM. */
#include <string.h>

#include "tests/integration/harness.h"

#include "common/error.h"
#include "nbd/identity.h"

#define MiB ((gint64) 1 << 20)

/* The identity of @path, which must be computable. */
static char *
identity_of (const char *path, const char *format)
{
  g_autoptr(GError) error = NULL;
  char *identity = nbd_layer_identity (path, format, NULL, &error);

  g_assert_no_error (error);
  g_assert_nonnull (identity);
  g_assert_true (g_str_has_prefix (identity, "sha256:"));
  g_assert_cmpuint (strlen (identity), ==, 7 + 64);
  for (const char *c = identity + 7; *c != '\0'; c++)
    g_assert_true (g_ascii_isxdigit (*c) && !g_ascii_isupper (*c));
  return identity;
}

/* Runs a tool that must succeed, its output dropped. */
static void
run_quietly (const char *const *argv)
{
  int status = -1;

  g_assert_true (g_spawn_sync (NULL, (char **) argv, NULL,
                               G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL,
                               NULL, NULL, &status, NULL));
  g_assert_true (g_spawn_check_wait_status (status, NULL));
}

/* qemu-io write -z: zero clusters in a qcow2. */
static void
img_write_zeroes (const char *path, const char *offset, const char *len)
{
  g_autofree char *cmd = g_strdup_printf ("write -z %s %s", offset, len);
  const char *argv[] = { "qemu-io", "-f", "qcow2", "-c", cmd, path, NULL };

  run_quietly (argv);
}

/* A 64 MiB qcow2 with data at 0 and 40 MiB, zero clusters at 20 MiB. */
static char *
make_qcow2 (Rig *rig, const char *name)
{
  char *path = rig_path (rig, name);

  img_create (path, "qcow2", "64M");
  img_write (path, "qcow2", 0x11, "0", "1M");
  img_write (path, "qcow2", 0x22, "40M", "3M");
  img_write_zeroes (path, "20M", "1M");
  return path;
}

/* (1) A copy of the file has the same identity; rewriting the same bytes keeps it. */
static void
test_identity_copy (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *a = make_qcow2 (rig, "a.qcow2");
  g_autofree char *b = rig_path (rig, "b.qcow2");
  g_autofree char *id_a = identity_of (a, "qcow2");
  g_autofree char *id_b = NULL;
  g_autofree char *id_again = NULL;

  file_copy_sparse (a, b);
  id_b = identity_of (b, "qcow2");
  g_assert_cmpstr (id_a, ==, id_b);
  img_write (b, "qcow2", 0x22, "41M", "64k");
  id_again = identity_of (b, "qcow2");
  g_assert_cmpstr (id_a, ==, id_again);
}

/* A run's record as nbd/identity.c hashes it: kind, offset, length (big-endian),
 * and for data its bytes (all @pattern here). */
static void
expect_run (GChecksum *sum, char kind, gint64 offset, gint64 length, int pattern)
{
  guchar record[17] = { (guchar) kind };
  guint64 be[2] = { GUINT64_TO_BE ((guint64) offset), GUINT64_TO_BE ((guint64) length) };
  g_autofree guchar *bytes = NULL;

  memcpy (record + 1, be, sizeof be);
  g_checksum_update (sum, record, sizeof record);
  if (kind != 'D')
    return;
  bytes = g_malloc (length);
  memset (bytes, pattern, length);
  g_checksum_update (sum, bytes, length);
}

/* The hashed layout, pinned (identities are compared between hosts): one record
 * per run of a kind, a data run across the 1 GiB block status requests being one. */
static void
test_identity_layout (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *path = rig_path (rig, "a.qcow2");
  g_autoptr(GChecksum) sum = g_checksum_new (G_CHECKSUM_SHA256);
  g_autofree char *expected = NULL;
  g_autofree char *identity = NULL;
  const char *tag = "blkmig layer identity 1\n";

  img_create (path, "qcow2", "2G");
  img_write (path, "qcow2", 0x11, "1023M", "2M");
  img_write_zeroes (path, "1536M", "1M");
  g_checksum_update (sum, (const guchar *) tag, strlen (tag));
  expect_run (sum, 'U', 0, 1023 * MiB, 0);
  expect_run (sum, 'D', 1023 * MiB, 2 * MiB, 0x11);
  expect_run (sum, 'U', 1025 * MiB, 511 * MiB, 0);
  expect_run (sum, 'Z', 1536 * MiB, MiB, 0);
  expect_run (sum, 'U', 1537 * MiB, 511 * MiB, 0);
  expected = g_strconcat ("sha256:", g_checksum_get_string (sum), NULL);
  identity = identity_of (path, "qcow2");
  g_assert_cmpstr (identity, ==, expected);
}

/* (2) One byte of data changed, a byte written into a hole, a zero cluster where
 * nothing was allocated: each gives another identity. */
static void
test_identity_changes (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *a = make_qcow2 (rig, "a.qcow2");
  g_autofree char *b = make_qcow2 (rig, "b.qcow2");
  g_autofree char *c = make_qcow2 (rig, "c.qcow2");
  g_autofree char *d = make_qcow2 (rig, "d.qcow2");
  g_autofree char *id_a = identity_of (a, "qcow2");
  g_autofree char *id_b = NULL;
  g_autofree char *id_c = NULL;
  g_autofree char *id_d = NULL;

  img_write (b, "qcow2", 0x23, "41M", "1");
  img_write (c, "qcow2", 0x00, "10M", "1");
  img_write_zeroes (d, "30M", "64k");
  id_b = identity_of (b, "qcow2");
  id_c = identity_of (c, "qcow2");
  id_d = identity_of (d, "qcow2");
  g_assert_cmpstr (id_a, !=, id_b);
  g_assert_cmpstr (id_a, !=, id_c);
  g_assert_cmpstr (id_a, !=, id_d);
  g_assert_cmpstr (id_b, !=, id_c);
}

static char *
make_overlay (Rig *rig, const char *name, const char *base)
{
  char *path = rig_path (rig, name);
  const char *argv[] = { "qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2",
                         path, NULL };

  run_quietly (argv);
  return path;
}

/* (3) Overlays on the same base differ by their own data only; an overlay's
 * identity ignores its backing file. */
static void
test_identity_overlay (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *base = make_qcow2 (rig, "base.qcow2");
  g_autofree char *x = make_overlay (rig, "x.qcow2", base);
  g_autofree char *y = make_overlay (rig, "y.qcow2", base);
  g_autofree char *empty = make_overlay (rig, "empty.qcow2", base);
  g_autofree char *alone = rig_path (rig, "alone.qcow2");
  g_autofree char *id_base = identity_of (base, "qcow2");
  g_autofree char *id_x = NULL;
  g_autofree char *id_y = NULL;
  g_autofree char *id_x_after = NULL;
  g_autofree char *id_empty = NULL;
  g_autofree char *id_alone = NULL;

  img_write (x, "qcow2", 0x33, "8M", "1M");
  img_write (y, "qcow2", 0x34, "8M", "1M");
  id_x = identity_of (x, "qcow2");
  id_y = identity_of (y, "qcow2");
  g_assert_cmpstr (id_x, !=, id_y);
  g_assert_cmpstr (id_x, !=, id_base);
  /* An empty overlay is an empty image of that size, whatever it stacks on. */
  img_create (alone, "qcow2", "64M");
  id_empty = identity_of (empty, "qcow2");
  id_alone = identity_of (alone, "qcow2");
  g_assert_cmpstr (id_empty, ==, id_alone);
  img_write (base, "qcow2", 0x44, "8M", "2M");
  id_x_after = identity_of (x, "qcow2");
  g_assert_cmpstr (id_x, ==, id_x_after);
}

/* (4) A raw image: stable, and a changed byte changes it. */
static void
test_identity_raw (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *raw = rig_path (rig, "a.raw");
  g_autofree char *id_1 = NULL;
  g_autofree char *id_2 = NULL;
  g_autofree char *id_3 = NULL;

  img_create (raw, "raw", "64M");
  img_write (raw, "raw", 0x55, "4M", "2M");
  id_1 = identity_of (raw, "raw");
  id_2 = identity_of (raw, "raw");
  g_assert_cmpstr (id_1, ==, id_2);
  img_write (raw, "raw", 0x56, "5M", "1");
  id_3 = identity_of (raw, "raw");
  g_assert_cmpstr (id_1, !=, id_3);
}

/* (5) The base of a running VM's disk, and the disk itself, while QEMU has them open. */
static void
test_identity_running_vm (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *base = make_qcow2 (rig, "base.qcow2");
  g_autofree char *vda = make_overlay (rig, "vda.qcow2", base);
  g_autofree char *id_base = identity_of (base, "qcow2");
  g_autofree char *id_vda = identity_of (vda, "qcow2");
  g_autofree char *id_base_running = NULL;
  g_autofree char *id_vda_running = NULL;
  VmDisk disks[] = { { "vda", vda, "qcow2" }, { NULL } };
  Vm *vm = vm_start (rig, "vm", disks, "paused");

  id_base_running = identity_of (base, "qcow2");
  id_vda_running = identity_of (vda, "qcow2");
  g_assert_cmpstr (id_base, ==, id_base_running);
  g_assert_cmpstr (id_vda, ==, id_vda_running);
  vm_stop (vm);
}

/* (6) A file name that must be escaped in the json: filename. */
static void
test_identity_odd_name (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *plain = make_qcow2 (rig, "plain.qcow2");
  g_autofree char *odd = rig_path (rig, "a \"quoted\\name\",x:y.qcow2");
  g_autofree char *id_plain = identity_of (plain, "qcow2");
  g_autofree char *id_odd = NULL;

  file_copy_sparse (plain, odd);
  id_odd = identity_of (odd, "qcow2");
  g_assert_cmpstr (id_plain, ==, id_odd);
}

/* The message of the BLKMIG_ERROR_DISK that hashing @path as @format fails with. */
static char *
identity_error (const char *path, const char *format)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *identity = nbd_layer_identity (path, format, NULL, &error);

  g_assert_null (identity);
  g_assert_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK);
  return g_strdup (error->message);
}

/* (7) Errors are one line naming the file. */
static void
test_identity_errors (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *missing = rig_path (rig, "missing.qcow2");
  g_autofree char *raw = rig_path (rig, "a.raw");
  g_autofree char *want_missing = g_strdup_printf ("cannot read %s: No such file or directory",
                                                   missing);
  g_autofree char *want_raw = g_strdup_printf ("cannot read %s: not a qcow2 image", raw);
  g_autofree char *want_dir = g_strdup_printf ("cannot read %s: not a regular file or block "
                                               "device", rig->dir);
  g_autofree char *want_vmdk = g_strdup_printf ("%s: cannot hash a layer of format 'vmdk'", raw);
  g_autofree char *got_missing = identity_error (missing, "qcow2");
  g_autofree char *got_raw = NULL;
  g_autofree char *got_dir = identity_error (rig->dir, "raw");
  g_autofree char *got_vmdk = NULL;

  img_create (raw, "raw", "1M");
  got_raw = identity_error (raw, "qcow2");
  got_vmdk = identity_error (raw, "vmdk");
  g_assert_cmpstr (got_missing, ==, want_missing);
  g_assert_cmpstr (got_raw, ==, want_raw);
  g_assert_cmpstr (got_dir, ==, want_dir);
  g_assert_cmpstr (got_vmdk, ==, want_vmdk);
}

/* A cancelled hash stops with G_IO_ERROR_CANCELLED. */
static void
test_identity_cancelled (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *a = make_qcow2 (rig, "a.qcow2");
  g_autoptr(GCancellable) cancellable = g_cancellable_new ();
  g_autoptr(GError) error = NULL;

  g_cancellable_cancel (cancellable);
  g_assert_null (nbd_layer_identity (a, "qcow2", cancellable, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/identity/copy", test_identity_copy);
  g_test_add_func ("/identity/layout", test_identity_layout);
  g_test_add_func ("/identity/changes", test_identity_changes);
  g_test_add_func ("/identity/overlay", test_identity_overlay);
  g_test_add_func ("/identity/raw", test_identity_raw);
  g_test_add_func ("/identity/running-vm", test_identity_running_vm);
  g_test_add_func ("/identity/odd-name", test_identity_odd_name);
  g_test_add_func ("/identity/errors", test_identity_errors);
  g_test_add_func ("/identity/cancelled", test_identity_cancelled);
  return g_test_run ();
}
