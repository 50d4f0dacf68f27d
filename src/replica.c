/* The standby's record of a replication: replicas, epoch layers, acknowledged checkpoints. */
#include "src/replica.h"

#include <errno.h>
#include <signal.h>
#include <sys/stat.h>
#include <glib/gstdio.h>

#include "common/error.h"
#include "common/escape.h"
#include "common/json.h"
#include "qmp/qmp-json.h"
#include "src/journal.h"
#include "src/util.h"

#define REPLICA_MAX_BYTES (1024 * 1024)

static void
replica_layer_free (ReplicaLayer *layer)
{
  g_free (layer->file);
  g_free (layer);
}

static void
replica_disk_free (ReplicaDisk *disk)
{
  g_free (disk->name);
  g_free (disk->replica);
  g_free (disk->format);
  g_ptr_array_unref (disk->layers);
  g_free (disk);
}

Replica *
replica_new (const char *id)
{
  Replica *replica = g_new0 (Replica, 1);
  g_autofree char *dir = journal_dir ();
  g_autofree char *name = g_strdup_printf ("%s.replica", id);

  replica->path = g_build_filename (dir, name, NULL);
  replica->id = g_strdup (id);
  replica->state = g_strdup ("syncing");
  replica->pauses_ms = g_array_new (FALSE, FALSE, sizeof (double));
  replica->disks = g_ptr_array_new_with_free_func ((GDestroyNotify) replica_disk_free);
  return replica;
}

void
replica_free (Replica *replica)
{
  if (replica == NULL)
    return;
  g_free (replica->path);
  g_free (replica->id);
  g_free (replica->primary_qmp);
  g_free (replica->standby_qmp);
  g_free (replica->state);
  g_array_unref (replica->pauses_ms);
  g_ptr_array_unref (replica->disks);
  g_free (replica);
}

ReplicaDisk *
replica_add_disk (Replica *replica, const char *name, const char *path, const char *format)
{
  ReplicaDisk *disk = g_new0 (ReplicaDisk, 1);

  disk->name = g_strdup (name);
  disk->replica = g_strdup (path);
  disk->format = g_strdup (format);
  disk->layers = g_ptr_array_new_with_free_func ((GDestroyNotify) replica_layer_free);
  g_ptr_array_add (replica->disks, disk);
  return disk;
}

char *
replica_layer_file (const char *replica, const char *id, guint epoch)
{
  return g_strdup_printf ("%s.blkmig-%.8s.%u", replica, id, epoch);
}

const char *
replica_top_file (const ReplicaDisk *disk)
{
  if (disk->layers->len == 0)
    return disk->replica;
  return ((ReplicaLayer *) disk->layers->pdata[disk->layers->len - 1])->file;
}

const char *
replica_top_format (const ReplicaDisk *disk)
{
  return disk->layers->len == 0 ? disk->format : "qcow2";
}

void
replica_add_pause (Replica *replica, double ms)
{
  if (replica->pauses_ms->len >= REPLICA_PAUSES_KEPT)
    g_array_remove_index (replica->pauses_ms, 0);
  g_array_append_val (replica->pauses_ms, ms);
}

/* ---- the file ------------------------------------------------------------- */

static void
replica_build_disk (JsonBuilder *b, const ReplicaDisk *disk)
{
  json_builder_begin_object (b);
  blkmig_json_add_string (b, "name", disk->name);
  blkmig_json_add_string (b, "replica", disk->replica);
  blkmig_json_add_string (b, "format", disk->format);
  json_builder_set_member_name (b, "layers");
  json_builder_begin_array (b);
  for (guint i = 0; i < disk->layers->len; i++)
    {
      const ReplicaLayer *layer = disk->layers->pdata[i];

      json_builder_begin_object (b);
      blkmig_json_add_int (b, "epoch", layer->epoch);
      blkmig_json_add_string (b, "file", layer->file);
      json_builder_end_object (b);
    }
  json_builder_end_array (b);
  json_builder_end_object (b);
}

