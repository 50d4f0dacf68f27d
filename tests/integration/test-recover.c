/* SIGKILL blkmig right after each journal step, then `blkmig recover`: done or never started. */
#include "tests/integration/harness.h"

typedef struct {
  const char *mode;          /* migrate --mode */
  const char *step;          /* BLKMIG_TEST_KILL_AT */
  gboolean completes;        /* recover finishes it rather than rolling back */
} KillCase;

typedef struct {
  Rig *rig;
  char *src_img, *dst_img;
  Vm *src, *dst;
} Pair;

static Vm *
start_dst (Pair *p, const char *name)
{
  VmDisk disks[] = { { "vda", p->dst_img, "qcow2" }, { NULL } };

  return vm_start (p->rig, name, disks, "incoming");
}

static void
pair_setup (Pair *p, gconstpointer data)
{
  VmDisk disks[] = { { "vda", NULL, "qcow2" }, { NULL } };

  p->rig = rig_new ();
  p->src_img = rig_path (p->rig, "src.qcow2");
  p->dst_img = rig_path (p->rig, "dst.qcow2");
  img_create (p->src_img, "qcow2", "64M");
  img_write (p->src_img, "qcow2", 0x61, "0", "8M");
  img_create (p->dst_img, "qcow2", "64M");
  disks[0].path = p->src_img;
  p->src = vm_start (p->rig, "src", disks, NULL);
  p->dst = start_dst (p, "dst");
}

static void
pair_teardown (Pair *p, gconstpointer data)
{
  rig_free (p->rig);
  g_free (p->src_img);
  g_free (p->dst_img);
}

static int
migrate_killed_at (Pair *p, const KillCase *kc)
{
  int status;

  g_setenv ("BLKMIG_TEST_KILL_AT", kc->step, TRUE);
  status = blkmig_run (NULL, NULL, "migrate", "-q", "--mode", kc->mode, "--source",
                       p->src->qmp_path, "--dest", p->dst->qmp_path, NULL);
  g_unsetenv ("BLKMIG_TEST_KILL_AT");
  return status;
}

static void
assert_status (Vm *vm, const char *want)
{
  g_autofree char *status = vm_status (vm);

  g_assert_cmpstr (status, ==, want);
}

/* A reply of the destination, or NULL when that QEMU has ended: a cancelled
 * incoming migration ends it, and it may still be on its way out when we ask. */
static JsonNode *
dst_query (Pair *p, const char *command, const char *args)
{
  g_autoptr(GError) error = NULL;
  JsonNode *ret;

  if (qmp_client_get_state (p->dst->qmp) != QMP_STATE_READY)
    return NULL;
  ret = vm_qmp_try (p->dst, command, args, &error);
  if (g_error_matches (error, QMP_ERROR, QMP_ERROR_CLOSED))
    return NULL;
  g_assert_no_error (error);
  return ret;
}

static void
assert_nothing_left (Pair *p)
{
  g_autoptr(JsonNode) exports = NULL;
  g_autoptr(JsonNode) nodes = NULL;
  JsonArray *list;

  g_assert_cmpuint (vm_count_jobs (p->src), ==, 0);
  g_assert_cmpuint (vm_count_blkmig_nodes (p->src), ==, 0);
  g_assert_cmpuint (rig_count_journals (p->rig), ==, 0);
  if ((exports = dst_query (p, "query-block-exports", NULL)) == NULL
      || (nodes = dst_query (p, "query-named-block-nodes", "{\"flat\":true}")) == NULL)
    return;
  g_assert_cmpuint (json_array_get_length (json_node_get_array (exports)), ==, 0);
  list = json_node_get_array (nodes);
  for (guint i = 0; i < json_array_get_length (list); i++)
    g_assert_false (g_str_has_prefix (json_object_get_string_member (
        json_array_get_object_element (list, i), "node-name"), "blkmig"));
}

static void
test_kill_then_recover (Pair *p, gconstpointer data)
{
  const KillCase *kc = data;
  g_autofree char *out = NULL;
  g_autofree char *again = NULL;

  /* killed before anything reached a QEMU: recover's decision alone */
  if ((g_str_equal (kc->step, "begin") || g_str_equal (kc->step, "prepare"))
      && rig_first_pass_only ("a kill before any QEMU was touched"))
    return;
  g_assert_cmpint (migrate_killed_at (p, kc), ==, 128 + 9);
  g_assert_cmpuint (rig_count_journals (p->rig), ==, 1);
  g_assert_cmpint (blkmig_run (&out, NULL, "recover", "--all", NULL), ==, 0);
  g_assert_nonnull (strstr (out, kc->completes ? "had completed" : "rolled back"));
  assert_nothing_left (p);
  g_assert_cmpint (blkmig_run (&again, NULL, "recover", "--all", NULL), ==, 0);
  g_assert_cmpstr (again, ==, "recover: nothing to recover\n");
  if (kc->completes)
    {
      assert_status (p->dst, g_str_equal (kc->mode, "live") ? "running" : "inmigrate");
      g_assert_true (img_identical (p->src_img, p->dst_img));
      return;
    }
  /* As if it never started: the source runs on its own disk, and a rerun works
   * (on a fresh destination QEMU: an incoming migration cannot be restarted). */
  assert_status (p->src, "running");
  g_assert_cmpstr (vm_disk_file (p->src, "vda"), ==, p->src_img);
  vm_stop (p->dst);
  p->dst = start_dst (p, "dst2");
  g_assert_cmpint (blkmig_run (NULL, NULL, "migrate", "-q", "--mode", kc->mode, "--source",
                               p->src->qmp_path, "--dest", p->dst->qmp_path, NULL), ==, 0);
  g_assert_true (img_identical (p->src_img, p->dst_img));
}

