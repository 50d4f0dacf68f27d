/* Unit tests for the standby's replication state file and its offline compose (src/replica.c). */
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "common/error.h"
#include "src/replica.h"

#define ID "0f3c1a2b4d5e6f708192a3b4c5d6e7f8"
#define OTHER "0f3c1a2c4d5e6f708192a3b4c5d6e7f8"

static char *state_dir;        /* BLKMIG_STATE_DIR of this program, 0700 */
static char *work_dir;         /* images and layers */

/* STATE_DIR/ID.replica, where replica_save writes and replica_load reads. */
static char *
state_path (const char *id)
{
  g_autofree char *name = g_strdup_printf ("%s.replica", id);

  return g_build_filename (state_dir, name, NULL);
}

static char *
work_file (const char *name)
{
  return g_build_filename (work_dir, name, NULL);
}

static void
touch (const char *path, const char *text)
{
  g_assert_true (g_file_set_contents (path, text, -1, NULL));
}

static gint
compare_names (gconstpointer a, gconstpointer b)
{
  return g_strcmp0 (*(char *const *) a, *(char *const *) b);
}

/* The names in @dir, sorted, joined with spaces. */
static char *
list_dir (const char *dir)
{
  g_autoptr(GDir) d = g_dir_open (dir, 0, NULL);
  g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
  const char *name;

  g_assert_nonnull (d);
  while ((name = g_dir_read_name (d)) != NULL)
    g_ptr_array_add (names, g_strdup (name));
  g_ptr_array_sort (names, compare_names);
  g_ptr_array_add (names, NULL);
  return g_strjoinv (" ", (char **) names->pdata);
}

static void
run (const char *const *argv)
{
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;
  g_autoptr(GError) error = NULL;
  int status = 0;

  g_assert_true (g_spawn_sync (NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
                               &out, &err, &status, &error));
  g_assert_no_error (error);
  if (!g_spawn_check_wait_status (status, NULL))
    g_error ("%s failed: %s%s", argv[0], out, err);
}

/* ---- the file ------------------------------------------------------------- */

/* Everything saved reads back: state, QMP sockets, checkpoint, committed, pauses,
 * disks and their layers, bottom first. */
static void
test_save_load (void)
{
  g_autoptr(Replica) replica = replica_new (ID);
  g_autoptr(Replica) loaded = NULL;
  g_autoptr(Replica) gone = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree char *path = state_path (ID);
  g_autofree char *raw = work_file ("a.raw");
  g_autofree char *qcow2 = work_file ("b.qcow2");
  ReplicaDisk *disk;
  ReplicaLayer *layer;
  struct stat st;

  g_assert_cmpstr (replica->path, ==, path);
  g_assert_cmpstr (replica->state, ==, "syncing");
  g_free (replica->state);
  replica->state = g_strdup ("replicating");
  replica->primary_qmp = g_strdup ("/run/primary.qmp");
  replica->standby_qmp = g_strdup ("/run/standby.qmp");
  replica->pid = 4321;
  replica->checkpoint = 5;
  replica->checkpoint_us = G_GINT64_CONSTANT (1700000000123456);
  replica->committed = 3;
  replica_add_pause (replica, 12.5);
  replica_add_pause (replica, 20.25);
  replica_add_pause (replica, 0);
  disk = replica_add_disk (replica, "vda", raw, "raw");
  g_assert_cmpstr (replica_top_file (disk), ==, raw);
  g_assert_cmpstr (replica_top_format (disk), ==, "raw");
  for (guint epoch = 3; epoch <= 5; epoch += 2)
    {
      layer = g_new0 (ReplicaLayer, 1);
      layer->epoch = epoch;
      layer->file = replica_layer_file (raw, ID, epoch);
      g_ptr_array_add (disk->layers, layer);
    }
  replica_add_disk (replica, "drive-virtio-disk1", qcow2, "qcow2");
  g_assert_true (replica_save (replica, &error));
  g_assert_no_error (error);
  g_assert_cmpint (g_stat (path, &st), ==, 0);
  g_assert_cmpint (st.st_mode & 077, ==, 0);

  loaded = replica_load (ID, &error);
  g_assert_no_error (error);
  g_assert_nonnull (loaded);
  g_assert_cmpstr (loaded->path, ==, path);
  g_assert_cmpstr (loaded->id, ==, ID);
  g_assert_cmpstr (loaded->state, ==, "replicating");
  g_assert_cmpstr (loaded->primary_qmp, ==, "/run/primary.qmp");
  g_assert_cmpstr (loaded->standby_qmp, ==, "/run/standby.qmp");
  g_assert_cmpint (loaded->pid, ==, 4321);
  g_assert_cmpuint (loaded->checkpoint, ==, 5);
  g_assert_cmpint (loaded->checkpoint_us, ==, G_GINT64_CONSTANT (1700000000123456));
  g_assert_cmpuint (loaded->committed, ==, 3);
  g_assert_cmpuint (loaded->pauses_ms->len, ==, 3);
  g_assert_cmpfloat (g_array_index (loaded->pauses_ms, double, 0), ==, 12.5);
  g_assert_cmpfloat (g_array_index (loaded->pauses_ms, double, 1), ==, 20.25);
  g_assert_cmpfloat (g_array_index (loaded->pauses_ms, double, 2), ==, 0);
  g_assert_cmpuint (loaded->disks->len, ==, 2);
  disk = loaded->disks->pdata[0];
  g_assert_cmpstr (disk->name, ==, "vda");
  g_assert_cmpstr (disk->replica, ==, raw);
  g_assert_cmpstr (disk->format, ==, "raw");
  g_assert_cmpuint (disk->layers->len, ==, 2);
  layer = disk->layers->pdata[0];
  g_assert_cmpuint (layer->epoch, ==, 3);
  {
    g_autofree char *expected = replica_layer_file (raw, ID, 3);
    g_autofree char *top = replica_layer_file (raw, ID, 5);

    g_assert_cmpstr (layer->file, ==, expected);
    g_assert_cmpuint (((ReplicaLayer *) disk->layers->pdata[1])->epoch, ==, 5);
    g_assert_cmpstr (replica_top_file (disk), ==, top);
    g_assert_cmpstr (replica_top_format (disk), ==, "qcow2");
  }
  disk = loaded->disks->pdata[1];
  g_assert_cmpstr (disk->name, ==, "drive-virtio-disk1");
  g_assert_cmpstr (disk->replica, ==, qcow2);
  g_assert_cmpstr (disk->format, ==, "qcow2");
  g_assert_cmpuint (disk->layers->len, ==, 0);
  g_assert_cmpstr (replica_top_format (disk), ==, "qcow2");

  /* saving what was loaded changes nothing */
  {
    g_autofree char *before = NULL;
    g_autofree char *after = NULL;

    g_assert_true (g_file_get_contents (path, &before, NULL, NULL));
    g_assert_true (replica_save (loaded, &error));
    g_assert_true (g_file_get_contents (path, &after, NULL, NULL));
    g_assert_cmpstr (before, ==, after);
  }

  replica_remove (loaded);
  g_assert_false (g_file_test (path, G_FILE_TEST_EXISTS));
  gone = replica_load (ID, &error);
  g_assert_null (gone);
  g_assert_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE);
}