static JsonNode *
replica_build (const Replica *replica)
{
  g_autoptr(JsonBuilder) b = json_builder_new ();

  json_builder_begin_object (b);
  blkmig_json_add_int (b, "version", 1);
  blkmig_json_add_string (b, "id", replica->id);
  blkmig_json_add_string (b, "primary-qmp", replica->primary_qmp);
  blkmig_json_add_string (b, "standby-qmp", replica->standby_qmp);
  blkmig_json_add_string (b, "state", replica->state);
  blkmig_json_add_int (b, "pid", replica->pid);
  blkmig_json_add_int (b, "checkpoint", replica->checkpoint);
  blkmig_json_add_int (b, "checkpoint-us", replica->checkpoint_us);
  blkmig_json_add_int (b, "committed", replica->committed);
  json_builder_set_member_name (b, "pauses-ms");
  json_builder_begin_array (b);
  for (guint i = 0; i < replica->pauses_ms->len; i++)
    json_builder_add_double_value (b, g_array_index (replica->pauses_ms, double, i));
  json_builder_end_array (b);
  json_builder_set_member_name (b, "disks");
  json_builder_begin_array (b);
  for (guint i = 0; i < replica->disks->len; i++)
    replica_build_disk (b, replica->disks->pdata[i]);
  json_builder_end_array (b);
  json_builder_end_object (b);
  return json_builder_get_root (b);
}

gboolean
replica_save (Replica *replica, GError **error)
{
  g_autofree char *dir = journal_dir ();
  g_autoptr(JsonNode) root = replica_build (replica);
  g_autofree char *text = json_to_string (root, TRUE);

  return journal_dir_check (dir, TRUE, error) && journal_store (replica->path, text, error);
}

void
replica_remove (Replica *replica)
{
  g_unlink (replica->path);
}

static gboolean
replica_bad (const Replica *replica, const char *what, const char *value, GError **error)
{
  g_autofree char *safe = blkmig_escape (value != NULL ? value : "(none)");

  return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED,
                      "replication state %s: %s '%s' is not what blkmig writes", replica->path,
                      what, safe), FALSE;
}

/* A replica path must be a plain absolute path of a raw or qcow2 image. */
static gboolean
replica_path_ok (const char *path, const char *format)
{
  return path != NULL && g_path_is_absolute (path) && strstr (path, "/../") == NULL
         && !g_str_has_suffix (path, "/..") && strchr (path, '\n') == NULL
         && format != NULL && (g_str_equal (format, "raw") || g_str_equal (format, "qcow2"));
}

static gboolean
replica_parse_layers (Replica *replica, ReplicaDisk *disk, JsonArray *layers, GError **error)
{
  guint previous = 0;

  for (guint i = 0; i < qmp_array_length (layers); i++)
    {
      JsonObject *obj = qmp_array_object (layers, i);
      gint64 epoch = qmp_member_int (obj, "epoch", -1);
      const char *file = qmp_member_string (obj, "file");
      g_autofree char *expected = NULL;
      ReplicaLayer *layer;

      if (epoch <= previous || epoch > G_MAXINT32)
        return replica_bad (replica, "layer epoch of", disk->name, error);
      expected = replica_layer_file (disk->replica, replica->id, epoch);
      if (g_strcmp0 (file, expected) != 0)
        return replica_bad (replica, "layer file", file, error);
      layer = g_new0 (ReplicaLayer, 1);
      layer->epoch = previous = epoch;
      layer->file = g_steal_pointer (&expected);
      g_ptr_array_add (disk->layers, layer);
    }
  return TRUE;
}

static gboolean
replica_parse_disks (Replica *replica, JsonArray *disks, GError **error)
{
  if (qmp_array_length (disks) == 0 || qmp_array_length (disks) > REPLICA_MAX_DISKS)
    {
      g_autofree char *count = g_strdup_printf ("%u disks", qmp_array_length (disks));

      return replica_bad (replica, "disk list", count, error);
    }
  for (guint i = 0; i < qmp_array_length (disks); i++)
    {
      JsonObject *obj = qmp_array_object (disks, i);
      const char *name = qmp_member_string (obj, "name");
      const char *path = qmp_member_string (obj, "replica");
      const char *format = qmp_member_string (obj, "format");
      ReplicaDisk *disk;

      if (name == NULL)
        return replica_bad (replica, "disk name", NULL, error);
      if (format == NULL || !(g_str_equal (format, "raw") || g_str_equal (format, "qcow2")))
        return replica_bad (replica, "replica format", format, error);
      if (!replica_path_ok (path, format))
        return replica_bad (replica, "replica", path, error);
      disk = replica_add_disk (replica, name, path, format);
      if (!replica_parse_layers (replica, disk, qmp_member_array (obj, "layers"), error))
        return FALSE;
    }
  return TRUE;
}

