/* Integration tests of --chain top (only the active layer moves, onto the destination's verified copy of the chain) and copy-base (the chain is copied beside it). */
#include <glib/gstdio.h>
#include <signal.h>

#include "tests/integration/harness.h"

typedef struct {
  Rig *rig;
  char *base, *snap, *top;            /* the source's chain: base <- snap <- top */
  char *dst_dir;                      /* the destination's copies of base and snap */
  char *dst_base, *dst_snap;
  char *create_dir, *target;          /* copy mode: where prepare creates vda */
  Vm *src, *dst;
} Chain;

static void
tool_ok (const char *const *argv)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *err = NULL;
  int status = 0;

  g_spawn_sync (NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL,
                NULL, NULL, NULL, &err, &status, &error);
  g_assert_no_error (error);
  if (!g_spawn_check_wait_status (status, NULL))
    g_error ("%s failed: %s", argv[0], err);
}

static void
overlay (const char *path, const char *backing)
{
  tool_ok ((const char *const[]) { "qemu-img", "create", "-q", "-f", "qcow2", "-b", backing,
                                   "-F", "qcow2", path, NULL });
}

/* The destination's copy of a layer, its header naming the destination's backing. */
static void
copy_layer (const char *from, const char *to, const char *backing)
{
  tool_ok ((const char *const[]) { "cp", "--sparse=always", from, to, NULL });
  if (backing != NULL)
    tool_ok ((const char *const[]) { "qemu-img", "rebase", "-q", "-u", "-f", "qcow2", "-b",
                                     backing, "-F", "qcow2", to, NULL });
}

static void
chain_setup (Chain *c, gconstpointer data)
{
  c->rig = rig_new ();
  c->base = rig_path (c->rig, "base.qcow2");
  c->snap = rig_path (c->rig, "snap.qcow2");
  c->top = rig_path (c->rig, "top.qcow2");
  c->dst_dir = rig_path (c->rig, "dst");
  c->dst_base = g_build_filename (c->dst_dir, "base.qcow2", NULL);
  c->dst_snap = g_build_filename (c->dst_dir, "snap.qcow2", NULL);
  img_create (c->base, "qcow2", "64M");
  img_write (c->base, "qcow2", 0x11, "0", "16M");
  overlay (c->snap, c->base);
  img_write (c->snap, "qcow2", 0x22, "8M", "8M");
  overlay (c->top, c->snap);
  img_write (c->top, "qcow2", 0x33, "12M", "2M");
  c->create_dir = rig_path (c->rig, "created");
  c->target = g_build_filename (c->create_dir, "vda.qcow2", NULL);
  g_assert_cmpint (g_mkdir (c->dst_dir, 0700), ==, 0);
  g_assert_cmpint (g_mkdir (c->create_dir, 0700), ==, 0);
  copy_layer (c->base, c->dst_base, NULL);
  copy_layer (c->snap, c->dst_snap, c->dst_base);
}

static void
chain_teardown (Chain *c, gconstpointer data)
{
  rig_free (c->rig);
  g_free (c->base);
  g_free (c->snap);
  g_free (c->top);
  g_free (c->dst_dir);
  g_free (c->dst_base);
  g_free (c->dst_snap);
  g_free (c->create_dir);
  g_free (c->target);
}

/* Copy mode: the source VM on top, a paused destination without disks. */
static void
copy_pair_start (Chain *c)
{
  VmDisk src_disks[] = { { "vda", c->top, "qcow2" }, { NULL } };

  c->src = vm_start (c->rig, "src", src_disks, NULL);
  c->dst = vm_start (c->rig, "dst", NULL, "paused");
}

/* migrate --mode copy --chain top into create_dir, the layers in @base_dir (NULL:
 * none given); its exit status, stderr in *@err. */
static int
copy_top (Chain *c, const char *base_dir, char **err)
{
  return blkmig_run (NULL, err, "migrate", "-q", "--mode", "copy", "--chain", "top",
                     "--create-dir", c->create_dir, "--source", c->src->qmp_path,
                     "--dest", c->dst->qmp_path,
                     base_dir != NULL ? "--base-dir" : NULL, base_dir, NULL);
}

/* @image's chain (qemu-img info --backing-chain): its files, top first. */
static GStrv
chain_files (const char *image)
{
  const char *argv[] = { "qemu-img", "info", "-U", "--backing-chain", "--output=json", image,
                         NULL };
  g_autofree char *out = NULL;
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonNode) info = NULL;
  g_autoptr(GStrvBuilder) files = g_strv_builder_new ();
  JsonArray *list;

  g_assert_true (g_spawn_sync (NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
                               &out, NULL, NULL, &error));
  info = json_from_string (out, &error);
  g_assert_no_error (error);
  list = json_node_get_array (info);
  for (guint i = 0; i < json_array_get_length (list); i++)
    g_strv_builder_add (files, json_object_get_string_member (
                                 json_array_get_object_element (list, i), "filename"));
  return g_strv_builder_end (files);
}

