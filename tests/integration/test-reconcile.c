/* reconcile after a host crash during blkmig move or merge: at every step of the pivot; a 3-layer chain. */
#include <glib/gstdio.h>
#include <signal.h>
#include <sys/wait.h>

#include "tests/integration/harness.h"

typedef struct {
  const char *name;
  const char *pause_at;       /* journal step where blkmig stops (NULL: kill while copying) */
  gboolean new_wins;          /* the new image is authoritative */
} CrashCase;

typedef struct {
  Rig *rig;
  char *old_image;            /* top of base <- mid <- top */
  char *new_image;
  Vm *vm;
} Fixture;

static void
run_tool (const char *const *argv)
{
  g_autoptr(GError) error = NULL;
  int status = 0;

  g_spawn_sync (NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL,
                NULL, NULL, NULL, NULL, &status, &error);
  g_assert_no_error (error);
  g_assert_true (g_spawn_check_wait_status (status, NULL));
}

/* base (data at 0) <- mid (data at 8M) <- top (data at 16M): three layers. */
static void
fixture_setup (Fixture *f, gconstpointer data)
{
  g_autofree char *base = NULL;
  g_autofree char *mid = NULL;
  VmDisk disks[] = { { "vda", NULL, "qcow2" }, { NULL } };

  f->rig = rig_new ();
  base = rig_path (f->rig, "base.qcow2");
  mid = rig_path (f->rig, "mid.qcow2");
  f->old_image = rig_path (f->rig, "top.qcow2");
  f->new_image = rig_path (f->rig, "moved.qcow2");
  img_create (base, "qcow2", "64M");
  img_write (base, "qcow2", 0x0b, "0", "8M");
  run_tool ((const char *const[]) { "qemu-img", "create", "-q", "-f", "qcow2", "-b", base,
                                    "-F", "qcow2", mid, NULL });
  img_write (mid, "qcow2", 0x0c, "8M", "8M");
  run_tool ((const char *const[]) { "qemu-img", "create", "-q", "-f", "qcow2", "-b", mid,
                                    "-F", "qcow2", f->old_image, NULL });
  img_write (f->old_image, "qcow2", 0x0d, "16M", "8M");
  disks[0].path = f->old_image;
  f->vm = vm_start (f->rig, "vm", disks, NULL);
}

static void
fixture_teardown (Fixture *f, gconstpointer data)
{
  rig_free (f->rig);
  g_free (f->old_image);
  g_free (f->new_image);
}

static void
wait_stopped (GSubprocess *proc)
{
  g_autofree char *stat = g_strdup_printf ("/proc/%s/stat", g_subprocess_get_identifier (proc));

  for (int i = 0; i < 1500; i++)
    {
      g_autofree char *text = NULL;
      if (g_file_get_contents (stat, &text, NULL, NULL) && strstr (text, ") T ") != NULL)
        return;
      g_usleep (20 * 1000);
    }
  g_error ("blkmig did not stop at its pause point");
}

/* The host dies: QEMU and blkmig are gone at once, mid-move. */
static void
crash_during_move (Fixture *f, const CrashCase *cc)
{
  g_autoptr(GSubprocess) proc = NULL;

  if (cc->pause_at != NULL)
    g_setenv ("BLKMIG_TEST_PAUSE_AT", cc->pause_at, TRUE);
  /* slow while copying, so the crash lands mid-copy; full speed to reach the pivot */
  proc = blkmig_spawn ("move", "-q", "--speed", cc->pause_at != NULL ? "0" : "1048576",
                       "--qmp", f->vm->qmp_path, "--disk", "vda", "--to", f->new_image, NULL);
  g_unsetenv ("BLKMIG_TEST_PAUSE_AT");
  if (cc->pause_at != NULL)
    wait_stopped (proc);
  else
    vm_wait_for_jobs (f->vm);
  /* blkmig first: given a moment it would notice QEMU's death and clean up */
  g_subprocess_force_exit (proc);
  blkmig_wait (proc, NULL, NULL);
  g_subprocess_force_exit (f->vm->proc);
  g_subprocess_wait (f->vm->proc, NULL, NULL);
  vm_stop (f->vm);
}

static JsonObject *
reconcile (const char *image, const char *fix, int want_status)
{
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;
  JsonNode *node;

  g_assert_cmpint (blkmig_run (&out, &err, "reconcile", image, fix, NULL), ==, want_status);
  node = json_from_string (out, NULL);
  g_assert_nonnull (node);
  return json_node_get_object (node);
}