/* Only the last REPLICA_PAUSES_KEPT pauses are kept, oldest first. */
static void
test_pauses_kept (void)
{
  g_autoptr(Replica) replica = replica_new (ID);

  for (guint i = 0; i < REPLICA_PAUSES_KEPT + 10; i++)
    replica_add_pause (replica, i);
  g_assert_cmpuint (replica->pauses_ms->len, ==, REPLICA_PAUSES_KEPT);
  g_assert_cmpfloat (g_array_index (replica->pauses_ms, double, 0), ==, 10);
  g_assert_cmpfloat (g_array_index (replica->pauses_ms, double, REPLICA_PAUSES_KEPT - 1), ==,
                     REPLICA_PAUSES_KEPT + 9);
}

static void
test_layer_file (void)
{
  g_autofree char *one = replica_layer_file ("/var/lib/vm/a.raw", ID, 1);
  g_autofree char *zero = replica_layer_file ("/var/lib/vm/a.raw", ID, 0);
  g_autofree char *big = replica_layer_file ("/v/b.qcow2", ID, G_MAXUINT);
  g_autofree char *other = replica_layer_file ("/var/lib/vm/a.raw", OTHER, 1);

  g_assert_cmpstr (one, ==, "/var/lib/vm/a.raw.blkmig-0f3c1a2b.1");
  g_assert_cmpstr (zero, ==, "/var/lib/vm/a.raw.blkmig-0f3c1a2b.0");
  g_assert_cmpstr (big, ==, "/v/b.qcow2.blkmig-0f3c1a2b.4294967295");
  g_assert_cmpstr (other, ==, "/var/lib/vm/a.raw.blkmig-0f3c1a2c.1");
  g_assert_cmpstr (one, !=, other);
}

/* Pieces of a state file as blkmig writes it (replica /r/a.raw, layer of epoch 1). */
#define LAYER(epoch, file) "{\"epoch\":" epoch ",\"file\":\"" file "\"}"
#define DISK(replica, format, layers) \
  "{\"name\":\"vda\",\"replica\":\"" replica "\",\"format\":\"" format "\",\"layers\":" layers "}"
#define GOOD_LAYERS "[" LAYER ("1", "/r/a.raw.blkmig-0f3c1a2b.1") "]"
#define GOOD_DISK DISK ("/r/a.raw", "raw", GOOD_LAYERS)
#define STATE_FULL(id, checkpoint, committed, disks) \
  "{\"version\":1,\"id\":\"" id "\",\"primary-qmp\":\"/p\",\"standby-qmp\":\"/s\"," \
  "\"state\":\"replicating\",\"pid\":0,\"checkpoint\":" checkpoint ",\"checkpoint-us\":0," \
  "\"committed\":" committed ",\"pauses-ms\":[1.5],\"disks\":" disks "}"
#define STATE(disks) STATE_FULL (ID, "2", "1", disks)

/* Writes @text as replication ID's state file (0600, as replica_save would). */
static void
write_state (const char *text)
{
  g_autofree char *path = state_path (ID);

  g_unlink (path);
  touch (path, text);
  g_assert_cmpint (g_chmod (path, 0600), ==, 0);
}

/* replica_load refuses @text with BLKMIG_ERROR_FAILED and a message holding
 * @expected ("%s" in it: the state file's path; where the wording of the
 * problem may still improve, only its start); the file and the directories
 * stay as they were. */
static void
assert_refused (const char *text, const char *expected)
{
  g_autofree char *path = state_path (ID);
  g_auto(GStrv) parts = g_strsplit (expected, "%s", 2);
  g_autofree char *message = g_strjoinv (path, parts);
  g_autofree char *state_before = NULL;
  g_autofree char *work_before = NULL;
  g_autofree char *state_after = NULL;
  g_autofree char *work_after = NULL;
  g_autofree char *text_after = NULL;
  g_autoptr(Replica) replica = NULL;
  g_autoptr(GError) error = NULL;

  write_state (text);
  state_before = list_dir (state_dir);
  work_before = list_dir (work_dir);
  replica = replica_load (ID, &error);
  if (replica != NULL)
    g_error ("accepted: %s", text);
  g_assert_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED);
  if (strstr (error->message, message) == NULL)
    g_error ("for %.200s: '%s' does not say '%s'", text, error->message, message);
  state_after = list_dir (state_dir);
  work_after = list_dir (work_dir);
  g_assert_cmpstr (state_before, ==, state_after);
  g_assert_cmpstr (work_before, ==, work_after);
  g_assert_true (g_file_get_contents (path, &text_after, NULL, NULL));
  g_assert_cmpstr (text, ==, text_after);
  g_assert_cmpint (g_unlink (path), ==, 0);
}