/* The destination's disk is an overlay on the destination's own snap and base, the
 * guest sees the same disk, and only the top's data went into it. */
static void
assert_arrived (Chain *c, const char *dst_top)
{
  g_auto(GStrv) files = chain_files (dst_top);

  g_assert_cmpuint (g_strv_length (files), ==, 3);
  g_assert_cmpstr (files[0], ==, dst_top);
  g_assert_cmpstr (files[1], ==, c->dst_snap);
  g_assert_cmpstr (files[2], ==, c->dst_base);
  g_assert_true (img_identical (c->top, dst_top));
  g_assert_cmpint (file_allocated (dst_top), <, 8 << 20);
}

/* Nothing of blkmig's left but, on the destination, @kept nodes (a live copy-base
 * disk's copied chain, now its backing). */
static void
assert_clean_but (Chain *c, Vm *src, Vm *dst, guint kept)
{
  g_assert_cmpuint (vm_count_jobs (src), ==, 0);
  g_assert_cmpuint (vm_count_blkmig_nodes (src), ==, 0);
  g_assert_cmpuint (vm_count_exports (dst), ==, 0);
  g_assert_cmpuint (vm_count_blkmig_nodes (dst), ==, kept);
  g_assert_cmpuint (rig_count_journals (c->rig), ==, 0);
}

static void
assert_clean (Chain *c, Vm *src, Vm *dst)
{
  assert_clean_but (c, src, dst, 0);
}

/* Live: the destination VM already runs its disk on an empty overlay of its copies;
 * the guest writes while the top is mirrored. */
static void
test_live_top (Chain *c, gconstpointer data)
{
  g_autofree char *dst_top = g_build_filename (c->dst_dir, "top.qcow2", NULL);
  VmDisk src_disks[] = { { "vda", c->top, "qcow2" }, { NULL } };
  VmDisk dst_disks[] = { { "vda", dst_top, "qcow2" }, { NULL } };
  g_autoptr(GSubprocess) proc = NULL;
  g_autofree char *status = NULL;
  Vm *src, *dst;

  overlay (dst_top, c->dst_snap);
  src = vm_start (c->rig, "src", src_disks, NULL);
  dst = vm_start (c->rig, "dst", dst_disks, "incoming");
  proc = blkmig_spawn ("migrate", "-q", "--chain", "top", "--speed", "1048576",
                       "--source", src->qmp_path, "--dest", dst->qmp_path, NULL);
  vm_wait_for_jobs (src);
  vm_guest_write (src, "vda", 0x44, "20M", "1M");
  vm_guest_write (src, "vda", 0x45, "1M", "512K");
  g_assert_cmpint (blkmig_wait (proc, NULL, NULL), ==, 0);
  status = vm_status (dst);
  g_assert_cmpstr (status, ==, "running");
  assert_clean (c, src, dst);
  vm_stop (dst);
  assert_arrived (c, dst_top);
  g_assert_true (img_has_pattern (dst_top, "qcow2", 0x44, "20M", "1M"));
  g_assert_true (img_has_pattern (dst_top, "qcow2", 0x11, "0", "1M"));
}

/* Copy into a new file: prepare makes the overlay on the layers it finds in
 * --base-dir, after checking them. */
static void
test_copy_top_base_dir (Chain *c, gconstpointer data)
{
  copy_pair_start (c);
  g_assert_cmpint (copy_top (c, c->dst_dir, NULL), ==, 0);
  assert_clean (c, c->src, c->dst);
  vm_stop (c->src);
  vm_stop (c->dst);
  assert_arrived (c, c->target);
}

/* One byte differs in the destination's base: refused before anything moves, the
 * layer named; nothing is left. */
static void
test_top_refuses_other_base (Chain *c, gconstpointer data)
{
  if (rig_first_pass_only ("a refusal of another base"))
    return;
  g_autofree char *err = NULL;
  g_autofree char *want = NULL;

  img_write (c->dst_base, "qcow2", 0x12, "4096", "1");
  copy_pair_start (c);
  g_assert_cmpint (copy_top (c, c->dst_dir, &err), ==, 4);
  want = g_strdup_printf ("vda: backing layer 2 (%s here, base.qcow2 on the source) is not the "
                          "source's: its content differs\n", c->dst_base);
  g_assert_true (g_str_has_prefix (err, "blkmig migrate: "));
  g_assert_true (g_str_has_suffix (err, want));
  g_assert_true (strchr (err, '\n') == err + strlen (err) - 1);  /* one line */
  assert_clean (c, c->src, c->dst);
  g_assert_false (g_file_test (c->target, G_FILE_TEST_EXISTS));
}