static void
test_crash (Fixture *f, gconstpointer data)
{
  const CrashCase *cc = data;
  JsonObject *r;
  const char *winner = cc->new_wins ? f->new_image : f->old_image;

  crash_during_move (f, cc);
  g_assert_cmpuint (rig_count_journals (f->rig), ==, 1);
  r = reconcile (f->old_image, NULL, 0);
  g_assert_cmpstr (json_object_get_string_member (r, "authoritative"), ==, winner);
  g_assert_false (json_object_get_boolean_member (r, "fixed"));
  g_assert_cmpuint (json_array_get_length (json_object_get_array_member (r, "chain")), ==,
                    cc->new_wins ? 1 : 3);
  g_assert_cmpuint (rig_count_journals (f->rig), ==, 1);  /* without --fix nothing changes */
  json_object_unref (r);
  r = reconcile (f->new_image, "--fix", 0);
  g_assert_cmpstr (json_object_get_string_member (r, "authoritative"), ==, winner);
  g_assert_true (json_object_get_boolean_member (r, "fixed"));
  json_object_unref (r);
  g_assert_cmpuint (rig_count_journals (f->rig), ==, 0);
  g_assert_true (g_file_test (f->new_image, G_FILE_TEST_EXISTS) == cc->new_wins);
  g_assert_true (g_file_test (f->old_image, G_FILE_TEST_EXISTS));
  g_assert_true (img_has_pattern (winner, "qcow2", 0x0c, "8M", "8M"));
}

static void
test_in_use (Fixture *f, gconstpointer data)
{
  g_autofree char *err = NULL;
  g_autofree char *want = g_strdup_printf ("blkmig reconcile: %s is in use (a QEMU holds its "
                                           "lock): reconcile works on offline images; for a "
                                           "running VM use blkmig recover\n", f->old_image);

  g_assert_cmpint (blkmig_run (NULL, &err, "reconcile", f->old_image, NULL), ==, 4);
  g_assert_cmpstr (err, ==, want);
}

/* ---- merge ---------------------------------------------------------------- */

/* A host crash during `merge`: where blkmig stands, what the guest wrote meanwhile. */
typedef struct {
  const char *name;
  gboolean internal;          /* --top mid (into base), else the active layer into mid */
  const char *pause_at;       /* NULL: crash while the commit copies (speed-limited) */
  gboolean resume;            /* SIGCONT blkmig and crash at once: the pivot was asked */
  int guest_pattern;          /* written by the guest at 20M just before the crash, or 0 */
  gboolean base_wins;         /* active: the base (mid) is authoritative */
  gboolean completed;
} MergeCrash;

static void
crash_during_merge (Fixture *f, const MergeCrash *mc)
{
  g_autoptr(GSubprocess) proc = NULL;
  g_autofree char *mid = rig_path (f->rig, "mid.qcow2");

  if (mc->pause_at != NULL)
    g_setenv ("BLKMIG_TEST_PAUSE_AT", mc->pause_at, TRUE);
  /* slow while copying, so the crash lands mid-copy; full speed to reach the pivot */
  proc = blkmig_spawn ("merge", "-q", "--speed", mc->pause_at != NULL ? "0" : "1048576",
                       "--qmp", f->vm->qmp_path, "--disk", "vda",
                       "--top", mc->internal ? mid : f->old_image, NULL);
  g_unsetenv ("BLKMIG_TEST_PAUSE_AT");
  if (mc->pause_at != NULL)
    wait_stopped (proc);
  else
    vm_wait_for_jobs (f->vm);
  if (mc->guest_pattern != 0)
    vm_guest_write (f->vm, "vda", mc->guest_pattern, "20M", "1M");
  if (mc->resume)
    kill (atoi (g_subprocess_get_identifier (proc)), SIGCONT);
  g_subprocess_force_exit (f->vm->proc);
  g_subprocess_wait (f->vm->proc, NULL, NULL);
  g_subprocess_force_exit (proc);
  blkmig_wait (proc, NULL, NULL);
  vm_stop (f->vm);
}

/* qemu-img check finds no corruption in @file.  Leaked clusters (exit 3) are
 * allowed: a QEMU killed mid-write leaves them, and they cost space, not data. */
static void
assert_consistent (const char *file)
{
  const char *argv[] = { "qemu-img", "check", "-q", "-f", "qcow2", file, NULL };
  g_autoptr(GError) error = NULL;
  int status = 0;

  g_spawn_sync (NULL, (char **) argv, NULL,
                G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_STDERR_TO_DEV_NULL,
                NULL, NULL, NULL, NULL, &status, &error);
  g_assert_no_error (error);
  g_assert_true (WIFEXITED (status));
  if (WEXITSTATUS (status) != 0 && WEXITSTATUS (status) != 3)
    g_error ("qemu-img check %s: exit %d", file, WEXITSTATUS (status));
}

