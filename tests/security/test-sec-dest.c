/* Hostile-peer tests of the destination side and local state (issue 9 items 3, 7, 12, 15). */
#include <glib/gstdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nbd/nbd-server.h"
#include "src/journal.h"
#include "src/util.h"
#include "tests/integration/harness.h"

#define ID_A "a0000000000000000000000000000001"
#define ID_B "b0000000000000000000000000000002"
#define ID_C "c0000000000000000000000000000003"
#define SIZE_64M "67108864"

/* ---- helpers -------------------------------------------------------------- */

static char *
disk_json (const char *name, const char *format)
{
  return g_strdup_printf ("{\"name\":\"%s\",\"node\":\"n-%s\",\"format\":\"%s\","
                          "\"virtual-size\":" SIZE_64M ",\"allocated\":0}", name, name, format);
}

/* A source cookie as a hostile or ordinary source would send it. */
static char *
source_cookie (Rig *rig, const char *id, const char *mode, const char *disks)
{
  g_autofree char *text = g_strdup_printf (
      "{\"version\":1,\"kind\":\"source\",\"id\":\"%s\",\"mode\":\"%s\","
      "\"source\":{\"host\":\"src\"},\"features\":[],\"disks\":[%s]}", id, mode, disks);
  g_autofree char *name = g_strdup_printf ("source-%.8s.json", id);
  char *path = rig_path (rig, name);

  g_assert_true (g_file_set_contents (path, text, -1, NULL));
  return path;
}

static char *
victim (Rig *rig, const char *name)
{
  char *path = rig_path (rig, name);

  g_assert_true (g_file_set_contents (path, "precious\n", -1, NULL));
  return path;
}

static void
assert_victim (const char *path)
{
  g_autofree char *text = NULL;

  g_assert_true (g_file_get_contents (path, &text, NULL, NULL));
  g_assert_cmpstr (text, ==, "precious\n");
}

static Vm *
start_target_vm (Rig *rig)
{
  g_autofree char *img = rig_path (rig, "dst-vda.qcow2");
  VmDisk disks[] = { { "vda", img, "qcow2" }, { NULL } };

  img_create (img, "qcow2", "64M");
  return vm_start (rig, "dst", disks, "paused nodevices");
}

static int
prepare (Vm *dst, const char *in, const char *out, char **err, const char *extra1,
         const char *extra2, const char *extra3)
{
  g_autofree char *dir = g_path_get_dirname (in);
  g_autofree char *base = g_path_get_basename (in);
  g_autofree char *sock = g_strdup_printf ("unix:%s/nbd-%s.sock", dir, base);

  return blkmig_run (NULL, err, "prepare", "--qmp", dst->qmp_path, "-c", in, "-o", out,
                     "--listen", sock, extra1, extra2, extra3, NULL);
}

/* The destination cookie at @path, turned into what a hostile peer hands back:
 * @kind, every path blkmig could remove pointing at the victims. */
static char *
forge (Rig *rig, const char *path, const char *kind, const char *v1, const char *v2,
       const char *v3)
{
  g_autoptr(JsonParser) parser = json_parser_new ();
  JsonObject *root, *dest, *disk;
  g_autofree char *migrate_uri = g_strdup_printf ("unix:%s", v2);
  g_autofree char *name = g_strdup_printf ("forged-%s.json", kind);
  g_autofree char *text = NULL;
  char *out = rig_path (rig, name);

  g_assert_true (json_parser_load_from_file (parser, path, NULL));
  root = json_node_get_object (json_parser_get_root (parser));
  json_object_set_string_member (root, "kind", kind);
  dest = json_object_get_object_member (root, "destination");
  json_object_set_string_member (json_object_get_object_member (dest, "nbd"), "unix", v1);
  json_object_set_string_member (dest, "migrate-uri", migrate_uri);
  disk = json_array_get_object_element (json_object_get_array_member (root, "disks"), 0);
  json_object_set_string_member (disk, "target", v3);
  json_object_set_boolean_member (disk, "created", TRUE);
  if (g_str_equal (kind, "result"))
    {
      JsonObject *result = json_object_new ();
      json_object_set_string_member (result, "status", "copied");
      json_object_set_int_member (result, "bytes", 0);
      json_object_set_object_member (root, "result", result);
    }
  text = json_to_string (json_parser_get_root (parser), TRUE);
  g_assert_true (g_file_set_contents (out, text, -1, NULL));
  return out;
}