/* One process per phase, the chain named with --base: begin offers chain-top, prepare
 * builds on the named layer, perform sends the top, finish detaches. */
static void
test_phases_top_base_map (Chain *c, gconstpointer data)
{
  g_autofree char *c1 = rig_path (c->rig, "source.cookie");
  g_autofree char *c2 = rig_path (c->rig, "dest.cookie");
  g_autofree char *c3 = rig_path (c->rig, "result.cookie");
  g_autofree char *sock = rig_path (c->rig, "nbd.sock");
  g_autofree char *listen = g_strdup_printf ("unix:%s", sock);
  g_autofree char *base = g_strdup_printf ("vda=%s", c->dst_snap);
  g_autofree char *offer = NULL;
  g_autofree char *err = NULL;
  g_autofree char *begin_err = NULL;
  g_autofree char *reading = g_strdup_printf ("blkmig: reading %s (", c->base);

  copy_pair_start (c);
  g_assert_cmpint (blkmig_run (NULL, &begin_err, "begin", "--qmp", c->src->qmp_path, "--mode",
                               "copy", "--chain", "top", "-o", c1, NULL), ==, 0);
  /* hashing the base is long work: it is announced */
  g_assert_nonnull (strstr (begin_err, reading));
  g_assert_nonnull (strstr (begin_err, ") for its content identity\n"));
  g_assert_true (g_file_get_contents (c1, &offer, NULL, NULL));
  g_assert_nonnull (strstr (offer, "\"name\" : \"chain-top\",\n      \"mandatory\" : true"));
  g_assert_nonnull (strstr (offer, "\"sync\" : \"top\""));
  g_assert_cmpint (blkmig_run (NULL, NULL, "prepare", "--qmp", c->dst->qmp_path, "--listen",
                               listen, "--create-dir", c->create_dir, "--base", base, "-c", c1,
                               "-o", c2, NULL), ==, 0);
  if (blkmig_run (NULL, &err, "perform", "-q", "--local-destination", "--qmp", c->src->qmp_path,
                  "-c", c2, "-o", c3, NULL) != 0)
    g_error ("perform failed: %s", err);
  g_assert_cmpint (blkmig_run (NULL, NULL, "finish", "--qmp", c->dst->qmp_path, "-c", c3, NULL),
                   ==, 0);
  assert_clean (c, c->src, c->dst);
  vm_stop (c->src);
  vm_stop (c->dst);
  assert_arrived (c, c->target);
}

/* Identities are remembered in the state directory, but never for a layer that
 * changed since: one byte written into the destination's base after a first
 * migration makes the second one refuse. */
static void
test_cache_follows_changes (Chain *c, gconstpointer data)
{
  if (rig_first_pass_only ("blkmig's identity cache"))
    return;
  g_autofree char *cache = rig_path (c->rig, "state/identities.cache");
  g_autofree char *text = NULL;
  g_autofree char *err = NULL;

  copy_pair_start (c);
  g_assert_cmpint (copy_top (c, c->dst_dir, NULL), ==, 0);
  g_assert_true (g_file_get_contents (cache, &text, NULL, NULL));
  g_assert_nonnull (strstr (text, ":qcow2\" : \"sha256:"));
  g_assert_cmpint (g_unlink (c->target), ==, 0);
  img_write (c->dst_base, "qcow2", 0x12, "4096", "1");
  g_assert_cmpint (copy_top (c, c->dst_dir, &err), ==, 4);
  g_assert_true (g_str_has_suffix (err, "is not the source's: its content differs\n"));
  assert_clean (c, c->src, c->dst);
  g_assert_false (g_file_test (c->target, G_FILE_TEST_EXISTS));
}

/* Without a place to find the chain, prepare says what is missing. */
static void
test_top_needs_base (Chain *c, gconstpointer data)
{
  if (rig_first_pass_only ("a refusal without a base"))
    return;
  g_autofree char *err = NULL;

  copy_pair_start (c);
  g_assert_cmpint (copy_top (c, NULL, &err), ==, 2);
  g_assert_true (g_str_has_suffix (err, "vda: the source sends only the active layer (--chain "
                                        "top): give --base-dir DIR or --base vda=PATH for the "
                                        "chain below it\n"));
  assert_clean (c, c->src, c->dst);
}

/* ---- copy-base ------------------------------------------------------------ */

/* The chain copy-base must rebuild: a snapshot layer with 4 KiB clusters (the
 * destination's copies have 64 KiB ones), 4 KiB writes in it at odd places, and
 * a zeroed range that hides the base's data; the base 1 GiB with 48 MiB of data. */
