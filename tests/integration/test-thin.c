/* Integration tests: a thick raw source (every byte allocated, mostly zeros) stays thin on
 * the target in every mode; zeros travel as zero writes that unmap; the target's
 * pre-zeroing is skipped only where it reads as zeroes. */
#include "tests/integration/harness.h"

#include "qmp/qmp-commands.h"

#define MIB ((gint64) 1 << 20)

typedef struct {
  const char *mode;       /* migrate --mode */
  const char *dst_flags;
  gint64 size_mib;        /* the disk */
  gint64 data_mib;        /* of which non-zero data, in four equal runs */
  gboolean tunnel;        /* through --tunnel-command */
} Case;

typedef struct {
  Rig *rig;
  char *src_img, *dst_img;
} Fixture;

static void
fixture_setup (Fixture *f, gconstpointer data)
{
  f->rig = rig_new ();
  f->src_img = rig_path (f->rig, "src.raw");
  f->dst_img = rig_path (f->rig, "dst.raw");
}

static void
fixture_teardown (Fixture *f, gconstpointer data)
{
  rig_free (f->rig);
  g_free (f->src_img);
  g_free (f->dst_img);
}

/* Zeros written as data over the whole disk (as dd, a thick LVM volume or an RBD
 * image would hold them), then @c->data_mib of pattern in four runs. */
static void
make_thick_source (Fixture *f, const Case *c)
{
  g_autofree char *of = g_strdup_printf ("of=%s", f->src_img);
  g_autofree char *count = g_strdup_printf ("count=%" G_GINT64_FORMAT, c->size_mib);
  const char *argv[] = { "dd", "if=/dev/zero", of, "bs=1M", count, "conv=fsync", "status=none",
                         NULL };
  g_autoptr(GError) error = NULL;
  g_autoptr(GSubprocess) dd = g_subprocess_newv (argv, G_SUBPROCESS_FLAGS_NONE, &error);

  g_assert_no_error (error);
  g_assert_true (g_subprocess_wait_check (dd, NULL, &error));
  g_assert_cmpint (file_allocated (f->src_img), >=, c->size_mib * MIB);
  for (int i = 0; i < 4; i++)
    {
      g_autofree char *offset = g_strdup_printf ("%" G_GINT64_FORMAT "M", i * c->size_mib / 4);
      g_autofree char *len = g_strdup_printf ("%" G_GINT64_FORMAT "M", c->data_mib / 4);
      img_write (f->src_img, "raw", 0x5a + i, offset, len);
    }
}

static void
test_thin (Fixture *f, gconstpointer data)
{
  const Case *c = data;
  g_autofree char *size = NULL;

  if (c->tunnel && rig_first_pass_only ("thin targets through blkmig's tunnel"))
    return;
  size = g_strdup_printf ("%" G_GINT64_FORMAT "M", c->size_mib);
  g_autofree char *command = g_strdup_printf ("%s tunnel-endpoint --nbd-socket {nbd-socket}",
                                              g_getenv ("BLKMIG"));
  VmDisk src_disks[] = { { "vda", f->src_img, "raw" }, { NULL } };
  VmDisk dst_disks[] = { { "vda", f->dst_img, "raw" }, { NULL } };
  Vm *src, *dst;
  gint64 allocated;

  make_thick_source (f, c);
  img_create (f->dst_img, "raw", size);
  src = vm_start (f->rig, "src", src_disks, NULL);
  dst = vm_start (f->rig, "dst", dst_disks, c->dst_flags);
  g_assert_cmpint (blkmig_run (NULL, NULL, "migrate", "-q", "--mode", c->mode,
                               "--source", src->qmp_path, "--dest", dst->qmp_path,
                               c->tunnel ? "--tunnel-command" : NULL, command, NULL), ==, 0);
  vm_stop (src);
  vm_stop (dst);
  g_assert_true (img_identical (f->src_img, f->dst_img));
  allocated = file_allocated (f->dst_img);
  g_test_message ("target allocation %" G_GINT64_FORMAT " MiB for %" G_GINT64_FORMAT
                  " MiB of data", allocated / MIB, c->data_mib);
  g_assert_cmpint (allocated, <=, c->data_mib * MIB * 105 / 100);
}

/* blkmig move: the new image stays thin; after the pivot the guest's node scans
 * writes for zeros no more (detect-zeroes back to the old disk's "off") and the
 * guest's writes land in the new image. */