static void
assert_accepted (const char *text)
{
  g_autofree char *path = state_path (ID);
  g_autoptr(Replica) replica = NULL;
  g_autoptr(GError) error = NULL;

  write_state (text);
  replica = replica_load (ID, &error);
  g_assert_no_error (error);
  g_assert_nonnull (replica);
  g_assert_cmpint (g_unlink (path), ==, 0);
}

#define BAD(what) "replication state %s: " what " is not what blkmig writes"

/* State files written by hand: what blkmig never writes is refused, naming the
 * member, before anything is done with it. */
static void
test_hostile (void)
{
  static const struct {
    const char *text;
    const char *expected;
  } cases[] = {
    /* a layer file is always replica_layer_file of its disk */
    { STATE ("[" DISK ("/r/a.raw", "raw", "[" LAYER ("1", "/etc/passwd") "]") "]"),
      BAD ("layer file '/etc/passwd'") },
    { STATE ("[" DISK ("/r/a.raw", "raw",
                       "[" LAYER ("1", "/r/a.raw.blkmig-0f3c1a2b.1/../../../etc/passwd") "]") "]"),
      BAD ("layer file '/r/a.raw.blkmig-0f3c1a2b.1/../../../etc/passwd'") },
    { STATE ("[" DISK ("/r/a.raw", "raw", "[" LAYER ("1", "../a.raw.blkmig-0f3c1a2b.1") "]") "]"),
      BAD ("layer file '../a.raw.blkmig-0f3c1a2b.1'") },
    { STATE ("[" DISK ("/r/a.raw", "raw", "[" LAYER ("1", "/r/a.raw.blkmig-0f3c1a2c.1") "]") "]"),
      BAD ("layer file '/r/a.raw.blkmig-0f3c1a2c.1'") },
    { STATE ("[" DISK ("/r/a.raw", "raw", "[" LAYER ("1", "/r/a.raw.blkmig-0f3c1a2b.2") "]") "]"),
      BAD ("layer file '/r/a.raw.blkmig-0f3c1a2b.2'") },
    { STATE ("[" DISK ("/r/a.raw", "raw", "[{\"epoch\":1}]") "]"),
      BAD ("layer file '(none)'") },
    { STATE ("[" DISK ("/r/a.raw", "raw", "[{\"epoch\":1,\"file\":7}]") "]"),
      BAD ("layer file '(none)'") },
    { STATE ("[" DISK ("/r/a.raw", "raw",
                       "[" LAYER ("1", "/r/a.raw.blkmig-0f3c1a2b.1\\n") "]") "]"),
      BAD ("layer file '/r/a.raw.blkmig-0f3c1a2b.1\\n'") },
    /* layer epochs: positive, strictly increasing, bounded */
    { STATE ("[" DISK ("/r/a.raw", "raw", "[" LAYER ("2", "/r/a.raw.blkmig-0f3c1a2b.2") ","
                       LAYER ("2", "/r/a.raw.blkmig-0f3c1a2b.2") "]") "]"),
      BAD ("layer epoch of 'vda'") },
    { STATE ("[" DISK ("/r/a.raw", "raw", "[" LAYER ("2", "/r/a.raw.blkmig-0f3c1a2b.2") ","
                       LAYER ("1", "/r/a.raw.blkmig-0f3c1a2b.1") "]") "]"),
      BAD ("layer epoch of 'vda'") },
    { STATE ("[" DISK ("/r/a.raw", "raw", "[" LAYER ("0", "/r/a.raw.blkmig-0f3c1a2b.0") "]") "]"),
      BAD ("layer epoch of 'vda'") },
    { STATE ("[" DISK ("/r/a.raw", "raw", "[" LAYER ("-1", "/r/a.raw.blkmig-0f3c1a2b.1") "]") "]"),
      BAD ("layer epoch of 'vda'") },
    { STATE ("[" DISK ("/r/a.raw", "raw",
                       "[" LAYER ("\"1\"", "/r/a.raw.blkmig-0f3c1a2b.1") "]") "]"),
      BAD ("layer epoch of 'vda'") },
    { STATE ("[" DISK ("/r/a.raw", "raw",
                       "[" LAYER ("4294967297", "/r/a.raw.blkmig-0f3c1a2b.1") "]") "]"),
      BAD ("layer epoch of 'vda'") },
    { STATE ("[" DISK ("/r/a.raw", "raw", "[7]") "]"),
      BAD ("layer epoch of 'vda'") },
    /* a replica is a plain absolute path of a raw or qcow2 image */
    { STATE ("[" DISK ("r/a.raw", "raw", "[]") "]"), BAD ("replica 'r/a.raw'") },
    { STATE ("[" DISK ("a.raw", "raw", "[]") "]"), BAD ("replica 'a.raw'") },
    { STATE ("[" DISK ("/r/../etc/a.raw", "raw", "[]") "]"), BAD ("replica '/r/../etc/a.raw'") },
    { STATE ("[" DISK ("/r/..", "raw", "[]") "]"), BAD ("replica '/r/..'") },
    { STATE ("[" DISK ("/r/a\\nb.raw", "raw", "[]") "]"), BAD ("replica '/r/a\\nb.raw'") },
    { STATE ("[" DISK ("/r/a.vmdk", "vmdk", "[]") "]"), "replication state %s: replica" },
    { STATE ("[" DISK ("/r/a.raw", "RAW", "[]") "]"), "replication state %s: replica" },
    { STATE ("[{\"name\":\"vda\",\"replica\":\"/r/a.raw\",\"layers\":[]}]"),
      "replication state %s: replica" },
    { STATE ("[{\"name\":\"vda\",\"format\":\"raw\",\"layers\":[]}]"), BAD ("replica '(none)'") },
    { STATE ("[{\"name\":\"vda\",\"replica\":[\"/r/a.raw\"],\"format\":\"raw\"}]"),
      BAD ("replica '(none)'") },
    { STATE ("[{\"replica\":\"/r/a.raw\",\"format\":\"raw\",\"layers\":[]}]"),
      "replication state %s: " },
    /* the id inside is the file name's */
    { STATE_FULL (OTHER, "2", "1", "[" GOOD_DISK "]"), BAD ("id '" OTHER "'") },
    { STATE_FULL ("0F3C1A2B4D5E6F708192A3B4C5D6E7F8", "2", "1", "[" GOOD_DISK "]"),
      BAD ("id '0F3C1A2B4D5E6F708192A3B4C5D6E7F8'") },
    { "{\"version\":1,\"checkpoint\":2,\"committed\":1,\"disks\":[" GOOD_DISK "]}",
      BAD ("id '(none)'") },
    /* checkpoints: 0 <= committed <= checkpoint + 1 */
    { STATE_FULL (ID, "-1", "0", "[" GOOD_DISK "]"), "replication state %s: checkpoint" },
    { STATE_FULL (ID, "2", "4", "[" GOOD_DISK "]"), "replication state %s: checkpoint" },
    { STATE_FULL (ID, "2", "-1", "[" GOOD_DISK "]"), "replication state %s: checkpoint" },
    { STATE_FULL (ID, "2147483648", "0", "[" GOOD_DISK "]"), "replication state %s: checkpoint" },
    { STATE_FULL (ID, "\"2\"", "1", "[" GOOD_DISK "]"), "replication state %s: checkpoint" },
    { "{\"id\":\"" ID "\",\"committed\":0,\"disks\":[" GOOD_DISK "]}",
      "replication state %s: checkpoint" },
    /* disks: 1 to REPLICA_MAX_DISKS */
    { STATE ("[]"), "replication state %s: disk list" },
    { STATE ("{}"), "replication state %s: disk list" },
    { STATE_FULL (ID, "2", "1", "\"vda\""), "replication state %s: disk list" },
    /* not an object */
    { "[]", "replication state %s: " },
    { "\"" ID "\"", "replication state %s: " },
    { "7", "replication state %s: " },
    { "null", "replication state %s: " },
    /* not JSON */
    { "{\"id\":", "not valid JSON" },
    { "{'id': 1}", "not valid JSON" },
    { "", "empty" },
  };
  g_autoptr(GString) many = g_string_new (NULL);
  g_autoptr(GString) deep = NULL;
  g_autoptr(GString) large = NULL;
  g_autofree char *text = NULL;

  /* the pieces make a file that is accepted */
  assert_accepted (STATE ("[" GOOD_DISK "]"));
  assert_accepted (STATE_FULL (ID, "2", "3", "[" GOOD_DISK "]"));
  assert_accepted (STATE_FULL (ID, "0", "0", "[" DISK ("/r/a.raw", "raw", "[]") "]"));
  assert_accepted (STATE ("[" DISK ("/r/a.qcow2", "qcow2", "[]") "]"));

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    assert_refused (cases[i].text, cases[i].expected);

  /* REPLICA_MAX_DISKS disks, then one more */
  g_string_append_c (many, '[');
  for (guint i = 0; i < REPLICA_MAX_DISKS; i++)
    g_string_append_printf (many, "%s{\"name\":\"d%u\",\"replica\":\"/r/d%u.raw\","
                            "\"format\":\"raw\",\"layers\":[]}", i > 0 ? "," : "", i, i);
  text = g_strdup_printf (STATE ("%s]"), many->str);
  assert_accepted (text);
  g_clear_pointer (&text, g_free);
  text = g_strdup_printf (STATE ("%s,%s]"), many->str, GOOD_DISK);
  assert_refused (text, "replication state %s: disk list");
  g_clear_pointer (&text, g_free);

  /* nested 8 deep is fine (the file itself is 3), 9 is not */
  deep = g_string_new (NULL);
  g_string_append (deep, STATE_FULL (ID, "2", "1", "[" GOOD_DISK "]"));
  g_string_truncate (deep, deep->len - 1);
  g_string_append (deep, ",\"x\":[[[[[[[1]]]]]]]}");
  assert_accepted (deep->str);
  g_string_truncate (deep, deep->len - strlen ("[[[[[[[1]]]]]]]}"));
  g_string_append (deep, "[[[[[[[[1]]]]]]]]}");
  assert_refused (deep->str, "nested deeper than 8 levels");

  /* a text of 1 MiB is read; one byte more is not */
  large = g_string_new (STATE ("[" GOOD_DISK "]"));
  while (large->len < 1024 * 1024)
    g_string_append_c (large, ' ');
  assert_accepted (large->str);
  g_string_append_c (large, ' ');
  assert_refused (large->str, "larger than 1048576 bytes");
}

