/* Backing chains across hosts (--chain top): describing the source's, verifying the destination's. */
#include "src/chain.h"

#include <glib/gstdio.h>
#include <stdint.h>
#include <sys/stat.h>

#include "common/error.h"
#include "common/escape.h"
#include "common/json.h"
#include "nbd/identity.h"
#include "src/events.h"
#include "src/journal.h"
#include "qmp/qmp-json.h"
#include "src/util.h"

/* ---- the identity cache ----------------------------------------------------
 * Hashing reads every allocated byte, and a template chain is verified again for
 * every VM built on it: the state directory remembers identities under a key that
 * any write to the file changes (device, inode, size, mtime and ctime to the
 * nanosecond; ctime cannot be set back).  Not named *.json: it is no journal. */

#define CHAIN_CACHE_NAME "identities.cache"
#define CHAIN_CACHE_MAX 256
#define CHAIN_IDENTITY_LEN (7 + 64)

static char *
chain_cache_key (const char *file, const char *format)
{
  struct stat st;

  if (stat (file, &st) != 0)
    return NULL;
  return g_strdup_printf ("%ju:%ju:%jd:%jd.%09ld:%jd.%09ld:%s", (uintmax_t) st.st_dev,
                          (uintmax_t) st.st_ino, (intmax_t) st.st_size,
                          (intmax_t) st.st_mtim.tv_sec, st.st_mtim.tv_nsec,
                          (intmax_t) st.st_ctim.tv_sec, st.st_ctim.tv_nsec, format);
}

static char *
chain_cache_path (void)
{
  g_autofree char *dir = journal_dir ();

  if (!journal_dir_check (dir, FALSE, NULL))
    return NULL;
  return g_build_filename (dir, CHAIN_CACHE_NAME, NULL);
}

/* The cache as an object (empty when missing or unreadable: it is only a cache). */
static JsonNode *
chain_cache_load (const char *path)
{
  static const BlkmigJsonLimits limits = { 1 << 20, 4, 4 * CHAIN_CACHE_MAX };
  g_autofree char *text = g_file_test (path, G_FILE_TEST_EXISTS)
                          ? journal_read (path, NULL) : NULL;
  JsonNode *root = text != NULL ? blkmig_json_parse (text, -1, &limits, NULL) : NULL;

  if (root != NULL && JSON_NODE_HOLDS_OBJECT (root))
    return root;
  if (root != NULL)
    json_node_unref (root);
  root = json_node_new (JSON_NODE_OBJECT);
  json_node_take_object (root, json_object_new ());
  return root;
}

static char *
chain_cache_lookup (const char *path, const char *key)
{
  g_autoptr(JsonNode) root = chain_cache_load (path);
  const char *value = qmp_member_string (json_node_get_object (root), key);

  if (value == NULL || !g_str_has_prefix (value, "sha256:")
      || strlen (value) != CHAIN_IDENTITY_LEN)
    return NULL;
  return g_strdup (value);
}

static void
chain_cache_store (const char *path, const char *key, const char *identity)
{
  g_autoptr(JsonNode) root = chain_cache_load (path);
  JsonObject *obj = json_node_get_object (root);
  g_autofree char *text = NULL;

  if (json_object_get_size (obj) >= CHAIN_CACHE_MAX)
    {
      json_node_take_object (root, json_object_new ());  /* start over */
      obj = json_node_get_object (root);
    }
  json_object_set_string_member (obj, key, identity);
  text = json_to_string (root, TRUE);
  journal_store (path, text, NULL);
}

static gboolean chain_quiet;

void
chain_set_quiet (gboolean quiet)
{
  chain_quiet = quiet;
}

/* Hashing a base takes seconds per GiB: say so (stderr and a "hashing" event). */
static void
chain_announce (const char *file)
{
  struct stat st;
  gint64 bytes = stat (file, &st) == 0 ? (gint64) st.st_blocks * 512 : 0;

  events_emit ("hashing", "layer", qmp_str (file), "bytes", qmp_int (bytes), NULL);
  if (!chain_quiet)
    {
      g_autofree char *shown = blkmig_escape_controls (file);
      g_autofree char *size = util_human_size (bytes);
      g_printerr ("blkmig: reading %s (%s) for its content identity\n", shown, size);
    }
}

/* nbd_layer_identity, remembered while the file stays as it was. */
static char *
chain_identity (const char *file, const char *format, GCancellable *cancellable,
                GError **error)
{
  g_autofree char *path = chain_cache_path ();
  g_autofree char *key = chain_cache_key (file, format);
  g_autofree char *after = NULL;
  char *identity = path != NULL && key != NULL ? chain_cache_lookup (path, key) : NULL;

  if (identity != NULL)
    return identity;
  chain_announce (file);
  identity = nbd_layer_identity (file, format, cancellable, error);
  after = identity != NULL ? chain_cache_key (file, format) : NULL;
  if (path != NULL && key != NULL && g_strcmp0 (key, after) == 0)  /* unchanged meanwhile */
    chain_cache_store (path, key, identity);
  return identity;
}