static gboolean
exists (const char *path)
{
  GStatBuf st;

  return g_lstat (path, &st) == 0;
}

/* ---- item 15: URIs for --verify ------------------------------------------ */

static void
test_uri_escaped (void)
{
  NbdEndpoint unix_ep = { (char *) "/run/a b?socket=/x", NULL, 0 };
  NbdEndpoint tcp_ep = { NULL, (char *) "::1", 10809 };
  g_autofree char *u = nbd_endpoint_uri (&unix_ep, "e?socket=/etc/passwd#x");
  g_autofree char *t = nbd_endpoint_uri (&tcp_ep, "a/../b%00");

  g_assert_cmpstr (u, ==, "nbd+unix:///e%3Fsocket%3D%2Fetc%2Fpasswd%23x"
                          "?socket=/run/a%20b%3Fsocket%3D/x");
  g_assert_cmpstr (t, ==, "nbd://[::1]:10809/a%2F..%2Fb%2500");
}

/* ---- item 12: the state directory ---------------------------------------- */

static void
test_state_dir_mode (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *state = rig_path (rig, "state");
  g_autofree char *want = NULL;
  g_autoptr(Journal) journal = journal_new (ID_A, "prepare");
  g_autoptr(GError) error = NULL;

  g_assert_cmpint (g_mkdir (state, 0755), ==, 0);
  g_assert_cmpint (chmod (state, 0755), ==, 0);
  g_assert_false (journal_write (journal, JOURNAL_STEP_PREPARE, &error));
  want = g_strdup_printf ("state directory %s has mode 0755 and owner uid %u: it must be a "
                          "directory owned by uid %u with no access for others (chmod 700)",
                          state, geteuid (), geteuid ());
  g_assert_cmpstr (error->message, ==, want);
  g_assert_false (exists (journal->path));
  g_clear_error (&error);
  g_assert_cmpint (chmod (state, 0700), ==, 0);
  g_assert_true (journal_write (journal, JOURNAL_STEP_PREPARE, &error));
  g_assert_no_error (error);
}

static void
test_state_dir_owner (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *state = rig_path (rig, "state");
  g_autoptr(Journal) journal = journal_new (ID_A, "prepare");
  g_autoptr(GError) error = NULL;

  if (geteuid () != 0)
    {
      g_test_skip ("needs root to give the directory to another user");
      return;
    }
  g_assert_cmpint (g_mkdir (state, 0700), ==, 0);
  g_assert_cmpint (chown (state, 65534, 65534), ==, 0);
  g_assert_false (journal_write (journal, JOURNAL_STEP_PREPARE, &error));
  g_assert_nonnull (strstr (error->message, "has mode 0700 and owner uid 65534"));
  g_assert_false (exists (journal->path));
}

/* A link planted at the temp path is removed, never written through. */
static void
test_journal_tmp_link (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *state = rig_path (rig, "state");
  g_autofree char *target = victim (rig, "victim");
  g_autoptr(Journal) journal = journal_new (ID_A, "prepare");
  g_autofree char *tmp = g_strdup_printf ("%s.tmp", journal->path);
  g_autoptr(GError) error = NULL;
  GStatBuf st;

  g_assert_cmpint (g_mkdir (state, 0700), ==, 0);
  g_assert_cmpint (symlink (target, tmp), ==, 0);
  g_assert_true (journal_write (journal, JOURNAL_STEP_PREPARE, &error));
  g_assert_no_error (error);
  assert_victim (target);
  g_assert_cmpint (g_lstat (journal->path, &st), ==, 0);
  g_assert_true (S_ISREG (st.st_mode));
  g_assert_false (exists (tmp));
}