/* Mistyped members that do not decide anything get their fallbacks, without a
 * GLib critical (the tests run with fatal-criticals). */
static void
test_mistyped_harmless (void)
{
  g_autofree char *path = state_path (ID);
  g_autoptr(Replica) replica = NULL;
  g_autoptr(GError) error = NULL;

  write_state ("{\"id\":\"" ID "\",\"checkpoint\":3,\"committed\":0,\"state\":5,"
               "\"pid\":\"1\",\"checkpoint-us\":[],\"primary-qmp\":{},"
               "\"pauses-ms\":[\"x\",null,{},[],5,2.5,true],\"disks\":[" GOOD_DISK "]}");
  replica = replica_load (ID, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (replica->state, ==, "degraded");
  g_assert_cmpint (replica->pid, ==, 0);
  g_assert_cmpint (replica->checkpoint_us, ==, 0);
  g_assert_null (replica->primary_qmp);
  g_assert_null (replica->standby_qmp);
  g_assert_cmpuint (replica->pauses_ms->len, ==, 7);
  g_assert_cmpfloat (g_array_index (replica->pauses_ms, double, 0), ==, 0);
  g_assert_cmpfloat (g_array_index (replica->pauses_ms, double, 4), ==, 5);
  g_assert_cmpfloat (g_array_index (replica->pauses_ms, double, 5), ==, 2.5);
  g_assert_cmpint (g_unlink (path), ==, 0);
}

/* The state file is read only from a regular file of this user, not through a
 * link, in a private state directory. */
static void
test_untrusted_file (void)
{
  g_autofree char *path = state_path (ID);
  g_autofree char *elsewhere = work_file ("planted.replica");
  g_autoptr(GError) error = NULL;
  Replica *replica;

  touch (elsewhere, STATE ("[" GOOD_DISK "]"));
  g_assert_cmpint (symlink (elsewhere, path), ==, 0);
  replica = replica_load (ID, &error);
  g_assert_null (replica);
  g_assert_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED);
  g_clear_error (&error);
  g_assert_cmpint (g_unlink (path), ==, 0);
  g_assert_cmpint (g_unlink (elsewhere), ==, 0);

  write_state (STATE ("[" GOOD_DISK "]"));
  g_assert_cmpint (g_chmod (state_dir, 0755), ==, 0);
  replica = replica_load (ID, &error);
  g_assert_cmpint (g_chmod (state_dir, 0700), ==, 0);
  g_assert_null (replica);
  g_assert_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED);
  g_assert_nonnull (strstr (error->message, "state directory"));
  g_assert_cmpint (g_unlink (path), ==, 0);
}