static void
copy_base_setup (Chain *c, gconstpointer data)
{
  chain_setup (c, data);
  g_assert_cmpint (g_unlink (c->top), ==, 0);
  g_assert_cmpint (g_unlink (c->snap), ==, 0);
  g_assert_cmpint (g_unlink (c->base), ==, 0);
  img_create (c->base, "qcow2", "1G");
  img_write (c->base, "qcow2", 0x11, "0", "16M");
  img_write (c->base, "qcow2", 0x12, "512M", "32M");
  tool_ok ((const char *const[]) { "qemu-img", "create", "-q", "-f", "qcow2", "-o",
                                   "cluster_size=4096", "-b", c->base, "-F", "qcow2", c->snap,
                                   NULL });
  img_write (c->snap, "qcow2", 0x22, "8M", "8M");
  img_write (c->snap, "qcow2", 0x23, "69632", "4096");     /* 68 KiB: inside a 64 KiB chunk */
  img_write (c->snap, "qcow2", 0x24, "528M", "4096");
  tool_ok ((const char *const[]) { "qemu-io", "-f", "qcow2", "-c", "write -z 2M 1M", c->snap,
                                   NULL });
  overlay (c->top, c->snap);
  img_write (c->top, "qcow2", 0x33, "12M", "2M");
  c->dst_base = (g_free (c->dst_base), g_build_filename (c->create_dir, "base.qcow2", NULL));
  c->dst_snap = (g_free (c->dst_snap), g_build_filename (c->create_dir, "snap.qcow2", NULL));
}

/* migrate --mode copy --chain copy-base into create_dir (layers beside the disk),
 * with @option @value when not NULL. */
static int
copy_base (Chain *c, char **err, const char *option, const char *value)
{
  return blkmig_run (NULL, err, "migrate", "-q", "--mode", "copy", "--chain", "copy-base",
                     "--create-dir", c->create_dir, "--source", c->src->qmp_path,
                     "--dest", c->dst->qmp_path, option, value, NULL);
}

/* The destination holds the source's chain, layer by layer, and a VM starts on it. */
static void
assert_chain_copied (Chain *c)
{
  g_auto(GStrv) files = chain_files (c->target);
  VmDisk disks[] = { { "vda", c->target, "qcow2" }, { NULL } };
  g_autofree char *status = NULL;
  Vm *vm;

  g_assert_cmpuint (g_strv_length (files), ==, 3);
  g_assert_cmpstr (files[1], ==, c->dst_snap);
  g_assert_cmpstr (files[2], ==, c->dst_base);
  g_assert_true (img_identical (c->base, c->dst_base));
  g_assert_true (img_identical (c->snap, c->dst_snap));
  g_assert_true (img_identical (c->top, c->target));
  /* the chain, not a flattened disk: each copy about as thin as its original */
  g_assert_cmpint (file_allocated (c->dst_base), <=, file_allocated (c->base) * 102 / 100);
  g_assert_cmpint (file_allocated (c->dst_snap), <=, file_allocated (c->snap) + (2 << 20));
  g_assert_cmpint (file_allocated (c->target), <, 8 << 20);
  vm = vm_start (c->rig, "booted", disks, NULL);
  status = vm_status (vm);
  g_assert_cmpstr (status, ==, "running");
  vm_stop (vm);
}

static void
test_copy_base (Chain *c, gconstpointer data)
{
  g_autofree char *err = NULL;

  copy_pair_start (c);
  if (copy_base (c, &err, NULL, NULL) != 0)
    g_error ("copy-base failed: %s", err);
  assert_clean (c, c->src, c->dst);
  vm_stop (c->src);
  vm_stop (c->dst);
  assert_chain_copied (c);
}

/* Live through the tunnel: the destination VM runs its disk on an empty qcow2 (a
 * -blockdev node); the guest writes while the top is mirrored and the chain copied
 * beside it, every connection through one stream.  The destination VM then runs
 * on the copied chain, and its disk's header names it. */
