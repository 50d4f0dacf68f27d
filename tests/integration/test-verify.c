/* Integration tests of `blkmig verify`: sparse images, one flipped byte, NBD URIs. */
#include <stdio.h>

#include "tests/integration/harness.h"

#define GiB ((gint64) 1 << 30)
#define MiB ((gint64) 1 << 20)
#define DISK_SIZE (4 * GiB)

/* Where the test images hold data (1 MiB each); the rest is holes. */
static const gint64 data_at[] = { 0, 1 * GiB + 3 * MiB, 2500 * MiB, DISK_SIZE - MiB };

/* A 4 GiB sparse image with the same data as every other one made here. */
static char *
make_image (Rig *rig, const char *name, const char *format)
{
  char *path = rig_path (rig, name);

  img_create (path, format, "4G");
  for (gsize i = 0; i < G_N_ELEMENTS (data_at); i++)
    {
      g_autofree char *offset = g_strdup_printf ("%" G_GINT64_FORMAT, data_at[i]);
      img_write (path, format, 0x10 + (int) i, offset, "1M");
    }
  return path;
}

/* Writes 0x01 over the byte at @offset, which differs from whatever was there. */
static void
flip_byte (const char *path, gint64 offset)
{
  g_autofree char *where = g_strdup_printf ("%" G_GINT64_FORMAT, offset);

  img_write (path, "qcow2", 0x01, where, "1");
}

/* Runs verify on two images that must be identical; returns the hole bytes. */
static gint64
verify_identical (const char *a, const char *b)
{
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;
  gint64 size = 0, holes = 0;
  double seconds = 0;
  gint64 start = g_get_monotonic_time ();

  g_assert_cmpint (blkmig_run (&out, &err, "verify", a, b, NULL), ==, 0);
  g_test_message ("verify took %.3f s: %s", (g_get_monotonic_time () - start) / 1e6,
                  g_strchomp (out));
  g_assert_cmpstr (err, ==, "");
  g_assert_cmpint (sscanf (out, "identical: %" G_GINT64_FORMAT " bytes compared (%"
                           G_GINT64_FORMAT " in holes) in %lf s\n", &size, &holes, &seconds),
                   ==, 3);
  g_assert_cmpint (size, ==, DISK_SIZE);
  return holes;
}

static void
verify_differs_at (const char *a, const char *b, gint64 offset)
{
  g_autofree char *err = NULL;
  g_autofree char *expected = NULL;

  expected = g_strdup_printf ("blkmig verify: %s and %s differ: first difference at offset %"
                              G_GINT64_FORMAT ", 1 byte differs\n", a, b, offset);
  g_assert_cmpint (blkmig_run (NULL, &err, "verify", a, b, NULL), ==, 4);
  g_assert_cmpstr (err, ==, expected);
}

static void
test_verify_identical_sparse (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *a = make_image (rig, "a.qcow2", "qcow2");
  g_autofree char *b = make_image (rig, "b.qcow2", "qcow2");
  gint64 holes = verify_identical (a, b);
  g_autofree char *out = NULL;

  g_assert_cmpint (holes, >=, DISK_SIZE - 16 * MiB);
  g_assert_cmpint (holes, <=, DISK_SIZE - G_N_ELEMENTS (data_at) * MiB);
  g_assert_cmpint (blkmig_run (&out, NULL, "verify", "--quiet", a, b, NULL), ==, 0);
  g_assert_cmpstr (out, ==, "");
}

/* A random offset anywhere in the disk: data or hole. */
static void
test_verify_flipped_byte (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *a = make_image (rig, "a.qcow2", "qcow2");
  g_autofree char *b = make_image (rig, "b.qcow2", "qcow2");
  gint64 offset = ((gint64) g_test_rand_int_range (0, 1 << 16) << 16)
                  | g_test_rand_int_range (0, 1 << 16);

  g_test_message ("flipping the byte at %" G_GINT64_FORMAT, offset);
  flip_byte (b, offset);
  verify_differs_at (a, b, offset);
}