/* A journal naming @created, written into @state as if blkmig had left it. */
static char *
plant_journal (Rig *rig, const char *state, const char *const *created)
{
  g_autofree char *list = NULL;
  g_autofree char *text = NULL;
  g_autofree char *parts = NULL;
  g_autofree char *path = g_build_filename (state, ID_C "-prepare.json", NULL);
  GString *s = g_string_new (NULL);

  for (gsize i = 0; created[i] != NULL; i++)
    g_string_append_printf (s, "%s\"%s\"", i > 0 ? "," : "", created[i]);
  list = g_string_free (s, FALSE);
  text = g_strdup_printf ("{\"version\":1,\"id\":\"" ID_C "\",\"command\":\"prepare\","
                          "\"step\":\"prepare\",\"dest-qmp\":\"%s/gone.qmp\",\"created\":[%s],"
                          "\"cookie\":{\"version\":1,\"kind\":\"source\",\"id\":\"" ID_C "\","
                          "\"mode\":\"copy\",\"source\":{\"host\":\"h\"},\"features\":[],"
                          "\"disks\":[{\"name\":\"vda\",\"node\":\"n\",\"format\":\"raw\","
                          "\"virtual-size\":1,\"allocated\":0}]}}", rig->dir, list);
  g_assert_true (g_file_set_contents (path, text, -1, NULL));
  return g_steal_pointer (&path);
}

/* The state directory decides what recover removes: a journal in a directory
 * others can write is refused, and nothing is touched. */
static void
test_recover_insecure_dir (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *state = rig_path (rig, "state");
  g_autofree char *file = victim (rig, "victim");
  const char *created[] = { file, NULL };
  g_autofree char *err = NULL;
  g_autofree char *want = NULL;

  g_assert_cmpint (g_mkdir (state, 0777), ==, 0);
  g_assert_cmpint (chmod (state, 01777), ==, 0);
  g_free (plant_journal (rig, state, created));
  g_assert_cmpint (blkmig_run (NULL, &err, "recover", "--all", NULL), ==, 1);
  want = g_strdup_printf ("blkmig recover: state directory %s has mode 1777 and owner uid %u: "
                          "it must be a directory owned by uid %u with no access for others "
                          "(chmod 700)\n", state, geteuid (), geteuid ());
  g_assert_cmpstr (err, ==, want);
  assert_victim (file);
}

/* Another user's journal, even in a good state directory, is not read. */
static void
test_recover_foreign_journal (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *state = rig_path (rig, "state");
  g_autofree char *file = victim (rig, "victim");
  const char *created[] = { file, NULL };
  g_autofree char *journal = NULL;
  g_autofree char *err = NULL;

  g_assert_cmpint (g_mkdir (state, 0700), ==, 0);
  journal = plant_journal (rig, state, created);
  g_assert_cmpint (chown (journal, 65534, 65534), ==, 0);
  g_assert_cmpint (blkmig_run (NULL, &err, "recover", "--all", NULL), !=, 0);
  g_assert_nonnull (strstr (err, "not a regular file of uid"));
  assert_victim (file);
}

/* Even a journal in a good state directory removes only what looks like blkmig's:
 * not another directory's files, not through links, not relative paths. */
static void
test_recover_planted_journal (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *state = rig_path (rig, "state");
  g_autofree char *dir = rig_path (rig, "blkmig-AbCdEf");   /* the name, not the place */
  g_autofree char *in_dir = g_build_filename (dir, "data", NULL);
  g_autofree char *other = rig_path (rig, "other");
  g_autofree char *in_other = g_build_filename (other, "data", NULL);
  g_autofree char *link = rig_path (rig, "link-to-other");
  const char *created[] = { dir, link, "data", NULL };
  g_autofree char *out = NULL;

  g_assert_cmpint (g_mkdir (state, 0700), ==, 0);
  g_assert_cmpint (g_mkdir (dir, 0700), ==, 0);
  g_assert_cmpint (g_mkdir (other, 0700), ==, 0);
  g_assert_true (g_file_set_contents (in_dir, "precious\n", -1, NULL));
  g_assert_true (g_file_set_contents (in_other, "precious\n", -1, NULL));
  g_assert_cmpint (symlink (other, link), ==, 0);
  g_free (plant_journal (rig, state, created));
  g_assert_cmpint (blkmig_run (&out, NULL, "recover", "--all", NULL), ==, 0);
  assert_victim (in_dir);
  assert_victim (in_other);
  g_assert_true (exists (link));
  g_assert_cmpuint (rig_count_journals (rig), ==, 0);
}

/* What recover counts as a private directory of blkmig's: made by
 * util_private_dir_new, 0700, not a link, not the same name elsewhere. */