static void
test_live_copy_base (Chain *c, gconstpointer data)
{
  VmDisk src_disks[] = { { "vda", c->top, "qcow2" }, { NULL } };
  VmDisk dst_disks[] = { { "vda", c->target, "qcow2" }, { NULL } };
  g_autoptr(GSubprocess) proc = NULL;
  g_autofree char *status = NULL;
  g_autofree char *err = NULL;

  img_create (c->target, "qcow2", "1G");
  c->src = vm_start (c->rig, "src", src_disks, NULL);
  c->dst = vm_start (c->rig, "dst", dst_disks, "incoming");
  g_autofree char *tunnel = g_strdup_printf ("%s tunnel-endpoint --nbd-socket {nbd-socket}",
                                             g_getenv ("BLKMIG"));

  /* 8 MiB/s: the layers' 48 MiB take seconds, while the guest writes */
  proc = blkmig_spawn ("migrate", "-q", "--chain", "copy-base", "--speed", "8388608",
                       "--tunnel-command", tunnel, "--source", c->src->qmp_path,
                       "--dest", c->dst->qmp_path, NULL);
  vm_wait_for_jobs (c->src);
  vm_guest_write (c->src, "vda", 0x44, "20M", "1M");
  vm_guest_write (c->src, "vda", 0x45, "2M", "512K");   /* over the snapshot's zeroes */
  if (blkmig_wait (proc, NULL, &err) != 0)
    g_error ("migrate failed: %s", err);
  status = vm_status (c->dst);
  g_assert_cmpstr (status, ==, "running");
  assert_clean_but (c, c->src, c->dst, 1);
  vm_stop (c->src);
  vm_stop (c->dst);
  assert_chain_copied (c);
  g_assert_true (img_has_pattern (c->target, "qcow2", 0x44, "20M", "1M"));
}

/* Live copy-base with blkmig SIGKILLed right after journal step @step; then
 * `recover --all`.  Returns recover's output. */
static char *
live_copy_base_killed (Chain *c, const char *step)
{
  VmDisk src_disks[] = { { "vda", c->top, "qcow2" }, { NULL } };
  VmDisk dst_disks[] = { { "vda", c->target, "qcow2" }, { NULL } };
  char *out = NULL;

  img_create (c->target, "qcow2", "1G");
  c->src = vm_start (c->rig, "src", src_disks, NULL);
  c->dst = vm_start (c->rig, "dst", dst_disks, "incoming");
  g_setenv ("BLKMIG_TEST_KILL_AT", step, TRUE);
  g_assert_cmpint (blkmig_run (NULL, NULL, "migrate", "-q", "--chain", "copy-base", "--source",
                               c->src->qmp_path, "--dest", c->dst->qmp_path, NULL), ==, 137);
  g_unsetenv ("BLKMIG_TEST_KILL_AT");
  g_assert_cmpint (blkmig_run (&out, NULL, "recover", "--all", NULL), ==, 0);
  return out;
}

/* Killed once the memory stream completed, before finish composed: recover
 * finishes, the destination runs on the copied chain and its header names it. */
static void
test_live_copy_base_recover_compose (Chain *c, gconstpointer data)
{
  g_autofree char *out = live_copy_base_killed (c, "completed");
  g_autofree char *status = vm_status (c->dst);

  g_assert_nonnull (strstr (out, "had completed: the destination was finished"));
  g_assert_cmpstr (status, ==, "running");
  assert_clean_but (c, c->src, c->dst, 1);
  vm_stop (c->src);
  vm_stop (c->dst);
  assert_chain_copied (c);
}

/* Killed while the layers were being copied: recover rolls back, the source runs
 * on its chain, every copy is gone and the destination's disk has no backing. */
static void
test_live_copy_base_recover_rollback (Chain *c, gconstpointer data)
{
  g_autofree char *out = live_copy_base_killed (c, "mirror");
  g_autofree char *status = vm_status (c->src);
  g_auto(GStrv) files = NULL;

  g_assert_nonnull (strstr (out, "rolled back"));
  g_assert_cmpstr (status, ==, "running");
  assert_clean (c, c->src, c->dst);
  g_assert_false (g_file_test (c->dst_base, G_FILE_TEST_EXISTS));
  g_assert_false (g_file_test (c->dst_snap, G_FILE_TEST_EXISTS));
  vm_stop (c->dst);
  files = chain_files (c->target);
  g_assert_cmpuint (g_strv_length (files), ==, 1);
}

/* The pair started, begin (copy, copy-base) and prepare (listening on @sock,
 * creating in create_dir) as one process each; the answer in @c2. */
static void
copy_base_begin_prepare (Chain *c, const char *sock, const char *c2)
{
  g_autofree char *c1 = rig_path (c->rig, "source.cookie");
  g_autofree char *listen = g_strdup_printf ("unix:%s", sock);

  copy_pair_start (c);
  g_assert_cmpint (blkmig_run (NULL, NULL, "begin", "--qmp", c->src->qmp_path, "--mode",
                               "copy", "--chain", "copy-base", "-o", c1, NULL), ==, 0);
  g_assert_cmpint (blkmig_run (NULL, NULL, "prepare", "--qmp", c->dst->qmp_path, "--listen",
                               listen, "--create-dir", c->create_dir, "-c", c1, "-o", c2,
                               NULL), ==, 0);
}