/* A random offset inside one of the data ranges. */
static void
test_verify_flipped_data_byte (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *a = make_image (rig, "a.qcow2", "qcow2");
  g_autofree char *b = make_image (rig, "b.qcow2", "qcow2");
  gint64 offset = data_at[g_test_rand_int_range (0, G_N_ELEMENTS (data_at))]
                  + g_test_rand_int_range (0, MiB);

  g_test_message ("flipping the byte at %" G_GINT64_FORMAT, offset);
  flip_byte (b, offset);
  verify_differs_at (a, b, offset);
}

static void
test_verify_raw_vs_qcow2 (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *raw = make_image (rig, "a.raw", "raw");
  g_autofree char *qcow2 = make_image (rig, "b.qcow2", "qcow2");

  g_assert_cmpint (verify_identical (raw, qcow2), >=, DISK_SIZE - 16 * MiB);
}

/* One side exported by a running QEMU that holds the image open. */
static void
test_verify_nbd_uri (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *image = make_image (rig, "vda.qcow2", "qcow2");
  g_autofree char *copy = make_image (rig, "copy.qcow2", "qcow2");
  g_autofree char *sock = rig_path (rig, "nbd.sock");
  g_autofree char *args = NULL;
  g_autofree char *uri = NULL;
  VmDisk disks[] = { { "vda", image, "qcow2" }, { NULL } };
  Vm *vm = vm_start (rig, "vm", disks, "paused nodevices");
  g_autoptr(JsonNode) started = NULL;
  g_autoptr(JsonNode) added = NULL;

  args = g_strdup_printf ("{\"addr\":{\"type\":\"unix\",\"data\":{\"path\":\"%s\"}}}", sock);
  started = vm_qmp (vm, "nbd-server-start", args);
  added = vm_qmp (vm, "block-export-add",
                  "{\"type\":\"nbd\",\"id\":\"vda\",\"node-name\":\"vda\",\"name\":\"vda\"}");
  uri = g_strdup_printf ("nbd+unix:///vda?socket=%s", sock);
  verify_identical (uri, copy);
  /* The image itself too, while QEMU has it open. */
  verify_identical (image, uri);
}

static void
test_verify_size_mismatch (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *a = make_image (rig, "a.qcow2", "qcow2");
  g_autofree char *b = rig_path (rig, "b.raw");
  g_autofree char *err = NULL;
  g_autofree char *expected = NULL;

  img_create (b, "raw", "2G");
  expected = g_strdup_printf ("blkmig verify: %s is 4294967296 bytes, %s is 2147483648 bytes\n",
                              a, b);
  g_assert_cmpint (blkmig_run (NULL, &err, "verify", a, b, NULL), ==, 4);
  g_assert_cmpstr (err, ==, expected);
}

static void
test_verify_usage (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *a = make_image (rig, "a.qcow2", "qcow2");
  g_autofree char *err = NULL;
  g_autofree char *missing = rig_path (rig, "missing.qcow2");

  g_assert_cmpint (blkmig_run (NULL, &err, "verify", a, NULL), ==, 2);
  g_assert_cmpstr (err, ==, "blkmig verify: expected two disks to compare: A B\n");
  g_assert_cmpint (blkmig_run (NULL, NULL, "verify", a, missing, NULL), ==, 4);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/verify/identical-sparse", test_verify_identical_sparse);
  g_test_add_func ("/verify/flipped-byte", test_verify_flipped_byte);
  g_test_add_func ("/verify/flipped-data-byte", test_verify_flipped_data_byte);
  g_test_add_func ("/verify/raw-vs-qcow2", test_verify_raw_vs_qcow2);
  g_test_add_func ("/verify/nbd-uri", test_verify_nbd_uri);
  g_test_add_func ("/verify/size-mismatch", test_verify_size_mismatch);
  g_test_add_func ("/verify/usage", test_verify_usage);
  return g_test_run ();
}
