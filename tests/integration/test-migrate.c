/* Integration tests of migrate (live, copy, move), disk selection, errors, SIGINT, phases. */
#include <glib/gstdio.h>
#include <signal.h>

#include "cookie/cookie.h"
#include "tests/integration/harness.h"

#define MIB "1048576"

typedef struct {
  Rig *rig;
  char *src_vda, *src_vdb, *dst_vda, *dst_vdb;
  Vm *src;
  Vm *dst;
} Pair;

/* Source: vda 256 MiB qcow2 with 48 MiB of data, vdb 64 MiB raw; empty targets. */
static void
pair_images (Pair *p, const char *dst_vdb_size)
{
  p->src_vda = rig_path (p->rig, "src-vda.qcow2");
  p->src_vdb = rig_path (p->rig, "src-vdb.raw");
  p->dst_vda = rig_path (p->rig, "dst-vda.qcow2");
  p->dst_vdb = rig_path (p->rig, "dst-vdb.raw");
  img_create (p->src_vda, "qcow2", "256M");
  img_write (p->src_vda, "qcow2", 0xab, "0", "32M");
  img_write (p->src_vda, "qcow2", 0xcd, "128M", "16M");
  img_create (p->src_vdb, "raw", "64M");
  img_write (p->src_vdb, "raw", 0x11, "0", "16M");
  img_create (p->dst_vda, "qcow2", "256M");
  img_create (p->dst_vdb, "raw", dst_vdb_size);
}

static void
pair_start (Pair *p, const char *dst_flags)
{
  VmDisk src_disks[] = { { "vda", p->src_vda, "qcow2" }, { "vdb", p->src_vdb, "raw" }, { NULL } };
  VmDisk dst_disks[] = { { "vda", p->dst_vda, "qcow2" }, { "vdb", p->dst_vdb, "raw" }, { NULL } };

  p->src = vm_start (p->rig, "src", src_disks, NULL);
  p->dst = vm_start (p->rig, "dst", dst_disks, dst_flags);
}

