/* Integration test of --copy-mode auto: a guest rewrites its disk faster than a
 * --speed-limited mirror copies it.  Where QEMU has block-job-change (8.2+) the mirror
 * becomes write-blocking and the live migration converges; where it has not (7.2) the
 * migration fails with a message that says why and what to do, and rolls back. */
#include <signal.h>

#include "tests/integration/harness.h"

#define DISK_MIB 32
#define CHUNK_MIB 4

typedef struct {
  Rig *rig;
  char *src_img, *dst_img;
  Vm *src;
  Vm *dst;
} Pair;

static void
pair_setup (Pair *p, gconstpointer data)
{
  VmDisk src_disks[] = { { "vda", NULL, "raw" }, { NULL } };
  VmDisk dst_disks[] = { { "vda", NULL, "raw" }, { NULL } };

  p->rig = rig_new ();
  p->src_img = rig_path (p->rig, "src.raw");
  p->dst_img = rig_path (p->rig, "dst.raw");
  img_create (p->src_img, "raw", G_STRINGIFY (DISK_MIB) "M");
  img_write (p->src_img, "raw", 0x11, "0", G_STRINGIFY (DISK_MIB) "M");
  img_create (p->dst_img, "raw", G_STRINGIFY (DISK_MIB) "M");
  src_disks[0].path = p->src_img;
  dst_disks[0].path = p->dst_img;
  p->src = vm_start (p->rig, "src", src_disks, NULL);
  p->dst = vm_start (p->rig, "dst", dst_disks, "incoming");
}

static void
pair_teardown (Pair *p, gconstpointer data)
{
  rig_free (p->rig);
  g_free (p->src_img);
  g_free (p->dst_img);
}

/* Rewrites the whole disk, chunk after chunk, until blkmig stops itself at the
 * switch step (BLKMIG_TEST_PAUSE_AT=switch) or ends; returns the bytes written. */
static gint64
rewrite_until_stopped (Pair *p, GSubprocess *proc)
{
  gint64 written = 0;

  for (guint i = 0; strchr ("TZ", proc_get_state (proc)) == NULL; i++)
    {
      g_autofree char *offset = g_strdup_printf ("%uM", (i * CHUNK_MIB) % DISK_MIB);

      vm_guest_write (p->src, "vda", 0x20 + i % 64, offset, G_STRINGIFY (CHUNK_MIB) "M");
      written += CHUNK_MIB;
    }
  return written;
}

static GSubprocess *
spawn_migration (Pair *p)
{
  g_setenv ("BLKMIG_TEST_PAUSE_AT", "switch", TRUE);
  return blkmig_spawn ("migrate", "--json", "--source", p->src->qmp_path,
                       "--dest", p->dst->qmp_path, "--speed", "4194304", "--buf-size", "1048576",
                       "--converge-window", "3", "--stall-timeout", "0", NULL);
}

static void
test_switches (Pair *p)
{
  g_autoptr(GSubprocess) proc = spawn_migration (p);
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;
  gint64 written = rewrite_until_stopped (p, proc);
  int status;

  g_test_message ("the guest wrote %" G_GINT64_FORMAT " MiB while the mirror ran", written);
  g_assert_cmpint (written, >, 3 * DISK_MIB);  /* it did outrun the 4 MiB/s copy */
  if (proc_get_state (proc) == 'T')
    kill (atoi (g_subprocess_get_identifier (proc)), SIGCONT);
  status = blkmig_wait (proc, &out, &err);
  g_unsetenv ("BLKMIG_TEST_PAUSE_AT");
  g_test_message ("blkmig: %s", err);
  g_assert_cmpint (status, ==, 0);
  g_assert_nonnull (strstr (err, "blkmig: vda: not converging in background mode, "
                                 "switched to write-blocking\n"));
  g_assert_nonnull (strstr (out, "\"event\":\"copy-mode\",\"disk\":\"vda\","
                                 "\"mode\":\"write-blocking\",\"reason\":\"not converging\""));
  g_assert_nonnull (strstr (out, "\"status\":\"completed\""));
  g_assert_cmpuint (vm_count_jobs (p->src), ==, 0);
  g_assert_cmpuint (vm_count_blkmig_nodes (p->src), ==, 0);
  g_assert_cmpuint (vm_count_exports (p->dst), ==, 0);
  g_assert_true (img_identical (p->src_img, p->dst_img));
}

static void
test_cannot_switch (Pair *p)
{
  g_autoptr(GSubprocess) proc = spawn_migration (p);
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;
  g_autofree char *status_text = NULL;
  int status;

  rewrite_until_stopped (p, proc);
  status = blkmig_wait (proc, &out, &err);
  g_unsetenv ("BLKMIG_TEST_PAUSE_AT");
  g_test_message ("blkmig: %s", err);
  g_assert_cmpint (status, ==, 6);  /* a block job failed */
  g_assert_nonnull (strstr (err, "blkmig migrate: mirror: vda: block job "));
  g_assert_nonnull (strstr (err, " failed: not converging: no closer to ready for 3 s while the "
                                 "guest writes ("));
  g_assert_nonnull (strstr (err, " still to copy), and the source QEMU cannot switch a running "
                                 "mirror to write-blocking (block-job-change, QEMU 8.2); run "
                                 "again with --copy-mode write-blocking\n"));
  g_assert_null (strstr (out, "\"event\":\"copy-mode\""));
  /* rolled back: the source runs on its own disk, nothing of blkmig's is left */
  status_text = vm_status (p->src);
  g_assert_cmpstr (status_text, ==, "running");
  g_assert_cmpuint (vm_count_jobs (p->src), ==, 0);
  g_assert_cmpuint (vm_count_blkmig_nodes (p->src), ==, 0);
  g_assert_cmpuint (vm_count_exports (p->dst), ==, 0);
  g_assert_cmpuint (rig_count_journals (p->rig), ==, 0);
}

/* The branch is the source's capability (its schema), never its version. */
static void
test_auto (Pair *p, gconstpointer data)
{
  gboolean can_switch = qmp_client_has_command (p->src->qmp, "block-job-change");

  g_test_message ("source QEMU %s block-job-change", can_switch ? "has" : "lacks");
  if (can_switch)
    test_switches (p);
  else
    test_cannot_switch (p);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add ("/converge/auto-under-writes", Pair, NULL, pair_setup, test_auto, pair_teardown);
  return g_test_run ();
}