/* blkmig move killed after each step: the guest ends on exactly one image. */
static void
test_move_kill_then_recover (Pair *p, gconstpointer data)
{
  const KillCase *kc = data;
  g_autofree char *target = rig_path (p->rig, "moved.qcow2");
  g_autofree char *out = NULL;
  g_autofree char *file = NULL;

  g_setenv ("BLKMIG_TEST_KILL_AT", kc->step, TRUE);
  g_assert_cmpint (blkmig_run (NULL, NULL, "move", "-q", "--qmp", p->src->qmp_path, "--disk",
                               "vda", "--to", target, NULL), ==, 128 + 9);
  g_unsetenv ("BLKMIG_TEST_KILL_AT");
  g_assert_cmpuint (rig_count_journals (p->rig), ==, 1);
  g_assert_cmpint (blkmig_run (&out, NULL, "recover", "--all", NULL), ==, 0);
  g_assert_nonnull (strstr (out, kc->completes ? "had completed" : "rolled back"));
  g_assert_cmpuint (rig_count_journals (p->rig), ==, 0);
  g_assert_cmpuint (vm_count_jobs (p->src), ==, 0);
  file = vm_disk_file (p->src, "vda");
  g_assert_cmpstr (file, ==, kc->completes ? target : p->src_img);
  g_assert_true (g_file_test (target, G_FILE_TEST_EXISTS) == kc->completes);
  g_assert_cmpuint (vm_count_blkmig_nodes (p->src), ==, kc->completes ? 1 : 0);
  assert_status (p->src, "running");
}

/* The phase commands, each with its own journal: prepare (destination) and
 * perform (source) killed after each of their steps. */
static void
test_phase_kill_then_recover (Pair *p, gconstpointer data)
{
  const KillCase *kc = data;
  g_autofree char *c1 = rig_path (p->rig, "c1");
  g_autofree char *c2 = rig_path (p->rig, "c2");
  g_autofree char *c3 = rig_path (p->rig, "c3");
  g_autofree char *sock = rig_path (p->rig, "nbd.sock");
  g_autofree char *listen = g_strdup_printf ("unix:%s", sock);
  g_autofree char *out = NULL;
  gboolean in_prepare = g_str_equal (kc->mode, "prepare");
  int status;

  g_assert_cmpint (blkmig_run (NULL, NULL, "begin", "--qmp", p->src->qmp_path, "-o", c1, NULL), ==, 0);
  g_setenv ("BLKMIG_TEST_KILL_AT", kc->step, TRUE);
  status = blkmig_run (NULL, NULL, "prepare", "--qmp", p->dst->qmp_path, "--listen", listen,
                       "-c", c1, "-o", c2, NULL);
  if (!in_prepare)
    {
      g_assert_cmpint (status, ==, 0);
      status = blkmig_run (NULL, NULL, "perform", "-q", "--local-destination", "--qmp",
                           p->src->qmp_path, "-c", c2, "-o", c3, NULL);
    }
  g_unsetenv ("BLKMIG_TEST_KILL_AT");
  g_assert_cmpint (status, ==, 128 + 9);
  g_assert_cmpint (blkmig_run (&out, NULL, "recover", "--all", NULL), ==, 0);
  g_assert_nonnull (strstr (out, kc->completes ? "had completed" : "rolled back"));
  assert_nothing_left (p);
  if (kc->completes)
    {
      assert_status (p->src, "postmigrate");
      g_assert_true (img_identical (p->src_img, p->dst_img));
    }
  else
    assert_status (p->src, "running");
}

static const KillCase phase_cases[] = {
  { "prepare", "prepare", FALSE }, { "prepare", "prepared", FALSE },
  { "perform", "mirror", FALSE }, { "perform", "switch", FALSE },
  { "perform", "pre-switchover", FALSE }, { "perform", "completed", TRUE },
};

static const KillCase move_cases[] = {
  { "move", "mirror", FALSE }, { "move", "superseded", FALSE }, { "move", "pivoted", TRUE },
};

static const KillCase kill_cases[] = {
  { "live", "begin", FALSE }, { "live", "prepare", FALSE }, { "live", "mirror", FALSE },
  { "live", "switch", FALSE }, { "live", "pre-switchover", FALSE }, { "live", "completed", TRUE },
  { "copy", "mirror", FALSE }, { "copy", "switch", FALSE }, { "copy", "copied", TRUE },
};

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  for (gsize i = 0; i < G_N_ELEMENTS (kill_cases); i++)
    {
      g_autofree char *path = g_strdup_printf ("/recover/migrate-%s/killed-at-%s",
                                               kill_cases[i].mode, kill_cases[i].step);
      g_test_add (path, Pair, &kill_cases[i], pair_setup, test_kill_then_recover, pair_teardown);
    }
  for (gsize i = 0; i < G_N_ELEMENTS (phase_cases); i++)
    {
      g_autofree char *path = g_strdup_printf ("/recover/%s/killed-at-%s", phase_cases[i].mode,
                                               phase_cases[i].step);
      g_test_add (path, Pair, &phase_cases[i], pair_setup, test_phase_kill_then_recover,
                  pair_teardown);
    }
  for (gsize i = 0; i < G_N_ELEMENTS (move_cases); i++)
    {
      g_autofree char *path = g_strdup_printf ("/recover/move/killed-at-%s", move_cases[i].step);
      g_test_add (path, Pair, &move_cases[i], pair_setup, test_move_kill_then_recover,
                  pair_teardown);
    }
  return g_test_run ();
}