static void
test_move (Fixture *f, gconstpointer data)
{
  const Case *c = data;
  VmDisk disks[] = { { "vda", f->src_img, "raw" }, { NULL } };
  g_autoptr(JsonNode) nodes = NULL;
  g_autofree char *moved = NULL;
  g_autofree char *file = NULL;
  gint64 allocated;
  Vm *vm;

  make_thick_source (f, c);
  vm = vm_start (f->rig, "vm", disks, NULL);
  g_assert_cmpint (blkmig_run (NULL, NULL, "move", "-q", "--qmp", vm->qmp_path, "--disk", "vda",
                               "--to", f->dst_img, NULL), ==, 0);
  file = vm_disk_file (vm, "vda");
  g_assert_cmpstr (file, ==, f->dst_img);
  nodes = vm_qmp (vm, "query-block", NULL);
  moved = json_to_string (nodes, FALSE);
  g_assert_nonnull (strstr (moved, "\"detect_zeroes\":\"off\""));
  g_assert_null (strstr (moved, "\"detect_zeroes\":\"unmap\""));
  vm_guest_write (vm, "vda", 0x77, "1M", "1M");
  vm_stop (vm);
  g_assert_true (img_has_pattern (f->dst_img, "raw", 0x77, "1M", "1M"));
  allocated = file_allocated (f->dst_img);
  g_test_message ("target allocation %" G_GINT64_FORMAT " MiB for %" G_GINT64_FORMAT
                  " MiB of data", allocated / MIB, c->data_mib);
  g_assert_cmpint (allocated, <=, c->data_mib * MIB * 105 / 100);
}

/* QEMU before 8.2 (on either end) pre-zeroes an NBD target a round trip per
 * 32 MiB, so blkmig asks whether the target reads as zeroes; 8.2 and later do it
 * in one request and are not asked about. */
static gboolean
prezero_is_asked (void)
{
  g_autofree char *version = rig_qemu_version (FALSE);

  return !qmp_version_at_least (version, 8, 2);
}

/* A qcow2 source whose unallocated clusters (which a sync=top mirror leaves alone)
 * sit where the target is zero, or (@data TRUE) where it holds old data: skipping
 * the pre-zeroing there would leave that data in the copy. */
static void
test_prezero (Fixture *f, gconstpointer data)
{
  gboolean dirty = GPOINTER_TO_INT (data);
  g_autofree char *src_img = rig_path (f->rig, "src.qcow2");
  g_autofree char *err = NULL;
  VmDisk src_disks[] = { { "vda", src_img, "qcow2" }, { NULL } };
  VmDisk dst_disks[] = { { "vda", f->dst_img, "raw" }, { NULL } };
  Vm *src, *dst;

  img_create (src_img, "qcow2", "1G");
  img_write (src_img, "qcow2", 0x5a, "0", "1M");
  img_write (src_img, "qcow2", 0x5b, "700M", "1M");
  img_create (f->dst_img, "raw", "1G");
  if (dirty)
    img_write (f->dst_img, "raw", 0x66, "300M", "1M");
  src = vm_start (f->rig, "src", src_disks, NULL);
  dst = vm_start (f->rig, "dst", dst_disks, "paused nodevices unmap");
  g_assert_cmpint (blkmig_run (NULL, &err, "migrate", "-q", "--debug", "--mode", "copy",
                               "--source", src->qmp_path, "--dest", dst->qmp_path, NULL), ==, 0);
  vm_stop (src);
  vm_stop (dst);
  g_assert_true (img_identical (src_img, f->dst_img));
  if (!prezero_is_asked ())
    {
      g_assert_null (strstr (err, "pre-zeroing"));
      g_assert_nonnull (strstr (err, "\"sync\":\"full\""));
    }
  else if (dirty)
    {
      g_assert_nonnull (strstr (err, "vda: pre-zeroing the target stays: not everything reads "
                                     "as zeroes"));
      g_assert_nonnull (strstr (err, "\"sync\":\"full\""));
    }
  else
    {
      g_assert_nonnull (strstr (err, "vda: pre-zeroing the target skipped (sync top): it reads "
                                     "as zeroes"));
      g_assert_nonnull (strstr (err, "\"sync\":\"top\""));
    }
}

static const Case copy_2g = { "copy", "paused nodevices unmap", 2048, 256, FALSE };
static const Case live = { "live", "incoming unmap", 512, 64, FALSE };
static const Case tunnel = { "copy", "paused nodevices unmap", 512, 64, TRUE };
static const Case move = { "move", NULL, 512, 64, FALSE };

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add ("/thin/copy-2g", Fixture, &copy_2g, fixture_setup, test_thin, fixture_teardown);
  g_test_add ("/thin/live", Fixture, &live, fixture_setup, test_thin, fixture_teardown);
  g_test_add ("/thin/tunnel", Fixture, &tunnel, fixture_setup, test_thin, fixture_teardown);
  g_test_add ("/thin/move", Fixture, &move, fixture_setup, test_move, fixture_teardown);
  g_test_add ("/thin/prezero-zero-target", Fixture, GINT_TO_POINTER (FALSE), fixture_setup,
              test_prezero, fixture_teardown);
  g_test_add ("/thin/prezero-dirty-target", Fixture, GINT_TO_POINTER (TRUE), fixture_setup,
              test_prezero, fixture_teardown);
  return g_test_run ();
}