/* Waits (bounded) until the events file @path reports the layers being copied. */
static void
wait_base_copying (const char *path)
{
  for (int i = 0; i < 600; i++)
    {
      g_autofree char *text = NULL;

      if (g_file_get_contents (path, &text, NULL, NULL)
          && strstr (text, "\"part\":\"base\"") != NULL)
        return;
      g_usleep (50 * 1000);
    }
  g_error ("no base copy progress in %s", path);
}

/* The destination QEMU dies while the layers are copied (--speed holds the copy
 * to 4 MiB/s, so it is halfway): blkmig fails, the source runs on its own chain
 * with nothing of ours left, and the copies and the target are gone (recover,
 * since the destination could not be asked). */
static void
test_copy_base_dest_dies (Chain *c, gconstpointer data)
{
  g_autofree char *events = rig_path (c->rig, "events");
  g_autoptr(GSubprocess) proc = NULL;
  g_autofree char *err = NULL;
  g_autofree char *status = NULL;

  copy_pair_start (c);
  proc = blkmig_spawn ("migrate", "-q", "--mode", "copy", "--chain", "copy-base", "--speed",
                       "4194304", "--create-dir", c->create_dir, "--events", events,
                       "--source", c->src->qmp_path, "--dest", c->dst->qmp_path, NULL);
  wait_base_copying (events);
  g_subprocess_force_exit (c->dst->proc);
  g_assert_cmpint (blkmig_wait (proc, NULL, &err), ==, 6);
  g_test_message ("%s", err);
  g_assert_true (strchr (err, '\n') == err + strlen (err) - 1);
  status = vm_status (c->src);
  g_assert_cmpstr (status, ==, "running");
  g_assert_cmpuint (vm_count_jobs (c->src), ==, 0);
  g_assert_cmpuint (vm_count_blkmig_nodes (c->src), ==, 0);
  if (rig_count_journals (c->rig) > 0)
    g_assert_cmpint (blkmig_run (NULL, NULL, "recover", "--all", NULL), ==, 0);
  g_assert_cmpuint (rig_count_journals (c->rig), ==, 0);
  g_assert_false (g_file_test (c->dst_base, G_FILE_TEST_EXISTS));
  g_assert_false (g_file_test (c->dst_snap, G_FILE_TEST_EXISTS));
  g_assert_false (g_file_test (c->target, G_FILE_TEST_EXISTS));
}

/* SIGINT while the layers are copied: blkmig stops the copies and the mirrors,
 * undoes both sides (nothing left, no journal) and exits 130. */
static void
test_copy_base_sigint (Chain *c, gconstpointer data)
{
  if (rig_first_pass_only ("a signal"))
    return;
  g_autofree char *events = rig_path (c->rig, "events");
  g_autoptr(GSubprocess) proc = NULL;
  g_autofree char *err = NULL;
  g_autofree char *status = NULL;

  copy_pair_start (c);
  proc = blkmig_spawn ("migrate", "-q", "--mode", "copy", "--chain", "copy-base", "--speed",
                       "4194304", "--create-dir", c->create_dir, "--events", events,
                       "--source", c->src->qmp_path, "--dest", c->dst->qmp_path, NULL);
  wait_base_copying (events);
  g_subprocess_send_signal (proc, SIGINT);
  g_assert_cmpint (blkmig_wait (proc, NULL, &err), ==, 130);
  g_assert_cmpstr (err, ==, "blkmig migrate: interrupted by a signal; what it had started was "
                            "undone\n");
  status = vm_status (c->src);
  g_assert_cmpstr (status, ==, "running");
  assert_clean (c, c->src, c->dst);
  g_assert_false (g_file_test (c->dst_base, G_FILE_TEST_EXISTS));
  g_assert_false (g_file_test (c->dst_snap, G_FILE_TEST_EXISTS));
  g_assert_false (g_file_test (c->target, G_FILE_TEST_EXISTS));
}

/* The tunnel breaks while the layers are copied through it: perform fails at
 * once, the source runs on its own chain; abort on the destination removes the
 * copies' exports and nodes, and the copies with them. */