static void
test_private_dir_rule (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autoptr(GError) error = NULL;
  g_autofree char *dir = util_private_dir_new (&error);
  g_autofree char *base = g_path_get_basename (dir);
  g_autofree char *elsewhere = rig_path (rig, base);
  g_autofree char *parent = g_path_get_dirname (dir);
  g_autofree char *link_in_tmp = g_strdup_printf ("%s/blkmig-lInK%02d", parent,
                                                  g_random_int_range (0, 99));

  g_assert_no_error (error);
  g_assert_true (util_is_private_dir (dir));
  g_assert_cmpint (g_mkdir (elsewhere, 0700), ==, 0);
  g_assert_false (util_is_private_dir (elsewhere));
  g_assert_cmpint (symlink (dir, link_in_tmp), ==, 0);
  g_assert_false (util_is_private_dir (link_in_tmp));
  g_assert_cmpint (g_unlink (link_in_tmp), ==, 0);
  g_assert_cmpint (chmod (dir, 0755), ==, 0);
  g_assert_false (util_is_private_dir (dir));
  util_private_dir_remove (dir);
  g_assert_true (exists (dir));  /* others could enter it: not ours to empty */
  g_assert_cmpint (chmod (dir, 0700), ==, 0);
  util_private_dir_remove (dir);
  g_assert_false (exists (dir));
}

/* A link swapped in for a private directory is never followed when it is emptied. */
static void
test_private_dir_swapped (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *victim = rig_path (rig, "victim");
  g_autofree char *file = rig_path (rig, "victim/precious");
  g_autofree char *swapped = rig_path (rig, ".blkmig-AbC123");

  g_assert_cmpint (g_mkdir (victim, 0700), ==, 0);
  g_assert_true (g_file_set_contents (file, "data", -1, NULL));
  g_assert_cmpint (symlink (victim, swapped), ==, 0);
  util_private_dir_remove (swapped);
  g_assert_true (exists (file));
  g_assert_cmpint (g_unlink (swapped), ==, 0);
}

/* ---- item 7: making a target never replaces what appeared at its name ------ */

/* A link (or file) that appears after the plan, before the rename: the creation
 * fails and neither the link's target nor the link is touched. */
static void
test_create_new_no_replace (void)
{
  g_autoptr(Rig) rig = rig_new ();
  g_autofree char *path = rig_path (rig, "t.qcow2");
  g_autofree char *elsewhere = victim (rig, "elsewhere");
  g_autofree char *staging = NULL;
  g_autofree char *want = NULL;
  g_autoptr(GError) error = NULL;

  staging = util_staging_dir_new (rig->dir, &error);
  g_assert_no_error (error);
  g_assert_true (util_is_private_dir (staging));
  g_assert_cmpint (symlink (elsewhere, path), ==, 0);
  g_assert_false (util_image_create_new (path, staging, "qcow2", 1 << 20, NULL, &error));
  want = g_strdup_printf ("cannot create %s: File exists", path);
  g_assert_cmpstr (error->message, ==, want);
  assert_victim (elsewhere);
  util_private_dir_remove (staging);
  g_assert_false (exists (staging));
  g_clear_error (&error);
  g_assert_cmpint (g_unlink (path), ==, 0);
  staging = (g_free (staging), util_staging_dir_new (rig->dir, &error));
  g_assert_true (util_image_create_new (path, staging, "qcow2", 1 << 20, NULL, &error));
  g_assert_no_error (error);
  util_private_dir_remove (staging);
}

/* ---- item 3: finish and abort remove only what the journal lists ---------- */

typedef struct {
  Rig *rig;
  Vm *dst;
  char *v1, *v2, *v3;
} Dest;

static void
dest_setup (Dest *d, gconstpointer data)
{
  d->rig = rig_new ();
  d->dst = start_target_vm (d->rig);
  d->v1 = victim (d->rig, "victim-nbd");
  d->v2 = victim (d->rig, "victim-migrate");
  d->v3 = victim (d->rig, "victim-target");
}

static void
dest_teardown (Dest *d, gconstpointer data)
{
  rig_free (d->rig);
  g_free (d->v1);
  g_free (d->v2);
  g_free (d->v3);
}

/* prepare for a copy of vda; returns the destination cookie's path. */
static char *
dest_prepare (Dest *d, const char *id)
{
  g_autofree char *vda = disk_json ("vda", "qcow2");
  g_autofree char *in = source_cookie (d->rig, id, "copy", vda);
  char *out = g_strdup_printf ("%s.dest", in);
  g_autofree char *err = NULL;

  g_assert_cmpint (prepare (d->dst, in, out, &err, NULL, NULL, NULL), ==, 0);
  g_assert_cmpuint (vm_count_exports (d->dst), ==, 1);
  return out;
}