static void
pair_setup (Pair *p, gconstpointer data)
{
  p->rig = rig_new ();
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
assert_status (Vm *vm, const char *want)
{
  g_autofree char *status = vm_status (vm);

  g_assert_cmpstr (status, ==, want);
}

/* Nothing of blkmig's is left on either side. */
static void
assert_clean (Pair *p)
{
  g_assert_cmpuint (vm_count_jobs (p->src), ==, 0);
  g_assert_cmpuint (vm_count_blkmig_nodes (p->src), ==, 0);
  g_assert_cmpuint (vm_count_exports (p->dst), ==, 0);
  g_assert_cmpuint (vm_count_blkmig_nodes (p->dst), ==, 0);
  g_assert_cmpuint (rig_count_journals (p->rig), ==, 0);
}

static void
test_live_with_writes (Pair *p, gconstpointer data)
{
  g_autoptr(GSubprocess) proc = NULL;
  g_autofree char *out = NULL;
  int status;

  pair_images (p, "64M");
  pair_start (p, "incoming");
  proc = blkmig_spawn ("migrate", "--source", p->src->qmp_path, "--dest", p->dst->qmp_path,
                       "--speed", "16777216", NULL);
  vm_wait_for_jobs (p->src);
  vm_guest_write (p->src, "vda", 0x5a, "8M", "1M");
  vm_guest_write (p->src, "vda", 0x5b, "200M", "2M");
  vm_guest_write (p->src, "vdb", 0x5c, "1M", "1M");
  status = blkmig_wait (proc, &out, NULL);
  g_assert_cmpint (status, ==, 0);
  g_assert_true (g_str_has_prefix (out, "blkmig: completed 2 disks"));
  assert_status (p->dst, "running");
  assert_status (p->src, "postmigrate");
  assert_clean (p);
  g_assert_true (img_identical (p->src_vda, p->dst_vda));
  g_assert_true (img_identical (p->src_vdb, p->dst_vdb));
  g_assert_true (img_has_pattern (p->dst_vda, "qcow2", 0x5b, "200M", "2M"));
  g_assert_true (img_has_pattern (p->dst_vdb, "raw", 0x5c, "1M", "1M"));
}

static void
test_copy (Pair *p, gconstpointer data)
{
  int status;

  pair_images (p, "64M");
  pair_start (p, "incoming");
  status = blkmig_run (NULL, NULL, "migrate", "--mode", "copy", "--source", p->src->qmp_path,
                       "--dest", p->dst->qmp_path, NULL);
  g_assert_cmpint (status, ==, 0);
  assert_status (p->src, "running");
  assert_status (p->dst, "inmigrate");
  assert_clean (p);
  g_assert_true (img_identical (p->src_vda, p->dst_vda));
  g_assert_true (img_identical (p->src_vdb, p->dst_vdb));
  /* The source still runs on its own disks: a new write reaches only them. */
  vm_guest_write (p->src, "vda", 0x77, "0", "1M");
  g_assert_true (img_has_pattern (p->src_vda, "qcow2", 0x77, "0", "1M"));
  g_assert_true (img_has_pattern (p->dst_vda, "qcow2", 0xab, "0", "1M"));
}

static void
test_select_disk (Pair *p, gconstpointer data)
{
  int status;

  pair_images (p, "64M");
  pair_start (p, "paused nodevices");
  status = blkmig_run (NULL, NULL, "migrate", "--mode", "copy", "--disk", "vdb", "--source",
                       p->src->qmp_path, "--dest", p->dst->qmp_path, NULL);
  g_assert_cmpint (status, ==, 0);
  g_assert_true (img_identical (p->src_vdb, p->dst_vdb));
  g_assert_true (img_has_pattern (p->dst_vda, "qcow2", 0x00, "0", "32M"));
  assert_clean (p);
}

static void
test_unknown_disk (Pair *p, gconstpointer data)
{
  if (rig_first_pass_only ("a refusal of an unknown disk"))
    return;
  g_autofree char *err = NULL;
  int status;

  pair_images (p, "64M");
  pair_start (p, "paused nodevices");
  status = blkmig_run (NULL, &err, "migrate", "--mode", "copy", "--disk", "vdz", "--source",
                       p->src->qmp_path, "--dest", p->dst->qmp_path, NULL);
  g_assert_cmpint (status, ==, 4);
  g_assert_cmpstr (err, ==, "blkmig migrate: begin: the source has no disk named vdz (disks: vda, vdb)\n");
  assert_clean (p);
}

static void
test_wrong_size (Pair *p, gconstpointer data)
{
  if (rig_first_pass_only ("a refusal of a size mismatch"))
    return;
  g_autofree char *err = NULL;
  int status;

  pair_images (p, "32M");
  pair_start (p, "paused nodevices");
  status = blkmig_run (NULL, &err, "migrate", "--mode", "copy", "--source", p->src->qmp_path,
                       "--dest", p->dst->qmp_path, NULL);
  g_assert_cmpint (status, ==, 4);
  g_assert_nonnull (strstr (err, "blkmig migrate: prepare: vdb: destination target is 32 MiB (33554432 bytes), "
                                 "source is 64 MiB (67108864 bytes)"));
  assert_status (p->src, "running");
  assert_clean (p);
  /* Refused before any data moved. */
  g_assert_true (img_has_pattern (p->dst_vda, "qcow2", 0x00, "0", "32M"));
}

static void
test_sigint_before_ready (Pair *p, gconstpointer data)
{
  if (rig_first_pass_only ("a signal"))
    return;
  g_autoptr(GSubprocess) proc = NULL;
  g_autofree char *err = NULL;
  g_autofree char *create_dir = rig_path (p->rig, "created");
  g_autofree char *target = g_build_filename (create_dir, "vda.qcow2", NULL);
  VmDisk src_disks[] = { { "vda", NULL, "qcow2" }, { NULL } };
  int status;

  pair_images (p, "64M");
  src_disks[0].path = p->src_vda;
  p->src = vm_start (p->rig, "src", src_disks, NULL);
  p->dst = vm_start (p->rig, "dst", NULL, "paused");
  g_assert_cmpint (g_mkdir (create_dir, 0700), ==, 0);
  proc = blkmig_spawn ("migrate", "--mode", "copy", "--create-dir", create_dir,
                       "--speed", "1048576", "--source", p->src->qmp_path,
                       "--dest", p->dst->qmp_path, NULL);
  vm_wait_for_jobs (p->src);
  g_assert_true (g_file_test (target, G_FILE_TEST_EXISTS));
  g_subprocess_send_signal (proc, SIGINT);
  status = blkmig_wait (proc, NULL, &err);
  g_assert_cmpint (status, ==, 130);
  g_assert_true (g_str_has_suffix (err, "\nblkmig migrate: interrupted by a signal; what it "
                                        "had started was undone\n"));
  assert_status (p->src, "running");
  assert_clean (p);
  g_assert_false (g_file_test (target, G_FILE_TEST_EXISTS));
  g_assert_cmpstr (vm_disk_file (p->src, "vda"), ==, p->src_vda);
}

static void
test_move_mode (Pair *p, gconstpointer data)
{
  g_autofree char *file = NULL;
  int status;

  pair_images (p, "64M");
  pair_start (p, "paused nodevices");
  status = blkmig_run (NULL, NULL, "migrate", "--mode", "move", "--disk", "vda", "--source",
                       p->src->qmp_path, "--dest", p->dst->qmp_path, NULL);
  g_assert_cmpint (status, ==, 0);
  file = vm_disk_file (p->src, "vda");
  g_assert_nonnull (strstr (file, "nbd"));
  g_assert_cmpuint (vm_count_jobs (p->src), ==, 0);
  g_assert_cmpuint (vm_count_exports (p->dst), ==, 1);
  g_assert_true (img_identical (p->src_vda, p->dst_vda));
  /* The guest now writes to the destination's image. */
  vm_guest_write (p->src, "vda", 0x42, "4M", "1M");
  g_assert_true (img_has_pattern (p->dst_vda, "qcow2", 0x42, "4M", "1M"));
  g_assert_true (img_has_pattern (p->src_vda, "qcow2", 0xab, "4M", "1M"));
}

static void
test_phases (Pair *p, gconstpointer data)
{
  g_autofree char *c1 = rig_path (p->rig, "source.cookie");
  g_autofree char *c2 = rig_path (p->rig, "dest.cookie");
  g_autofree char *c3 = rig_path (p->rig, "result.cookie");
  g_autofree char *sock = rig_path (p->rig, "nbd.sock");
  g_autofree char *migrate_sock = g_strdup_printf ("%s.migrate", sock);
  g_autofree char *listen = NULL;

  pair_images (p, "64M");
  pair_start (p, "incoming");
  listen = g_strdup_printf ("unix:%s", sock);
  g_assert_cmpint (blkmig_run (NULL, NULL, "begin", "--qmp", p->src->qmp_path, "-o", c1, NULL), ==, 0);
  g_assert_cmpint (blkmig_run (NULL, NULL, "prepare", "--qmp", p->dst->qmp_path, "--listen", listen,
                               "-c", c1, "-o", c2, NULL), ==, 0);
  g_assert_cmpuint (vm_count_exports (p->dst), ==, 2);
  {
    /* blkmig made the listening socket and handed it to QEMU: private from the start */
    GStatBuf st;
    g_assert_cmpint (g_stat (sock, &st), ==, 0);
    g_assert_cmpint (st.st_mode & 0777, ==, 0600);
  }
  g_assert_cmpint (blkmig_run (NULL, NULL, "perform", "--local-destination", "--qmp",
                               p->src->qmp_path, "-c", c2, "-o", c3, NULL), ==, 0);
  g_assert_cmpint (blkmig_run (NULL, NULL, "finish", "--qmp", p->dst->qmp_path, "-c", c3, NULL), ==, 0);
  assert_status (p->dst, "running");
  assert_status (p->src, "postmigrate");
  assert_clean (p);
  g_assert_true (img_identical (p->src_vda, p->dst_vda));
  g_assert_true (img_identical (p->src_vdb, p->dst_vdb));
  g_assert_false (g_file_test (sock, G_FILE_TEST_EXISTS));
  g_assert_false (g_file_test (migrate_sock, G_FILE_TEST_EXISTS));
}

/* Copy over TCP with port 0: blkmig binds the port and hands QEMU the socket (getfd). */
static void
test_phases_tcp_port0 (Pair *p, gconstpointer data)
{
  g_autofree char *c1 = rig_path (p->rig, "source.cookie");
  g_autofree char *c2 = rig_path (p->rig, "dest.cookie");
  g_autofree char *c3 = rig_path (p->rig, "result.cookie");
  g_autoptr(Cookie) reply = NULL;
  g_autoptr(GError) error = NULL;

  pair_images (p, "64M");
  pair_start (p, "paused nodevices");
  g_assert_cmpint (blkmig_run (NULL, NULL, "begin", "--qmp", p->src->qmp_path, "--mode", "copy",
                               "-o", c1, NULL), ==, 0);
  g_assert_cmpint (blkmig_run (NULL, NULL, "prepare", "--qmp", p->dst->qmp_path, "--listen",
                               "tcp:127.0.0.1:0", "-c", c1, "-o", c2, NULL), ==, 0);
  reply = cookie_load (c2, COOKIE_KIND_DESTINATION, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (reply->nbd_host, ==, "127.0.0.1");
  g_assert_cmpint (reply->nbd_port, >, 0);
  g_assert_cmpint (blkmig_run (NULL, NULL, "perform", "--local-destination", "--qmp",
                               p->src->qmp_path, "-c", c2, "-o", c3, NULL), ==, 0);
  g_assert_cmpint (blkmig_run (NULL, NULL, "finish", "--qmp", p->dst->qmp_path, "-c", c3, NULL), ==, 0);
  assert_status (p->src, "running");
  assert_clean (p);
  g_assert_true (img_identical (p->src_vda, p->dst_vda));
  g_assert_true (img_identical (p->src_vdb, p->dst_vdb));
}

/* abort after prepare removes the exports and the server; the source is untouched. */
static void
test_phases_abort (Pair *p, gconstpointer data)
{
  g_autofree char *c1 = rig_path (p->rig, "source.cookie");
  g_autofree char *c2 = rig_path (p->rig, "dest.cookie");
  g_autofree char *sock = rig_path (p->rig, "nbd.sock");
  g_autofree char *listen = g_strdup_printf ("unix:%s", sock);
  g_autofree char *migrate_sock = g_strdup_printf ("%s.migrate", sock);

  pair_images (p, "64M");
  pair_start (p, "incoming");
  g_assert_cmpint (blkmig_run (NULL, NULL, "begin", "--qmp", p->src->qmp_path, "-o", c1, NULL), ==, 0);
  g_assert_cmpint (blkmig_run (NULL, NULL, "prepare", "--qmp", p->dst->qmp_path, "--listen", listen,
                               "-c", c1, "-o", c2, NULL), ==, 0);
  g_assert_cmpuint (vm_count_exports (p->dst), ==, 2);
  g_assert_true (g_file_test (migrate_sock, G_FILE_TEST_EXISTS));
  g_assert_cmpuint (rig_count_journals (p->rig), ==, 2);  /* begin's offer, prepare's */
  /* The source cookie is enough: export names carry the migration id. */
  g_assert_cmpint (blkmig_run (NULL, NULL, "abort", "--qmp", p->dst->qmp_path, "-c", c1, NULL), ==, 0);
  g_assert_cmpint (blkmig_run (NULL, NULL, "abort", "--qmp", p->src->qmp_path, "-c", c2, NULL), ==, 0);
  assert_clean (p);
  assert_status (p->src, "running");
  g_assert_false (g_file_test (sock, G_FILE_TEST_EXISTS));
  g_assert_false (g_file_test (migrate_sock, G_FILE_TEST_EXISTS));
  g_assert_true (g_file_test (p->dst_vda, G_FILE_TEST_EXISTS));
}

/* --verify compares at switchover (live) or with the guest paused (copy). */
static void
test_verify (Pair *p, gconstpointer data)
{
  const char *mode = data;
  g_autofree char *err = NULL;

  pair_images (p, "64M");
  pair_start (p, "incoming");
  g_assert_cmpint (blkmig_run (NULL, &err, "migrate", "--verify", "--mode", mode, "--source",
                               p->src->qmp_path, "--dest", p->dst->qmp_path, NULL), ==, 0);
  g_assert_nonnull (strstr (err, "\nblkmig: verified 2 disks: identical ("));
  g_assert_true (img_identical (p->src_vda, p->dst_vda));
  assert_status (p->src, g_str_equal (mode, "live") ? "postmigrate" : "running");
  assert_clean (p);
}

/* --pass-fds: blkmig connects, QEMU gets the connected sockets through getfd. */
static void
test_pass_fds (Pair *p, gconstpointer data)
{
  g_autofree char *err = NULL;

  pair_images (p, "64M");
  pair_start (p, "incoming");
  g_assert_cmpint (blkmig_run (NULL, &err, "migrate", "--pass-fds", "--debug", "--source",
                               p->src->qmp_path, "--dest", p->dst->qmp_path, NULL), ==, 0);
  g_assert_nonnull (strstr (err, "source >>> {\"execute\":\"getfd\""));
  g_assert_nonnull (strstr (err, "\"server\":{\"type\":\"fd\""));
  g_assert_null (strstr (err, "\"server\":{\"type\":\"unix\""));
  assert_status (p->dst, "running");
  g_assert_true (img_identical (p->src_vda, p->dst_vda));
  g_assert_true (img_identical (p->src_vdb, p->dst_vdb));
  assert_clean (p);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_message ("accelerator: %s", rig_accel ());
#define ADD(path, fn) g_test_add (path, Pair, NULL, pair_setup, fn, pair_teardown)
  ADD ("/migrate/live-with-writes", test_live_with_writes);
  ADD ("/migrate/copy", test_copy);
  ADD ("/migrate/select-disk", test_select_disk);
  ADD ("/migrate/unknown-disk", test_unknown_disk);
  ADD ("/migrate/wrong-size", test_wrong_size);
  ADD ("/migrate/sigint-before-ready", test_sigint_before_ready);
  ADD ("/migrate/move-mode", test_move_mode);
  ADD ("/migrate/phases", test_phases);
  ADD ("/migrate/pass-fds", test_pass_fds);
  g_test_add ("/migrate/verify-live", Pair, "live", pair_setup, test_verify, pair_teardown);
  g_test_add ("/migrate/verify-copy", Pair, "copy", pair_setup, test_verify, pair_teardown);
  ADD ("/migrate/phases-tcp-port0", test_phases_tcp_port0);
  ADD ("/migrate/phases-abort", test_phases_abort);
#undef ADD
  return g_test_run ();
}
