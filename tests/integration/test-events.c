/* Golden tests of the JSON-lines events (--json): their order, keys and values. */
#include <glib/gstdio.h>

#include "tests/integration/harness.h"

/* Values that depend on timing are replaced by "*"; progress events (their
 * number depends on timing too) are dropped. */
static char *
normalise (const char *stream)
{
  static const char *const varying[] = { "ms", "bytes", "elapsed-ms", "downtime-ms", "id", "socket",
                                         NULL };
  g_auto(GStrv) lines = g_strsplit (stream, "\n", -1);
  g_autoptr(GString) out = g_string_new (NULL);

  for (gsize i = 0; lines[i] != NULL && *lines[i] != '\0'; i++)
    {
      g_autoptr(JsonNode) node = json_from_string (lines[i], NULL);
      JsonObject *obj;
      g_autofree char *text = NULL;

      g_assert_nonnull (node);
      obj = json_node_get_object (node);
      if (g_str_equal (json_object_get_string_member (obj, "event"), "progress"))
        continue;
      for (gsize k = 0; varying[k] != NULL; k++)
        if (json_object_has_member (obj, varying[k]))
          json_object_set_string_member (obj, varying[k], "*");
      text = json_to_string (node, FALSE);
      g_string_append_printf (out, "%s\n", text);
    }
  return g_string_free (g_steal_pointer (&out), FALSE);
}