static gboolean
replica_parse (Replica *replica, JsonObject *obj, GError **error)
{
  JsonArray *pauses = qmp_member_array (obj, "pauses-ms");
  gint64 checkpoint = qmp_member_int (obj, "checkpoint", -1);
  gint64 committed = qmp_member_int (obj, "committed", -1);

  if (g_strcmp0 (qmp_member_string (obj, "id"), replica->id) != 0)
    return replica_bad (replica, "id", qmp_member_string (obj, "id"), error);
  if (checkpoint < 0 || checkpoint > G_MAXINT32 || committed < 0 || committed > checkpoint + 1)
    {
      g_autofree char *both = g_strdup_printf ("%" G_GINT64_FORMAT ", committed %" G_GINT64_FORMAT,
                                               checkpoint, committed);

      return replica_bad (replica, "checkpoint", both, error);
    }
  replica->checkpoint = checkpoint;
  replica->committed = committed;
  replica->checkpoint_us = qmp_member_int (obj, "checkpoint-us", 0);
  replica->pid = qmp_member_int (obj, "pid", 0);
  g_free (replica->state);
  replica->state = g_strdup (qmp_member_string_or (obj, "state", "degraded"));
  replica->primary_qmp = g_strdup (qmp_member_string (obj, "primary-qmp"));
  replica->standby_qmp = g_strdup (qmp_member_string (obj, "standby-qmp"));
  for (guint i = MAX (qmp_array_length (pauses), REPLICA_PAUSES_KEPT) - REPLICA_PAUSES_KEPT;
       i < qmp_array_length (pauses); i++)
    {
      JsonNode *node = json_array_get_element (pauses, i);
      double ms = JSON_NODE_HOLDS_VALUE (node) ? json_node_get_double (node) : 0;

      g_array_append_val (replica->pauses_ms, ms);
    }
  return replica_parse_disks (replica, qmp_member_array (obj, "disks"), error);
}

static gboolean
replica_id_ok (const char *id)
{
  if (id == NULL || strlen (id) != 32)
    return FALSE;
  for (const char *p = id; *p != '\0'; p++)
    if (!g_ascii_isxdigit (*p) || g_ascii_isupper (*p))
      return FALSE;
  return TRUE;
}

Replica *
replica_load (const char *id, GError **error)
{
  static const BlkmigJsonLimits limits = { REPLICA_MAX_BYTES, 8, 1 << 16 };
  g_autoptr(Replica) replica = NULL;
  g_autofree char *dir = journal_dir ();
  g_autofree char *text = NULL;
  g_autoptr(JsonNode) root = NULL;

  if (!replica_id_ok (id))
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "--id must be a replication id (32 hex digits)"), NULL;
  replica = replica_new (id);
  if (!g_file_test (replica->path, G_FILE_TEST_EXISTS))
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                        "no replication %s in %s", id, dir), NULL;
  if (!journal_dir_check (dir, FALSE, error)
      || (text = journal_read (replica->path, error)) == NULL)
    return NULL;
  if ((root = blkmig_json_parse (text, -1, &limits, error)) == NULL)
    return g_prefix_error (error, "replication state %s: ", replica->path), NULL;
  if (!JSON_NODE_HOLDS_OBJECT (root))
    return replica_bad (replica, "content", "", error), NULL;
  if (!replica_parse (replica, json_node_get_object (root), error))
    return NULL;
  return g_steal_pointer (&replica);
}

/* ---- composing the replicas offline --------------------------------------- */

gboolean
replica_unlink_file (const char *path, GError **error)
{
  struct stat st;

  if (lstat (path, &st) != 0)
    return errno == ENOENT ? TRUE
           : (g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK, "cannot look at %s: %s", path,
                           g_strerror (errno)), FALSE);
  if (!S_ISREG (st.st_mode) || st.st_uid != geteuid ())
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                        "%s is not a regular file of this user: left alone", path), FALSE;
  if (g_unlink (path) != 0 && errno != ENOENT)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK, "cannot remove %s: %s", path,
                        g_strerror (errno)), FALSE;
  return TRUE;
}

/* Drops (and deletes) disk @disk's layers of epochs in [@from, @to), top first. */
static gboolean
replica_drop_range (Replica *replica, ReplicaDisk *disk, guint from, guint to, GError **error)
{
  for (guint j = disk->layers->len; j > 0; j--)
    {
      ReplicaLayer *layer = disk->layers->pdata[j - 1];

      if (layer->epoch < from || layer->epoch >= to)
        continue;
      if (!replica_unlink_file (layer->file, error))
        return FALSE;
      g_ptr_array_remove_index (disk->layers, j - 1);
      if (!replica_save (replica, error))
        return FALSE;
    }
  return TRUE;
}

gboolean
replica_drop_layers (Replica *replica, guint from, guint to, GError **error)
{
  for (guint i = 0; i < replica->disks->len; i++)
    if (!replica_drop_range (replica, replica->disks->pdata[i], from, to, error))
      return FALSE;
  return TRUE;
}