static void
assert_victims (Dest *d)
{
  assert_victim (d->v1);
  assert_victim (d->v2);
  assert_victim (d->v3);
}

static void
test_finish_forged (Dest *d, gconstpointer data)
{
  g_autofree char *dest = dest_prepare (d, ID_A);
  g_autofree char *sock = g_strdup_printf ("%s/nbd-source-a0000000.json.sock", d->rig->dir);
  g_autofree char *forged = forge (d->rig, dest, "result", d->v1, d->v2, d->v3);

  g_assert_true (exists (sock));
  g_assert_cmpint (blkmig_run (NULL, NULL, "finish", "--qmp", d->dst->qmp_path, "-c", forged,
                               NULL), ==, 0);
  assert_victims (d);
  g_assert_false (exists (sock));   /* the journal's socket goes */
  g_assert_cmpuint (vm_count_exports (d->dst), ==, 0);
  g_assert_cmpuint (rig_count_journals (d->rig), ==, 0);
}

static void
test_abort_forged (Dest *d, gconstpointer data)
{
  g_autofree char *dest = dest_prepare (d, ID_A);
  g_autofree char *sock = g_strdup_printf ("%s/nbd-source-a0000000.json.sock", d->rig->dir);
  g_autofree char *forged = forge (d->rig, dest, "destination", d->v1, d->v2, d->v3);

  g_assert_cmpint (blkmig_run (NULL, NULL, "abort", "--qmp", d->dst->qmp_path, "-c", forged,
                               NULL), ==, 0);
  assert_victims (d);
  g_assert_false (exists (sock));
  g_assert_cmpuint (vm_count_exports (d->dst), ==, 0);
  g_assert_cmpuint (vm_count_blkmig_nodes (d->dst), ==, 0);
  g_assert_cmpuint (rig_count_journals (d->rig), ==, 0);
}

/* No journal (another host's abort, a lost state directory): QEMU's objects named
 * after the migration go, no file is removed. */
static void
test_abort_forged_no_journal (Dest *d, gconstpointer data)
{
  g_autofree char *dest = dest_prepare (d, ID_B);
  g_autofree char *forged = forge (d->rig, dest, "destination", d->v1, d->v2, d->v3);
  g_autofree char *journal = g_strdup_printf ("%s/state/" ID_B "-prepare.json", d->rig->dir);

  g_assert_cmpint (g_unlink (journal), ==, 0);
  g_assert_cmpint (blkmig_run (NULL, NULL, "abort", "--qmp", d->dst->qmp_path, "-c", forged,
                               NULL), ==, 0);
  assert_victims (d);
  g_assert_cmpuint (vm_count_exports (d->dst), ==, 0);
}

/* ---- item 7: --create-dir ------------------------------------------------- */

typedef struct {
  Rig *rig;
  Vm *dst;
  char *dir;       /* --create-dir */
} Create;

static void
create_setup (Create *c, gconstpointer data)
{
  c->rig = rig_new ();
  c->dst = start_target_vm (c->rig);
  c->dir = rig_path (c->rig, "images");
  g_assert_cmpint (g_mkdir (c->dir, 0755), ==, 0);
}

static void
create_teardown (Create *c, gconstpointer data)
{
  rig_free (c->rig);
  g_free (c->dir);
}

static int
create_prepare (Create *c, const char *id, const char *disks, char **err, const char *extra)
{
  g_autofree char *in = source_cookie (c->rig, id, "copy", disks);
  g_autofree char *out = g_strdup_printf ("%s.dest", in);

  return prepare (c->dst, in, out, err, "--create-dir", c->dir, extra);
}

static void
assert_nothing_made (Create *c)
{
  g_assert_cmpuint (vm_count_exports (c->dst), ==, 0);
  g_assert_cmpuint (vm_count_blkmig_nodes (c->dst), ==, 0);
  g_assert_cmpuint (rig_count_journals (c->rig), ==, 0);
}