/* --id must be a replication id: 32 lowercase hex digits (it becomes a file
 * name); a replication that is not here is a usage error too. */
static void
test_usage (void)
{
  static const char *const bad[] = {
    "0F3C1A2B4D5E6F708192A3B4C5D6E7F8", "0f3c1a2b4d5e6f708192a3b4c5d6e7f", ID "0",
    "0f3c1a2b4d5e6f708192a3b4c5d6e7fg", "../../../../../../../../etc/pas", "", "0f3c1a2b",
    "0f3c1a2b-4d5e-6f70-8192-a3b4c5d6", " 0f3c1a2b4d5e6f708192a3b4c5d6e7f",
  };
  g_autoptr(GError) error = NULL;
  g_autofree char *listing = list_dir (state_dir);

  for (guint i = 0; i < G_N_ELEMENTS (bad); i++)
    {
      g_assert_null (replica_load (bad[i], &error));
      g_assert_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE);
      g_assert_nonnull (strstr (error->message, "--id"));
      g_clear_error (&error);
    }
  g_assert_null (replica_load (NULL, &error));
  g_assert_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE);
  g_clear_error (&error);
  g_assert_null (replica_load (OTHER, &error));
  g_assert_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE);
  g_assert_nonnull (strstr (error->message, OTHER));
  {
    g_autofree char *after = list_dir (state_dir);

    g_assert_cmpstr (listing, ==, after);
  }
}

/* ---- dropping layers ------------------------------------------------------ */

/* A replication of two disks with layers of @epochs (0-terminated), files made
 * with @text in them. */
static Replica *
make_layered (const guint *epochs)
{
  Replica *replica = replica_new (ID);
  g_autoptr(GError) error = NULL;

  replica->checkpoint = 3;
  for (guint d = 0; d < 2; d++)
    {
      g_autofree char *name = g_strdup_printf ("disk%u.raw", d);
      g_autofree char *image = work_file (name);
      ReplicaDisk *disk = replica_add_disk (replica, name, image, "raw");

      touch (image, "replica");
      for (guint i = 0; epochs[i] != 0; i++)
        {
          ReplicaLayer *layer = g_new0 (ReplicaLayer, 1);

          layer->epoch = epochs[i];
          layer->file = replica_layer_file (image, ID, epochs[i]);
          touch (layer->file, "layer");
          g_ptr_array_add (disk->layers, layer);
        }
    }
  g_assert_true (replica_save (replica, &error));
  g_assert_no_error (error);
  return replica;
}

static gboolean
has_epoch (const ReplicaDisk *disk, guint epoch)
{
  for (guint i = 0; i < disk->layers->len; i++)
    if (((ReplicaLayer *) disk->layers->pdata[i])->epoch == epoch)
      return TRUE;
  return FALSE;
}

/* Checks disk @d of @replica and of the saved record hold exactly @epochs (0-terminated),
 * and that their files exist and no other layer's does. */
static void
assert_layers (Replica *replica, guint d, const guint *epochs)
{
  g_autoptr(Replica) saved = NULL;
  g_autoptr(GError) error = NULL;
  const ReplicaDisk *disk = replica->disks->pdata[d];
  guint n = 0;

  saved = replica_load (ID, &error);
  g_assert_no_error (error);
  for (; epochs[n] != 0; n++)
    {
      g_autofree char *file = replica_layer_file (disk->replica, ID, epochs[n]);

      g_assert_true (has_epoch (disk, epochs[n]));
      g_assert_true (has_epoch (saved->disks->pdata[d], epochs[n]));
      g_assert_true (g_file_test (file, G_FILE_TEST_EXISTS));
    }
  g_assert_cmpuint (disk->layers->len, ==, n);
  g_assert_cmpuint (((ReplicaDisk *) saved->disks->pdata[d])->layers->len, ==, n);
  for (guint epoch = 1; epoch <= 5; epoch++)
    if (!has_epoch (disk, epoch))
      {
        g_autofree char *file = replica_layer_file (disk->replica, ID, epoch);

        g_assert_false (g_file_test (file, G_FILE_TEST_EXISTS));
      }
  g_assert_true (g_file_test (disk->replica, G_FILE_TEST_IS_REGULAR));
}

static void
cleanup_work (Replica *replica)
{
  for (guint d = 0; d < replica->disks->len; d++)
    {
      const ReplicaDisk *disk = replica->disks->pdata[d];

      for (guint epoch = 1; epoch <= 5; epoch++)
        {
          g_autofree char *file = replica_layer_file (disk->replica, ID, epoch);

          g_remove (file);
        }
      g_unlink (disk->replica);
    }
  replica_remove (replica);
}