static CookieLayer *
chain_describe_layer (const DiskInfo *disk, const char *file, const char *format,
                      gboolean identities, GCancellable *cancellable, GError **error)
{
  g_autofree char *name = g_path_get_basename (file);
  g_autofree char *shown = blkmig_escape (file);
  g_autofree char *identity = NULL;
  gint64 size = 0;
  GStatBuf st;

  if (!g_path_is_absolute (file) || !cookie_is_file_name (name))
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                        "%s: backing layer '%s' needs a plain absolute path whose file name "
                        "has only [A-Za-z0-9._+-] for --chain top or copy-base", disk->name, shown),
           NULL;
  if (!util_image_size (file, format, &size, cancellable, error) || g_stat (file, &st) != 0
      || (identities && (identity = chain_identity (file, format, cancellable, error)) == NULL))
    {
      if (error != NULL && *error == NULL)
        g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK, "cannot read %s", shown);
      return NULL;
    }
  return cookie_layer_new (name, format, size, (gint64) st.st_blocks * 512, identity);
}

GPtrArray *
chain_describe (const DiskInfo *disk, gboolean identities, GCancellable *cancellable,
                GError **error)
{
  g_autoptr(GPtrArray) layers = g_ptr_array_new_with_free_func ((GDestroyNotify) cookie_layer_free);

  for (guint i = 0; disk->backing != NULL && disk->backing[i] != NULL; i++)
    {
      const char *format = disk->backing_formats != NULL
                           && i < g_strv_length (disk->backing_formats)
                           ? disk->backing_formats[i] : "raw";
      CookieLayer *layer;

      if (i >= COOKIE_MAX_LAYERS)
        return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                            "%s: more than %d backing layers", disk->name, COOKIE_MAX_LAYERS),
               NULL;
      layer = chain_describe_layer (disk, disk->backing[i], format, identities, cancellable,
                                    error);
      if (layer == NULL)
        return NULL;
      g_ptr_array_add (layers, layer);
    }
  return g_steal_pointer (&layers);
}

gboolean
chain_local (const char *base, const char *format, GStrv *files, GStrv *formats,
             GCancellable *cancellable, GError **error)
{
  g_autoptr(JsonNode) info = util_qemu_img_info (base, format, TRUE, TRUE, cancellable, error);
  JsonArray *list = qmp_node_array (info);
  g_autoptr(GStrvBuilder) names = g_strv_builder_new ();
  g_autoptr(GStrvBuilder) kinds = g_strv_builder_new ();

  if (info == NULL)
    return FALSE;
  for (guint i = 0; i < qmp_array_length (list); i++)
    {
      JsonObject *layer = qmp_array_object (list, i);
      g_strv_builder_add (names, qmp_member_string_or (layer, "filename", ""));
      g_strv_builder_add (kinds, qmp_member_string_or (layer, "format", ""));
    }
  *files = g_strv_builder_end (names);
  *formats = g_strv_builder_end (kinds);
  return TRUE;
}

/* One layer: format, size, identity, in that order (the cheapest first). */
static gboolean
chain_verify_layer (const char *name, guint i, const CookieLayer *want, const char *file,
                    const char *format, GCancellable *cancellable, GError **error)
{
  g_autofree char *shown = blkmig_escape (file);
  g_autofree char *theirs = blkmig_escape (want->name);
  g_autofree char *identity = NULL;
  const char *what = NULL;
  gint64 size = 0;

  if (!g_str_equal (format, want->format))
    what = "its format differs";
  else if (!util_image_size (file, format, &size, cancellable, error))
    return FALSE;
  else if (size != want->virtual_size)
    what = "its size differs";
  else if ((identity = chain_identity (file, format, cancellable, error)) == NULL)
    return FALSE;
  else if (!g_str_equal (identity, want->identity))
    what = "its content differs";
  if (what == NULL)
    return TRUE;
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
               "%s: backing layer %u (%s here, %s on the source) is not the source's: %s",
               name, i + 1, shown, theirs, what);
  return FALSE;
}

gboolean
chain_verify (const char *name, const GPtrArray *layers, const char *const *files,
              const char *const *formats, GCancellable *cancellable, GError **error)
{
  guint have = files != NULL ? g_strv_length ((GStrv) files) : 0;
  g_autofree char *shown = blkmig_escape (name);

  if (have != layers->len)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                        "%s: the destination's chain has %u backing layers, the source's %u",
                        shown, have, layers->len), FALSE;
  for (guint i = 0; i < layers->len; i++)
    if (!chain_verify_layer (shown, i, layers->pdata[i], files[i], formats[i], cancellable,
                             error))
      return FALSE;
  return TRUE;
}