/* Another VM's image named like the source's disk is refused, not overwritten. */
static void
test_create_existing (Create *c, gconstpointer data)
{
  g_autofree char *image = g_build_filename (c->dir, "vdb.qcow2", NULL);
  g_autofree char *copy = rig_path (c->rig, "vdb-before.qcow2");
  g_autofree char *vdb = disk_json ("vdb", "qcow2");
  g_autofree char *err = NULL;
  g_autofree char *want = NULL;

  img_create (image, "qcow2", "64M");
  img_write (image, "qcow2", 0x5a, "0", "1M");
  file_copy_sparse (image, copy);
  g_assert_cmpint (create_prepare (c, ID_A, vdb, &err, NULL), ==, 4);
  want = g_strdup_printf ("blkmig prepare: vdb: %s already exists: blkmig does not "
                          "adopt an existing file (name it with --target vdb=PATH to use it)\n",
                          image);
  g_assert_cmpstr (err, ==, want);
  g_assert_true (img_identical (image, copy));
  assert_nothing_made (c);
}

/* A link planted at the target path is neither followed nor replaced. */
static void
test_create_link (Create *c, gconstpointer data)
{
  g_autofree char *image = g_build_filename (c->dir, "vdc.raw", NULL);
  g_autofree char *elsewhere = rig_path (c->rig, "elsewhere.raw");
  g_autofree char *vdc = disk_json ("vdc", "raw");
  g_autofree char *err = NULL;

  g_assert_cmpint (symlink (elsewhere, image), ==, 0);
  g_assert_cmpint (create_prepare (c, ID_A, vdc, &err, NULL), ==, 4);
  g_assert_nonnull (strstr (err, "vdc.raw already exists"));
  g_assert_false (exists (elsewhere));
  assert_nothing_made (c);
}

static void
test_create_collision (Create *c, gconstpointer data)
{
  g_autofree char *a = disk_json ("x#y", "qcow2");
  g_autofree char *b = disk_json ("x_y", "qcow2");
  g_autofree char *disks = g_strdup_printf ("%s,%s", a, b);
  g_autofree char *same = g_build_filename (c->dir, "x_y.qcow2", NULL);
  g_autofree char *err = NULL;
  g_autofree char *want = NULL;

  g_assert_cmpint (create_prepare (c, ID_A, disks, &err, NULL), ==, 4);
  want = g_strdup_printf ("blkmig prepare: disks x#y and x_y would both use "
                          "%s/x_y.qcow2: name their targets with --target NAME=PATH\n", c->dir);
  g_assert_cmpstr (err, ==, want);
  g_assert_false (exists (same));
  assert_nothing_made (c);
}

static void
test_create_bad_format (Create *c, gconstpointer data)
{
  g_autofree char *dot = disk_json (".", "/../../etc/passwd");
  g_autofree char *err = NULL;
  g_autofree char *want = g_strdup_printf ("blkmig prepare: cookie: %s/source-a0000000.json: "
                                           "disks[0].format must be raw or qcow2, got "
                                           "'/../../etc/passwd'\n", c->rig->dir);

  g_assert_cmpint (create_prepare (c, ID_A, dot, &err, NULL), ==, 3);
  g_assert_cmpstr (err, ==, want);
  assert_nothing_made (c);
}

/* What still works: a new target is made (no staging directory left) and abort
 * removes it; a target the operator names is used and kept. */
static void
test_create_and_named (Create *c, gconstpointer data)
{
  g_autofree char *made = g_build_filename (c->dir, "vdd.qcow2", NULL);
  g_autofree char *named = rig_path (c->rig, "mine.qcow2");
  g_autofree char *target = g_strdup_printf ("vde=%s", named);
  g_autofree char *vdd = disk_json ("vdd", "qcow2");
  g_autofree char *vde = disk_json ("vde", "qcow2");
  g_autofree char *disks = g_strdup_printf ("%s,%s", vdd, vde);
  g_autofree char *src = NULL;
  g_autoptr(GDir) d = NULL;
  g_autofree char *err = NULL;

  img_create (named, "qcow2", "64M");
  src = source_cookie (c->rig, ID_B, "copy", disks);
  {
    g_autofree char *out = g_strdup_printf ("%s.dest", src);
    g_autofree char *sock = g_strdup_printf ("unix:%s/nbd.sock", c->rig->dir);
    g_assert_cmpint (blkmig_run (NULL, &err, "prepare", "--qmp", c->dst->qmp_path, "-c", src,
                                 "-o", out, "--listen", sock, "--create-dir", c->dir,
                                 "--target", target, NULL), ==, 0);
  }
  g_assert_true (exists (made));
  d = g_dir_open (c->dir, 0, NULL);
  g_assert_cmpstr (g_dir_read_name (d), ==, "vdd.qcow2");   /* no .blkmig-XXXXXX left */
  g_assert_null (g_dir_read_name (d));
  g_assert_cmpint (blkmig_run (NULL, NULL, "abort", "--qmp", c->dst->qmp_path, "-c", src,
                               NULL), ==, 0);
  g_assert_false (exists (made));
  g_assert_true (exists (named));
  assert_nothing_made (c);
}