static void
test_copy_base_tunnel_breaks (Chain *c, gconstpointer data)
{
  if (rig_first_pass_only ("blkmig's tunnel breaking"))
    return;
  g_autofree char *c2 = rig_path (c->rig, "dest.cookie");
  g_autofree char *c3 = rig_path (c->rig, "result.cookie");
  g_autofree char *sock = rig_path (c->rig, "nbd.sock");
  g_autofree char *events = rig_path (c->rig, "events");
  g_autofree char *port = NULL;
  g_autofree char *addr = NULL;
  g_autoptr(GSubprocess) endpoint = NULL;
  g_autoptr(GSubprocess) perform = NULL;
  g_autofree char *err = NULL;
  g_autofree char *status = NULL;
  GDataInputStream *out;

  copy_base_begin_prepare (c, sock, c2);
  endpoint = blkmig_spawn ("tunnel-endpoint", "--listen", "tcp:127.0.0.1:0", "--nbd-socket",
                           sock, NULL);
  out = g_data_input_stream_new (g_subprocess_get_stdout_pipe (endpoint));
  port = g_data_input_stream_read_line (out, NULL, NULL, NULL);
  g_object_unref (out);
  g_assert_nonnull (port);
  addr = g_strdup_printf ("tcp:127.0.0.1:%s", port);
  perform = blkmig_spawn ("perform", "-q", "--local-destination", "--speed", "4194304",
                          "--tunnel", addr, "--events", events, "--qmp",
                          c->src->qmp_path, "-c", c2, "-o", c3, NULL);
  wait_base_copying (events);
  g_subprocess_force_exit (endpoint);
  g_assert_cmpint (blkmig_wait (perform, NULL, &err), ==, 6);
  g_assert_nonnull (strstr (err, "the tunnel to the destination broke"));
  status = vm_status (c->src);
  g_assert_cmpstr (status, ==, "running");
  g_assert_cmpuint (vm_count_jobs (c->src), ==, 0);
  g_assert_cmpuint (vm_count_blkmig_nodes (c->src), ==, 0);
  g_assert_cmpint (blkmig_run (NULL, NULL, "abort", "--qmp", c->dst->qmp_path, "-c", c2, NULL),
                   ==, 0);
  assert_clean (c, c->src, c->dst);
  g_assert_false (g_file_test (c->dst_base, G_FILE_TEST_EXISTS));
  g_assert_false (g_file_test (c->target, G_FILE_TEST_EXISTS));
}

/* With --tls-creds the layers' copies go through TLS like the mirrors (the
 * destination's NBD server accepts nothing else). */
static void
test_copy_base_tls (Chain *c, gconstpointer data)
{
  g_autofree char *certs = rig_path (c->rig, "certs");
  g_autofree char *make = g_test_build_filename (G_TEST_DIST, "integration", "make-certs.sh",
                                                 NULL);
  g_autofree char *err = NULL;

  tool_ok ((const char *const[]) { "sh", make, certs, "127.0.0.1", NULL });
  copy_pair_start (c);
  if (copy_base (c, &err, "--tls-creds", certs) != 0)
    g_error ("copy-base over TLS failed: %s", err);
  assert_clean (c, c->src, c->dst);
  vm_stop (c->src);
  vm_stop (c->dst);
  assert_chain_copied (c);
}

/* A copy of a layer is never made over a file: refused before anything moves,
 * the file untouched, nothing left. */
static void
test_copy_base_layer_exists (Chain *c, gconstpointer data)
{
  if (rig_first_pass_only ("a refusal of an existing layer"))
    return;
  g_autofree char *err = NULL;
  g_autofree char *want = g_strdup_printf ("vda: %s already exists: --chain copy-base makes "
                                           "the copy of backing layer 2 itself (remove it, or "
                                           "give another --base-dir)\n", c->dst_base);

  GStatBuf before, after;

  img_create (c->dst_base, "raw", "1M");
  g_assert_cmpint (g_stat (c->dst_base, &before), ==, 0);
  copy_pair_start (c);
  g_assert_cmpint (copy_base (c, &err, NULL, NULL), ==, 4);
  g_assert_true (g_str_has_suffix (err, want));
  g_assert_true (strchr (err, '\n') == err + strlen (err) - 1);
  assert_clean (c, c->src, c->dst);
  g_assert_cmpint (g_stat (c->dst_base, &after), ==, 0);
  g_assert_cmpint (after.st_size, ==, before.st_size);
  g_assert_cmpint (after.st_mtime, ==, before.st_mtime);
  g_assert_false (g_file_test (c->target, G_FILE_TEST_EXISTS));
  g_assert_false (g_file_test (c->dst_snap, G_FILE_TEST_EXISTS));
}

/* Move would pivot the source onto a top whose chain is not there yet: refused at
 * begin. */
static void
test_copy_base_move_refused (Chain *c, gconstpointer data)
{
  if (rig_first_pass_only ("a refusal of move mode"))
    return;
  g_autofree char *err = NULL;

  copy_pair_start (c);
  g_assert_cmpint (blkmig_run (NULL, &err, "begin", "--qmp", c->src->qmp_path, "--mode", "move",
                               "--chain", "copy-base", NULL), ==, 2);
  g_assert_cmpstr (err, ==, "blkmig begin: --chain copy-base works with --mode live "
                            "and copy, not move (the source would pivot onto a top whose "
                            "chain is still being copied)\n");
}