/* Every layer of the authoritative chain passes qemu-img check, and a QEMU opens it. */
static void
assert_chain_usable (Fixture *f, JsonObject *r)
{
  JsonArray *volumes = json_object_get_array_member (r, "volumes");
  const char *leaf = json_object_get_string_member (r, "authoritative");
  VmDisk disks[] = { { "vda", leaf, "qcow2" }, { NULL } };
  Vm *vm;
  g_autofree char *file = NULL;

  for (guint i = 0; i < json_array_get_length (volumes); i++)
    {
      JsonObject *v = json_array_get_object_element (volumes, i);
      assert_consistent (json_object_get_string_member (v, "file"));
    }
  vm = vm_start (f->rig, "after", disks, NULL);
  file = vm_disk_file (vm, "vda");
  g_assert_cmpstr (file, ==, leaf);
  vm_stop (vm);
}

static void
test_merge_crash (Fixture *f, gconstpointer data)
{
  const MergeCrash *mc = data;
  g_autofree char *mid = rig_path (f->rig, "mid.qcow2");
  g_autofree char *base = rig_path (f->rig, "base.qcow2");
  const char *winner;
  JsonObject *r;

  crash_during_merge (f, mc);
  g_assert_cmpuint (rig_count_journals (f->rig), ==, 1);
  r = reconcile (mid, NULL, 0);
  winner = json_object_get_string_member (r, "authoritative");
  g_assert_cmpstr (json_object_get_string_member (r, "operation"), ==, "merge");
  /* racing the pivot (resume) may land on either side of "pivoted": both must be right */
  if (!mc->resume)
    {
      g_assert_cmpstr (winner, ==, mc->base_wins ? mid : f->old_image);
      g_assert_true (json_object_get_boolean_member (r, "completed") == mc->completed);
    }
  if (!mc->resume)
    g_assert_cmpuint (json_array_get_length (json_object_get_array_member (r, "volumes")), ==,
                      mc->base_wins || (mc->internal && mc->completed) ? 2 : 3);
  json_object_unref (r);
  g_assert_cmpuint (rig_count_journals (f->rig), ==, 1);
  r = reconcile (base, "--fix", 0);
  g_assert_true (json_object_get_boolean_member (r, "fixed"));
  g_assert_cmpuint (rig_count_journals (f->rig), ==, 0);
  winner = json_object_get_string_member (r, "authoritative");
  /* no acknowledged write lost: every layer's data and the guest's last write */
  g_assert_true (img_has_pattern (winner, "qcow2", 0x0b, "0", "8M"));
  g_assert_true (img_has_pattern (winner, "qcow2", 0x0c, "8M", "8M"));
  g_assert_true (img_has_pattern (winner, "qcow2", 0x0d, "16M", "4M"));
  if (mc->guest_pattern != 0)
    g_assert_true (img_has_pattern (winner, "qcow2", mc->guest_pattern, "20M", "1M"));
  /* the merged top that lost is dropped; a top that holds the truth stays */
  g_assert_true (g_file_test (f->old_image, G_FILE_TEST_EXISTS) == !g_str_equal (winner, mid));
  assert_chain_usable (f, r);
  json_object_unref (r);
}

static const MergeCrash merge_cases[] = {
  { "active-copying", FALSE, NULL, FALSE, 0x1e, FALSE, FALSE },
  { "active-ready", FALSE, "ready", FALSE, 0x1f, FALSE, FALSE },
  { "active-marked", FALSE, "superseded", FALSE, 0, FALSE, FALSE },
  { "active-pivot-asked", FALSE, "superseded", TRUE, 0, FALSE, FALSE },
  { "active-pivoted", FALSE, "pivoted", FALSE, 0, TRUE, TRUE },
  { "active-resumed", FALSE, "committed", FALSE, 0x2a, TRUE, TRUE },
  { "internal-copying", TRUE, NULL, FALSE, 0x2b, FALSE, FALSE },
  { "internal-completed", TRUE, "committed", FALSE, 0x2c, FALSE, TRUE },
};

static const CrashCase cases[] = {
  { "before-pivot", NULL, FALSE },
  { "pivot-requested", "superseded", TRUE },
  { "pivot-done", "pivoted", TRUE },
};

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autofree char *path = g_strdup_printf ("/reconcile/crash-%s", cases[i].name);
      g_test_add (path, Fixture, &cases[i], fixture_setup, test_crash, fixture_teardown);
    }
  for (gsize i = 0; i < G_N_ELEMENTS (merge_cases); i++)
    {
      g_autofree char *path = g_strdup_printf ("/reconcile/merge-crash-%s", merge_cases[i].name);
      g_test_add (path, Fixture, &merge_cases[i], fixture_setup, test_merge_crash,
                  fixture_teardown);
    }
  g_test_add ("/reconcile/refuses-image-in-use", Fixture, NULL, fixture_setup, test_in_use,
              fixture_teardown);
  return g_test_run ();
}