/* A file the operator names is opened as its name says, never as the peer's format:
 * a raw image holding a qcow2 header (the guest wrote it) would name a backing file. */
static void
test_named_format (Create *c, gconstpointer data)
{
  g_autofree char *raw = rig_path (c->rig, "guest.raw");
  g_autofree char *odd = rig_path (c->rig, "guest.disk");
  g_autofree char *as_raw = g_strdup_printf ("--target=vdf=%s", raw);
  g_autofree char *as_odd = g_strdup_printf ("--target=vdf=%s", odd);
  g_autofree char *vdf = disk_json ("vdf", "qcow2");
  g_autofree char *src = source_cookie (c->rig, ID_B, "copy", vdf);
  g_autofree char *out = g_strdup_printf ("%s.dest", src);
  g_autofree char *err = NULL;
  g_autofree char *want = NULL;

  img_create (raw, "qcow2", "64M");  /* a qcow2 header inside what the operator calls raw */
  g_assert_cmpint (prepare (c->dst, src, out, &err, as_raw, NULL, NULL), ==, 4);
  want = g_strdup_printf ("blkmig prepare: vdf: --target %s is a raw image by its name, the "
                          "source's disk is qcow2\n", raw);
  g_assert_cmpstr (err, ==, want);
  g_clear_pointer (&err, g_free);
  g_assert_true (g_rename (raw, odd) == 0);
  g_assert_cmpint (prepare (c->dst, src, out, &err, as_odd, NULL, NULL), ==, 2);
  g_clear_pointer (&want, g_free);
  want = g_strdup_printf ("blkmig prepare: --target vdf=%s: the file's name must say its "
                          "format (.qcow2, .raw or .img)\n", odd);
  g_assert_cmpstr (err, ==, want);
  assert_nothing_made (c);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/sec-dest/uri-escaped", test_uri_escaped);
  g_test_add_func ("/sec-dest/state-dir-mode", test_state_dir_mode);
  g_test_add_func ("/sec-dest/state-dir-owner", test_state_dir_owner);
  g_test_add_func ("/sec-dest/journal-tmp-link", test_journal_tmp_link);
  g_test_add_func ("/sec-dest/recover-insecure-dir", test_recover_insecure_dir);
  g_test_add_func ("/sec-dest/recover-foreign-journal", test_recover_foreign_journal);
  g_test_add_func ("/sec-dest/recover-planted-journal", test_recover_planted_journal);
  g_test_add_func ("/sec-dest/private-dir-rule", test_private_dir_rule);
  g_test_add_func ("/sec-dest/private-dir-swapped", test_private_dir_swapped);
  g_test_add_func ("/sec-dest/create-new-no-replace", test_create_new_no_replace);
  g_test_add ("/sec-dest/finish-forged", Dest, NULL, dest_setup, test_finish_forged,
              dest_teardown);
  g_test_add ("/sec-dest/abort-forged", Dest, NULL, dest_setup, test_abort_forged,
              dest_teardown);
  g_test_add ("/sec-dest/abort-forged-no-journal", Dest, NULL, dest_setup,
              test_abort_forged_no_journal, dest_teardown);
  g_test_add ("/sec-dest/create-existing", Create, NULL, create_setup, test_create_existing,
              create_teardown);
  g_test_add ("/sec-dest/create-link", Create, NULL, create_setup, test_create_link,
              create_teardown);
  g_test_add ("/sec-dest/create-collision", Create, NULL, create_setup, test_create_collision,
              create_teardown);
  g_test_add ("/sec-dest/create-bad-format", Create, NULL, create_setup, test_create_bad_format,
              create_teardown);
  g_test_add ("/sec-dest/create-and-named", Create, NULL, create_setup, test_create_and_named,
              create_teardown);
  g_test_add ("/sec-dest/named-format", Create, NULL, create_setup, test_named_format,
              create_teardown);
  return g_test_run ();
}