/* Only the layers in [from, to) go, with their files; the record follows. */
static void
test_drop_range (void)
{
  static const guint epochs[] = { 1, 2, 3, 4, 0 };
  g_autoptr(Replica) replica = make_layered (epochs);
  g_autoptr(GError) error = NULL;

  g_assert_true (replica_drop_layers (replica, 2, 4, &error));
  g_assert_no_error (error);
  assert_layers (replica, 0, (const guint[]) { 1, 4, 0 });
  assert_layers (replica, 1, (const guint[]) { 1, 4, 0 });
  /* an empty range, a range with nothing in it */
  g_assert_true (replica_drop_layers (replica, 2, 2, &error));
  g_assert_true (replica_drop_layers (replica, 5, 9, &error));
  assert_layers (replica, 0, (const guint[]) { 1, 4, 0 });
  /* a layer whose file is gone already is dropped all the same */
  g_assert_cmpint (g_unlink (((ReplicaLayer *) ((ReplicaDisk *) replica->disks->pdata[1])
                              ->layers->pdata[1])->file), ==, 0);
  g_assert_true (replica_drop_layers (replica, 4, G_MAXUINT, &error));
  g_assert_no_error (error);
  assert_layers (replica, 0, (const guint[]) { 1, 0 });
  assert_layers (replica, 1, (const guint[]) { 1, 0 });
  g_assert_true (replica_drop_layers (replica, 0, G_MAXUINT, &error));
  g_assert_no_error (error);
  assert_layers (replica, 0, (const guint[]) { 0 });
  assert_layers (replica, 1, (const guint[]) { 0 });
  cleanup_work (replica);
}

/* Top first, each removal recorded at once: a layer that cannot go (a
 * directory where its file should be) stops the drop with the layers above it
 * gone and the ones from it down still recorded. */
static void
test_drop_top_first (void)
{
  static const guint epochs[] = { 1, 2, 3, 0 };
  g_autoptr(Replica) replica = make_layered (epochs);
  g_autoptr(GError) error = NULL;
  ReplicaDisk *disk = replica->disks->pdata[0];
  const char *blocked = ((ReplicaLayer *) disk->layers->pdata[1])->file;

  g_assert_cmpint (g_unlink (blocked), ==, 0);
  g_assert_cmpint (g_mkdir (blocked, 0700), ==, 0);
  g_assert_false (replica_drop_layers (replica, 1, G_MAXUINT, &error));
  g_assert_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK);
  g_assert_nonnull (strstr (error->message, blocked));
  g_assert_true (g_file_test (blocked, G_FILE_TEST_IS_DIR));
  assert_layers (replica, 0, (const guint[]) { 1, 2, 0 });
  assert_layers (replica, 1, (const guint[]) { 1, 2, 3, 0 });
  g_clear_error (&error);
  g_assert_cmpint (g_rmdir (blocked), ==, 0);
  touch (blocked, "layer");
  g_assert_true (replica_drop_layers (replica, 1, G_MAXUINT, &error));
  g_assert_no_error (error);
  assert_layers (replica, 0, (const guint[]) { 0 });
  assert_layers (replica, 1, (const guint[]) { 0 });
  cleanup_work (replica);
}

/* A layer path that is a symlink: the file it points to is never touched. */
static void
test_drop_symlink (void)
{
  static const guint epochs[] = { 1, 2, 0 };
  g_autoptr(Replica) replica = make_layered (epochs);
  g_autoptr(GError) error = NULL;
  g_autofree char *target = work_file ("precious");
  g_autofree char *content = NULL;
  ReplicaDisk *disk = replica->disks->pdata[0];
  const char *link = ((ReplicaLayer *) disk->layers->pdata[0])->file;
  gboolean ok;

  touch (target, "precious data");
  g_assert_cmpint (g_unlink (link), ==, 0);
  g_assert_cmpint (symlink (target, link), ==, 0);
  ok = replica_drop_layers (replica, 0, G_MAXUINT, &error);
  g_assert_true (g_file_get_contents (target, &content, NULL, NULL));
  g_assert_cmpstr (content, ==, "precious data");
  if (ok)
    {
      g_assert_no_error (error);
      g_assert_false (g_file_test (link, G_FILE_TEST_IS_SYMLINK));
    }
  else
    {
      /* refused: left alone, recorded as still there, the one above it gone */
      g_assert_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK);
      g_assert_true (g_file_test (link, G_FILE_TEST_IS_SYMLINK));
      assert_layers (replica, 0, (const guint[]) { 1, 0 });
      g_assert_cmpint (g_unlink (link), ==, 0);
    }
  g_assert_cmpint (g_unlink (target), ==, 0);
  cleanup_work (replica);
}

/* ---- composing ------------------------------------------------------------ */

/* qemu-img with the arguments that follow, up to a NULL. */
static void G_GNUC_NULL_TERMINATED
qemu_img (const char *first, ...)
{
  g_autoptr(GPtrArray) argv = g_ptr_array_new ();
  va_list ap;

  g_ptr_array_add (argv, (gpointer) "qemu-img");
  va_start (ap, first);
  for (const char *arg = first; arg != NULL; arg = va_arg (ap, const char *))
    g_ptr_array_add (argv, (gpointer) arg);
  va_end (ap);
  g_ptr_array_add (argv, NULL);
  run ((const char *const *) argv->pdata);
}

/* qemu-io -c "write -P PATTERN OFFSET LENGTH" on @path of @format. */
static void
qemu_io_write (const char *path, const char *format, int pattern, const char *offset,
               const char *length)
{
  g_autofree char *cmd = g_strdup_printf ("write -q -P 0x%02x %s %s", pattern, offset, length);
  const char *argv[] = { "qemu-io", "-f", format, "-c", cmd, path, NULL };

  run (argv);
}