/* The headers say what our record says (they may not: QEMU rewrites them as it
 * commits), then the layers go into the replica. */
static gboolean
replica_commit_disk (ReplicaDisk *disk, GCancellable *cancellable, GError **error)
{
  const char *below = disk->replica, *below_format = disk->format;

  for (guint i = 0; i < disk->layers->len; i++)
    {
      ReplicaLayer *layer = disk->layers->pdata[i];

      if (!util_rebase_unsafe (layer->file, below, below_format, cancellable, error))
        return FALSE;
      below = layer->file;
      below_format = "qcow2";
    }
  return disk->layers->len == 0
         || util_commit_into (replica_top_file (disk), disk->replica, cancellable, error);
}

/* For tests: BLKMIG_TEST_KILL_AT=POINT makes the process SIGKILL itself there (a
 * crash at a known step, as journal_write's). */
static void
replica_test_point (const char *point)
{
  if (g_strcmp0 (g_getenv ("BLKMIG_TEST_KILL_AT"), point) == 0)
    raise (SIGKILL);
}

gboolean
replica_compose (Replica *replica, guint checkpoint, GCancellable *cancellable, GError **error)
{
  if (!replica_drop_layers (replica, checkpoint, G_MAXUINT, error))
    return FALSE;
  for (guint i = 0; i < replica->disks->len; i++)
    if (!replica_commit_disk (replica->disks->pdata[i], cancellable, error))
      return FALSE;
  replica->committed = checkpoint;
  if (!replica_save (replica, error))
    return FALSE;
  replica_test_point ("replica-composed");  /* committed, the layers not yet removed */
  return replica_drop_layers (replica, 0, G_MAXUINT, error);
}

gboolean
replica_failover (Replica *replica, GCancellable *cancellable, GError **error)
{
  g_free (replica->state);
  replica->state = g_strdup ("failover");
  replica->pid = 0;
  if (!replica_save (replica, error)
      || !replica_compose (replica, replica->checkpoint, cancellable, error))
    return g_prefix_error (error, "failover: "), FALSE;
  replica_remove (replica);
  return TRUE;
}

/* ---- status --------------------------------------------------------------- */

static int
replica_compare_double (gconstpointer a, gconstpointer b)
{
  double x = *(const double *) a, y = *(const double *) b;

  return (x > y) - (x < y);
}

static void
replica_add_pauses (JsonBuilder *b, const Replica *replica)
{
  g_autoptr(GArray) sorted = g_array_copy (replica->pauses_ms);
  guint n = sorted->len;

  g_array_sort (sorted, replica_compare_double);
  json_builder_set_member_name (b, "pause-ms");
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "count");
  json_builder_add_int_value (b, n);
  if (n > 0)
    {
      json_builder_set_member_name (b, "last");
      json_builder_add_double_value (b, g_array_index (replica->pauses_ms, double, n - 1));
      /* nearest rank */
      json_builder_set_member_name (b, "median");
      json_builder_add_double_value (b, g_array_index (sorted, double, (n - 1) / 2));
      json_builder_set_member_name (b, "p99");
      json_builder_add_double_value (b, g_array_index (sorted, double, (n * 99 + 99) / 100 - 1));
      json_builder_set_member_name (b, "max");
      json_builder_add_double_value (b, g_array_index (sorted, double, n - 1));
    }
  json_builder_end_object (b);
}

JsonNode *
replica_status_json (const Replica *replica)
{
  g_autoptr(JsonBuilder) b = json_builder_new ();
  gboolean standby = !g_str_equal (replica->state, "failover");

  json_builder_begin_object (b);
  blkmig_json_add_string (b, "id", replica->id);
  blkmig_json_add_string (b, "role", standby ? "standby" : "primary");
  blkmig_json_add_string (b, "state", replica->state);
  blkmig_json_add_bool (b, "degraded", g_str_equal (replica->state, "degraded"));
  blkmig_json_add_int (b, "checkpoint", replica->checkpoint);
  blkmig_json_add_int (b, "checkpoint-us", replica->checkpoint_us);
  blkmig_json_add_int (b, "lag-ms", replica->checkpoint_us > 0
                       ? (g_get_real_time () - replica->checkpoint_us) / 1000 : -1);
  blkmig_json_add_int (b, "pid", replica->pid);
  replica_add_pauses (b, replica);
  json_builder_set_member_name (b, "disks");
  json_builder_begin_array (b);
  for (guint i = 0; i < replica->disks->len; i++)
    replica_build_disk (b, replica->disks->pdata[i]);
  json_builder_end_array (b);
  json_builder_end_object (b);
  return json_builder_get_root (b);
}