static void
assert_golden (const char *name, const char *stream)
{
  g_autofree char *path = g_test_build_filename (G_TEST_DIST, "golden", "events", name, NULL);
  g_autofree char *got = normalise (stream);
  g_autofree char *want = NULL;
  g_autoptr(GError) error = NULL;

  if (g_getenv ("BLKMIG_REGENERATE") != NULL)
    {
      g_file_set_contents (path, got, -1, &error);
      g_assert_no_error (error);
    }
  g_file_get_contents (path, &want, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (got, ==, want);
}

typedef struct {
  Rig *rig;
  char *src_img, *dst_img;
  Vm *src, *dst;
} Fixture;

static void
fixture_setup (Fixture *f, gconstpointer data)
{
  VmDisk src_disks[] = { { "vda", NULL, "qcow2" }, { NULL } };
  VmDisk dst_disks[] = { { "vda", NULL, "qcow2" }, { NULL } };

  f->rig = rig_new ();
  f->src_img = rig_path (f->rig, "src.qcow2");
  f->dst_img = rig_path (f->rig, "dst.qcow2");
  img_create (f->src_img, "qcow2", "64M");
  img_write (f->src_img, "qcow2", 0x21, "0", "8M");
  img_create (f->dst_img, "qcow2", "64M");
  src_disks[0].path = f->src_img;
  dst_disks[0].path = f->dst_img;
  f->src = vm_start (f->rig, "src", src_disks, NULL);
  f->dst = vm_start (f->rig, "dst", dst_disks, data);
}

static void
fixture_teardown (Fixture *f, gconstpointer data)
{
  rig_free (f->rig);
  g_free (f->src_img);
  g_free (f->dst_img);
}

static void
test_live (Fixture *f, gconstpointer data)
{
  g_autofree char *out = NULL;

  g_assert_cmpint (blkmig_run (&out, NULL, "migrate", "--json", "--source", f->src->qmp_path,
                               "--dest", f->dst->qmp_path, NULL), ==, 0);
  assert_golden ("migrate-live.jsonl", out);
}

static void
test_copy_to_file (Fixture *f, gconstpointer data)
{
  g_autofree char *events = rig_path (f->rig, "events.jsonl");
  g_autofree char *out = NULL;
  g_autofree char *stream = NULL;

  g_assert_cmpint (blkmig_run (&out, NULL, "migrate", "--mode", "copy", "--events", events,
                               "--source", f->src->qmp_path, "--dest", f->dst->qmp_path, NULL), ==, 0);
  g_assert_true (g_str_has_prefix (out, "blkmig: copied 1 disk"));
  g_assert_true (g_file_get_contents (events, &stream, NULL, NULL));
  assert_golden ("migrate-copy.jsonl", stream);
}

static void
test_error (Fixture *f, gconstpointer data)
{
  g_autofree char *out = NULL;

  g_assert_cmpint (blkmig_run (&out, NULL, "migrate", "--json", "--disk", "vdq", "--source",
                               f->src->qmp_path, "--dest", f->dst->qmp_path, NULL), ==, 4);
  assert_golden ("migrate-unknown-disk.jsonl", out);
}

static void
test_move (Fixture *f, gconstpointer data)
{
  g_autofree char *target = rig_path (f->rig, "moved.qcow2");
  g_autofree char *out = NULL;
  g_auto(GStrv) parts = NULL;
  g_autofree char *masked = NULL;

  g_assert_cmpint (blkmig_run (&out, NULL, "move", "--json", "--qmp", f->src->qmp_path,
                               "--disk", "vda", "--to", target, NULL), ==, 0);
  /* The target path differs per run: it must be there, then it is masked. */
  g_assert_nonnull (strstr (out, target));
  parts = g_strsplit (out, target, -1);
  masked = g_strjoinv ("TARGET", parts);
  assert_golden ("move.jsonl", masked);
}

/* While copying, each progress event carries the figures and what the stall
 * watchdog judges by; --speed stretches the 8 MiB of data over ~4 s, so that the
 * 2 s tick comes during the copy. */
static void
test_progress_figures (Fixture *f, gconstpointer data)
{
  g_autofree char *out = NULL;
  g_auto(GStrv) lines = NULL;
  guint seen = 0;

  g_assert_cmpint (blkmig_run (&out, NULL, "migrate", "--json", "--mode", "copy", "--speed", "2000000",
                               "--stall-timeout", "30", "--source", f->src->qmp_path, "--dest",
                               f->dst->qmp_path, NULL), ==, 0);
  lines = g_strsplit (out, "\n", -1);
  for (gsize i = 0; lines[i] != NULL && *lines[i] != '\0'; i++)
    {
      g_autoptr(JsonNode) node = json_from_string (lines[i], NULL);
      JsonObject *obj = json_node_get_object (node);

      if (!g_str_equal (json_object_get_string_member (obj, "event"), "progress")
          || !g_str_equal (json_object_get_string_member (obj, "state"), "copying"))
        continue;
      g_assert_cmpint (json_object_get_int_member (obj, "remaining"), ==,
                       json_object_get_int_member (obj, "total")
                       - json_object_get_int_member (obj, "done"));
      g_assert_cmpint (json_object_get_int_member (obj, "rate"), >=, 0);
      g_assert_cmpint (json_object_get_int_member (obj, "rate"), <, 64 << 20);
      g_assert_cmpint (json_object_get_int_member (obj, "idle-ms"), >=, 0);
      g_assert_cmpint (json_object_get_int_member (obj, "idle-ms"), <, 30000);
      g_assert_cmpint (json_object_get_int_member (obj, "stall-timeout-ms"), ==, 30000);
      seen++;
    }
  g_assert_cmpuint (seen, >, 0);
}

static void
test_perform_needs_output (void)
{
  g_autofree char *err = NULL;

  g_assert_cmpint (blkmig_run (NULL, &err, "perform", "--json", "--qmp", "/nonexistent", NULL),
                   ==, 2);
  g_assert_cmpstr (err, ==, "blkmig perform: --json needs -o FILE: the result cookie would "
                            "share stdout with the events\n");
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add ("/events/migrate-live", Fixture, "incoming", fixture_setup, test_live, fixture_teardown);
  g_test_add ("/events/migrate-copy-to-file", Fixture, "incoming", fixture_setup, test_copy_to_file,
              fixture_teardown);
  g_test_add ("/events/error", Fixture, "incoming", fixture_setup, test_error, fixture_teardown);
  g_test_add ("/events/move", Fixture, "incoming", fixture_setup, test_move, fixture_teardown);
  g_test_add ("/events/progress-figures", Fixture, "incoming", fixture_setup,
              test_progress_figures, fixture_teardown);
  g_test_add_func ("/events/perform-needs-output", test_perform_needs_output);
  return g_test_run ();
}