/* The guest-visible bytes of @path: converted to raw next to it, read back. */
static GBytes *
image_bytes (const char *path, const char *format)
{
  g_autofree char *raw = work_file ("read-back.raw");
  g_autofree char *data = NULL;
  gsize len = 0;

  qemu_img ("convert", "-f", format, "-O", "raw", path, raw, NULL);
  g_assert_true (g_file_get_contents (raw, &data, &len, NULL));
  g_assert_cmpint (g_unlink (raw), ==, 0);
  return g_bytes_new_take (g_steal_pointer (&data), len);
}

static void
assert_range (GBytes *bytes, gsize offset, gsize length, guchar value)
{
  gsize len = 0;
  const guchar *data = g_bytes_get_data (bytes, &len);

  g_assert_cmpuint (offset + length, <=, len);
  for (gsize i = offset; i < offset + length; i++)
    if (data[i] != value)
      g_error ("byte %" G_GSIZE_FORMAT ": 0x%02x, expected 0x%02x", i, data[i], value);
}

#define K64 (64 * 1024)

/* A replica and two layers (epochs 1 and 2) as QEMU would have left them;
 * composed to checkpoint 2 the replica holds epoch 1's writes, not epoch 2's,
 * and the layers are gone; composing again changes nothing. */
static void
test_compose (gconstpointer data)
{
  const char *format = data;
  g_autofree char *name = g_strdup_printf ("composed.%s", format);
  g_autofree char *image = work_file (name);
  g_autofree char *layer1 = replica_layer_file (image, ID, 1);
  g_autofree char *layer2 = replica_layer_file (image, ID, 2);
  g_autoptr(Replica) replica = NULL;
  g_autoptr(Replica) loaded = NULL;
  g_autoptr(GError) error = NULL;
  g_autoptr(GBytes) after = NULL;
  g_autoptr(GBytes) again = NULL;
  g_autofree char *listing = NULL;
  g_autofree char *info = NULL;
  ReplicaDisk *disk;

  g_autofree char *has_img = g_find_program_in_path ("qemu-img");
  g_autofree char *has_io = g_find_program_in_path ("qemu-io");

  if (has_img == NULL || has_io == NULL)
    {
      g_test_skip ("qemu-img or qemu-io not installed");
      return;
    }
  qemu_img ("create", "-q", "-f", format, image, "1M", NULL);
  qemu_io_write (image, format, 0x11, "0", "64k");
  qemu_io_write (image, format, 0x11, "64k", "64k");
  qemu_img ("create", "-q", "-f", "qcow2", "-b", image, "-F", format, layer1, NULL);
  qemu_io_write (layer1, "qcow2", 0x22, "64k", "64k");
  qemu_img ("create", "-q", "-f", "qcow2", "-b", layer1, "-F", "qcow2", layer2, NULL);
  qemu_io_write (layer2, "qcow2", 0x33, "128k", "64k");
  qemu_io_write (layer2, "qcow2", 0x44, "64k", "4k");
  /* the header of layer 1 names another backing file: the record decides */
  qemu_img ("rebase", "-q", "-u", "-f", "qcow2", "-b", "/nonexistent/blkmig-test.raw", "-F",
            "raw", layer1, NULL);

  replica = replica_new (ID);
  replica->checkpoint = 2;
  replica->committed = 1;
  disk = replica_add_disk (replica, "vda", image, format);
  for (guint epoch = 1; epoch <= 2; epoch++)
    {
      ReplicaLayer *layer = g_new0 (ReplicaLayer, 1);

      layer->epoch = epoch;
      layer->file = replica_layer_file (image, ID, epoch);
      g_ptr_array_add (disk->layers, layer);
    }
  g_assert_true (replica_save (replica, &error));
  g_assert_no_error (error);

  g_assert_true (replica_compose (replica, 2, NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (disk->layers->len, ==, 0);
  g_assert_cmpuint (replica->committed, ==, 2);
  g_assert_false (g_file_test (layer1, G_FILE_TEST_EXISTS));
  g_assert_false (g_file_test (layer2, G_FILE_TEST_EXISTS));
  after = image_bytes (image, format);
  g_assert_cmpuint (g_bytes_get_size (after), ==, 1024 * 1024);
  assert_range (after, 0, K64, 0x11);          /* the replica's own */
  assert_range (after, K64, K64, 0x22);        /* epoch 1's, over the replica's */
  assert_range (after, 2 * K64, K64, 0);       /* epoch 2's write is not there */
  assert_range (after, 3 * K64, 1024 * 1024 - 3 * K64, 0);
  {
    const char *argv[] = { "qemu-img", "info", "--output=json", "-f", format, image, NULL };
    g_autofree char *err = NULL;
    int status = 0;

    g_assert_true (g_spawn_sync (NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
                                 &info, &err, &status, NULL));
    g_assert_true (g_spawn_check_wait_status (status, NULL));
    g_assert_null (strstr (info, "backing-filename"));
  }
  loaded = replica_load (ID, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (loaded->committed, ==, 2);
  g_assert_cmpuint (((ReplicaDisk *) loaded->disks->pdata[0])->layers->len, ==, 0);

  /* again (a crash after the last step): nothing to do, and it says so by succeeding */
  listing = list_dir (work_dir);
  g_assert_true (replica_compose (loaded, 2, NULL, &error));
  g_assert_no_error (error);
  again = image_bytes (image, format);
  g_assert_true (g_bytes_equal (after, again));
  {
    g_autofree char *after_listing = list_dir (work_dir);

    g_assert_cmpstr (listing, ==, after_listing);
  }
  g_assert_cmpint (g_unlink (image), ==, 0);
  replica_remove (loaded);
}

/* ---- status --------------------------------------------------------------- */

static JsonObject *
member_object (JsonObject *obj, const char *name)
{
  g_assert_true (json_object_has_member (obj, name));
  return json_object_get_object_member (obj, name);
}

/* state, checkpoint, the lag, and the pauses' count, last, median, p99 and max. */
static void
test_status (void)
{
  g_autoptr(Replica) replica = replica_new (ID);
  g_autoptr(Replica) empty = replica_new (ID);
  g_autoptr(JsonNode) node = NULL;
  g_autoptr(JsonNode) none = NULL;
  g_autoptr(GRand) rand = g_rand_new_with_seed (7);
  g_autoptr(GArray) values = g_array_new (FALSE, FALSE, sizeof (double));
  JsonObject *obj, *pauses;
  JsonArray *disks;

  for (guint i = 1; i <= 101; i++)
    {
      double v = i;

      g_array_append_val (values, v);
    }
  /* shuffled, then 42 last */
  for (guint i = values->len - 1; i > 0; i--)
    {
      guint j = g_rand_int_range (rand, 0, i + 1);
      double t = g_array_index (values, double, i);

      g_array_index (values, double, i) = g_array_index (values, double, j);
      g_array_index (values, double, j) = t;
    }
  for (guint i = 0; i < values->len; i++)
    if (g_array_index (values, double, i) != 42)
      replica_add_pause (replica, g_array_index (values, double, i));
  replica_add_pause (replica, 42);
  g_free (replica->state);
  replica->state = g_strdup ("replicating");
  replica->checkpoint = 9;
  replica->pid = 77;
  replica->checkpoint_us = g_get_real_time () - 2 * G_USEC_PER_SEC;
  replica_add_disk (replica, "vda", "/r/a.raw", "raw");

  node = replica_status_json (replica);
  obj = json_node_get_object (node);
  g_assert_cmpstr (json_object_get_string_member (obj, "id"), ==, ID);
  g_assert_cmpstr (json_object_get_string_member (obj, "state"), ==, "replicating");
  g_assert_cmpstr (json_object_get_string_member (obj, "role"), ==, "standby");
  g_assert_false (json_object_get_boolean_member (obj, "degraded"));
  g_assert_cmpint (json_object_get_int_member (obj, "checkpoint"), ==, 9);
  g_assert_cmpint (json_object_get_int_member (obj, "pid"), ==, 77);
  g_assert_cmpint (json_object_get_int_member (obj, "lag-ms"), >=, 2000);
  g_assert_cmpint (json_object_get_int_member (obj, "lag-ms"), <, 60000);
  pauses = member_object (obj, "pause-ms");
  g_assert_cmpint (json_object_get_int_member (pauses, "count"), ==, 101);
  g_assert_cmpfloat (json_object_get_double_member (pauses, "last"), ==, 42);
  g_assert_cmpfloat (json_object_get_double_member (pauses, "median"), ==, 51);
  g_assert_cmpfloat (json_object_get_double_member (pauses, "p99"), ==, 100);
  g_assert_cmpfloat (json_object_get_double_member (pauses, "max"), ==, 101);
  disks = json_object_get_array_member (obj, "disks");
  g_assert_cmpuint (json_array_get_length (disks), ==, 1);
  g_assert_cmpstr (json_object_get_string_member (json_array_get_object_element (disks, 0),
                                                  "replica"), ==, "/r/a.raw");
  /* the replica's order is left alone (the status sorts a copy) */
  g_assert_cmpfloat (g_array_index (replica->pauses_ms, double, replica->pauses_ms->len - 1),
                     ==, 42);

  /* nothing measured yet: a count of 0 and no figures; no checkpoint: no lag */
  g_free (empty->state);
  empty->state = g_strdup ("degraded");
  none = replica_status_json (empty);
  obj = json_node_get_object (none);
  g_assert_true (json_object_get_boolean_member (obj, "degraded"));
  g_assert_cmpint (json_object_get_int_member (obj, "checkpoint"), ==, 0);
  g_assert_cmpint (json_object_get_int_member (obj, "lag-ms"), ==, -1);
  pauses = member_object (obj, "pause-ms");
  g_assert_cmpint (json_object_get_int_member (pauses, "count"), ==, 0);
  g_assert_false (json_object_has_member (pauses, "median"));
  g_assert_false (json_object_has_member (pauses, "p99"));

  /* after failover this host is the primary */
  g_free (empty->state);
  empty->state = g_strdup ("failover");
  g_clear_pointer (&none, json_node_unref);
  none = replica_status_json (empty);
  g_assert_cmpstr (json_object_get_string_member (json_node_get_object (none), "role"), ==,
                   "primary");
}

int
main (int argc, char **argv)
{
  int ret;

  g_test_init (&argc, &argv, NULL);
  state_dir = g_dir_make_tmp ("test-replica-state-XXXXXX", NULL);
  g_assert_nonnull (state_dir);
  g_assert_cmpint (g_chmod (state_dir, 0700), ==, 0);
  g_setenv ("BLKMIG_STATE_DIR", state_dir, TRUE);
  work_dir = g_dir_make_tmp ("test-replica-work-XXXXXX", NULL);
  g_assert_nonnull (work_dir);
  g_test_add_func ("/replica/save-load", test_save_load);
  g_test_add_func ("/replica/pauses-kept", test_pauses_kept);
  g_test_add_func ("/replica/layer-file", test_layer_file);
  g_test_add_func ("/replica/load/hostile", test_hostile);
  g_test_add_func ("/replica/load/mistyped", test_mistyped_harmless);
  g_test_add_func ("/replica/load/untrusted-file", test_untrusted_file);
  g_test_add_func ("/replica/load/usage", test_usage);
  g_test_add_func ("/replica/drop/range", test_drop_range);
  g_test_add_func ("/replica/drop/top-first", test_drop_top_first);
  g_test_add_func ("/replica/drop/symlink", test_drop_symlink);
  g_test_add_data_func ("/replica/compose/raw", "raw", test_compose);
  g_test_add_data_func ("/replica/compose/qcow2", "qcow2", test_compose);
  g_test_add_func ("/replica/status", test_status);
  ret = g_test_run ();
  g_rmdir (state_dir);
  g_rmdir (work_dir);
  g_free (state_dir);
  g_free (work_dir);
  return ret;
}