/* One process per phase; the result cookie comes back from the source, and a
 * forged one naming another file for a layer's copy makes finish refuse to
 * compose: that file is not touched.  The honest cookie then composes. */
static void
test_copy_base_phases_forged (Chain *c, gconstpointer data)
{
  if (rig_first_pass_only ("a forged cookie"))
    return;
  g_autofree char *c2 = rig_path (c->rig, "dest.cookie");
  g_autofree char *c3 = rig_path (c->rig, "result.cookie");
  g_autofree char *forged = rig_path (c->rig, "forged.cookie");
  g_autofree char *victim = rig_path (c->rig, "victim.qcow2");
  g_autofree char *sock = rig_path (c->rig, "nbd.sock");
  g_autofree char *result = NULL;
  g_autofree char *err = NULL;
  g_auto(GStrv) victim_chain = NULL;
  g_autoptr(GString) text = NULL;

  img_create (victim, "qcow2", "1M");
  copy_base_begin_prepare (c, sock, c2);
  if (blkmig_run (NULL, &err, "perform", "-q", "--local-destination", "--qmp",
                  c->src->qmp_path, "-c", c2, "-o", c3, NULL) != 0)
    g_error ("perform failed: %s", err);
  g_assert_true (g_file_get_contents (c3, &result, NULL, NULL));
  text = g_string_new (result);
  g_assert_cmpuint (g_string_replace (text, c->dst_snap, victim, 1), ==, 1);
  g_assert_true (g_file_set_contents (forged, text->str, -1, NULL));
  g_clear_pointer (&err, g_free);
  g_assert_cmpint (blkmig_run (NULL, &err, "finish", "--qmp", c->dst->qmp_path, "-c", forged,
                               NULL), !=, 0);
  g_assert_nonnull (strstr (err, "is not a file this host's journal says blkmig created: "
                                 "nothing composed"));
  victim_chain = chain_files (victim);
  g_assert_cmpuint (g_strv_length (victim_chain), ==, 1);
  g_assert_cmpint (blkmig_run (NULL, NULL, "finish", "--qmp", c->dst->qmp_path, "-c", c3,
                               NULL), ==, 0);
  assert_clean (c, c->src, c->dst);
  vm_stop (c->src);
  vm_stop (c->dst);
  assert_chain_copied (c);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add ("/chain/live-top", Chain, NULL, chain_setup, test_live_top, chain_teardown);
  g_test_add ("/chain/copy-top-base-dir", Chain, NULL, chain_setup, test_copy_top_base_dir,
              chain_teardown);
  g_test_add ("/chain/top-refuses-other-base", Chain, NULL, chain_setup,
              test_top_refuses_other_base, chain_teardown);
  g_test_add ("/chain/phases-top-base-map", Chain, NULL, chain_setup, test_phases_top_base_map,
              chain_teardown);
  g_test_add ("/chain/cache-follows-changes", Chain, NULL, chain_setup,
              test_cache_follows_changes, chain_teardown);
  g_test_add ("/chain/top-needs-base", Chain, NULL, chain_setup, test_top_needs_base,
              chain_teardown);
  g_test_add ("/chain/copy-base", Chain, NULL, copy_base_setup, test_copy_base, chain_teardown);
  g_test_add ("/chain/live-copy-base", Chain, NULL, copy_base_setup, test_live_copy_base,
              chain_teardown);
  g_test_add ("/chain/live-copy-base/killed-at-completed", Chain, NULL, copy_base_setup,
              test_live_copy_base_recover_compose, chain_teardown);
  g_test_add ("/chain/live-copy-base/killed-at-mirror", Chain, NULL, copy_base_setup,
              test_live_copy_base_recover_rollback, chain_teardown);
  g_test_add ("/chain/copy-base-layer-exists", Chain, NULL, copy_base_setup,
              test_copy_base_layer_exists, chain_teardown);
  g_test_add ("/chain/copy-base/dest-dies", Chain, NULL, copy_base_setup,
              test_copy_base_dest_dies, chain_teardown);
  g_test_add ("/chain/copy-base/tunnel-breaks", Chain, NULL, copy_base_setup,
              test_copy_base_tunnel_breaks, chain_teardown);
  g_test_add ("/chain/copy-base/tls", Chain, NULL, copy_base_setup, test_copy_base_tls,
              chain_teardown);
  g_test_add ("/chain/copy-base/sigint", Chain, NULL, copy_base_setup, test_copy_base_sigint,
              chain_teardown);
  g_test_add ("/chain/copy-base-move-refused", Chain, NULL, chain_setup,
              test_copy_base_move_refused, chain_teardown);
  g_test_add ("/chain/copy-base-phases-forged", Chain, NULL, copy_base_setup,
              test_copy_base_phases_forged, chain_teardown);
  return g_test_run ();
}
