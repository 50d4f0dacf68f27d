/* The migration cookie: construction, strict JSON parsing, serialisation and checks. */
#include "cookie/cookie.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/error.h"
#include "common/escape.h"
#include "common/json.h"

/* A cookie comes from another host: bounded before json-glib sees it.  Hundreds
 * of disks fit in far less; the tree stays a few MiB at most. */
static const BlkmigJsonLimits cookie_json_limits = {
  .max_bytes = COOKIE_MAX_TEXT, .max_depth = 16, .max_values = 100000,
};

/* Features this build of blkmig knows. */
static const char *const known_features[] = { "sparse", "write-blocking", "chain-top",
                                                 "chain-copy-base", NULL };

static const char *const mode_names[] = { "live", "copy", "move" };
static const char *const kind_names[] = { "source", "destination", "result" };
static const char *const status_names[] = { "completed", "copied", "moved", NULL };

/* ---- Construction and destruction ---------------------------------------- */

void
cookie_layer_free (CookieLayer *layer)
{
  if (layer == NULL)
    return;
  g_free (layer->name);
  g_free (layer->format);
  g_free (layer->identity);
  g_free (layer->export_name);
  g_free (layer->target_path);
  g_free (layer);
}

CookieLayer *
cookie_layer_new (const char *name, const char *format, gint64 virtual_size,
                  gint64 allocated, const char *identity)
{
  CookieLayer *layer = g_new0 (CookieLayer, 1);

  layer->name = g_strdup (name);
  layer->format = g_strdup (format);
  layer->virtual_size = virtual_size;
  layer->allocated = allocated;
  layer->identity = g_strdup (identity);
  return layer;
}

void
cookie_disk_free (CookieDisk *disk)
{
  if (disk == NULL)
    return;
  g_free (disk->name);
  g_free (disk->node);
  g_free (disk->format);
  g_strfreev (disk->backing);
  g_free (disk->sync);
  g_clear_pointer (&disk->chain, g_ptr_array_unref);
  g_free (disk->export_name);
  g_free (disk->target_node);
  g_free (disk->target_path);
  g_free (disk);
}

void
cookie_feature_free (CookieFeature *feature)
{
  if (feature == NULL)
    return;
  g_free (feature->name);
  g_free (feature);
}

void
cookie_free (Cookie *cookie)
{
  if (cookie == NULL)
    return;
  g_free (cookie->id);
  g_free (cookie->source_host);
  g_free (cookie->machine);
  g_clear_pointer (&cookie->features, g_ptr_array_unref);
  g_clear_pointer (&cookie->disks, g_ptr_array_unref);
  g_free (cookie->dest_host);
  g_free (cookie->dest_qemu);
  g_free (cookie->source_qemu);
  g_strfreev (cookie->accepted);
  g_free (cookie->nbd_unix);
  g_free (cookie->nbd_host);
  g_free (cookie->migrate_uri);
  g_free (cookie->status);
  g_free (cookie);
}

/* An empty cookie of kind @kind: no id, no host, no features, no disks. */
static Cookie *
cookie_alloc (CookieKind kind, CookieMode mode)
{
  Cookie *cookie = g_new0 (Cookie, 1);

  cookie->kind = kind;
  cookie->mode = mode;
  cookie->features = g_ptr_array_new_with_free_func ((GDestroyNotify) cookie_feature_free);
  cookie->disks = g_ptr_array_new_with_free_func ((GDestroyNotify) cookie_disk_free);
  cookie->downtime_ms = -1;
  return cookie;
}

char *
cookie_new_id (void)
{
  g_autofree char *uuid = g_uuid_string_random ();
  GString *id = g_string_sized_new (32);

  for (const char *p = uuid; *p != '\0'; p++)
    if (*p != '-')
      g_string_append_c (id, g_ascii_tolower (*p));
  return g_string_free (id, FALSE);
}

Cookie *
cookie_new (CookieMode mode)
{
  Cookie *cookie = cookie_alloc (COOKIE_KIND_SOURCE, mode);

  cookie->id = cookie_new_id ();
  cookie->source_host = g_strdup (g_get_host_name ());
  return cookie;
}

CookieDisk *
cookie_disk_new (const char *name, const char *node, const char *format,
                 gint64 virtual_size, gint64 allocated)
{
  CookieDisk *disk = g_new0 (CookieDisk, 1);

  disk->name = g_strdup (name);
  disk->node = g_strdup (node);
  disk->format = g_strdup (format);
  disk->virtual_size = virtual_size;
  disk->allocated = allocated;
  return disk;
}

void
cookie_add_feature (Cookie *cookie, const char *name, gboolean mandatory)
{
  CookieFeature *feature;

  g_return_if_fail (cookie != NULL && name != NULL);
  feature = g_new0 (CookieFeature, 1);
  feature->name = g_strdup (name);
  feature->mandatory = mandatory;
  g_ptr_array_add (cookie->features, feature);
}

static CookieDisk *
cookie_disk_copy (const CookieDisk *disk, CookieKind kind)
{
  CookieDisk *copy = cookie_disk_new (disk->name, disk->node, disk->format,
                                      disk->virtual_size, disk->allocated);

  copy->backing = g_strdupv (disk->backing);
  copy->sync = g_strdup (disk->sync);
  for (guint i = 0; disk->chain != NULL && i < disk->chain->len; i++)
    {
      const CookieLayer *l = disk->chain->pdata[i];
      CookieLayer *c = cookie_layer_new (l->name, l->format, l->virtual_size, l->allocated,
                                         l->identity);
      if (copy->chain == NULL)
        copy->chain = g_ptr_array_new_with_free_func ((GDestroyNotify) cookie_layer_free);
      if (kind >= COOKIE_KIND_DESTINATION)
        {
          c->export_name = g_strdup (l->export_name);
          c->target_path = g_strdup (l->target_path);
        }
      g_ptr_array_add (copy->chain, c);
    }
  if (kind >= COOKIE_KIND_DESTINATION)
    {
      copy->export_name = g_strdup (disk->export_name);
      copy->target_node = g_strdup (disk->target_node);
      copy->target_path = g_strdup (disk->target_path);
      copy->created = disk->created;
    }
  return copy;
}

static void
cookie_copy_destination (Cookie *copy, const Cookie *cookie)
{
  copy->dest_host = g_strdup (cookie->dest_host);
  copy->dest_qemu = g_strdup (cookie->dest_qemu);
  copy->accepted = g_strdupv (cookie->accepted);
  copy->nbd_unix = g_strdup (cookie->nbd_unix);
  copy->nbd_host = g_strdup (cookie->nbd_host);
  copy->nbd_port = cookie->nbd_port;
  copy->migrate_uri = g_strdup (cookie->migrate_uri);
}

Cookie *
cookie_copy_as (const Cookie *cookie, CookieKind kind)
{
  Cookie *copy;

  g_return_val_if_fail (cookie != NULL && kind <= cookie->kind, NULL);
  copy = cookie_alloc (kind, cookie->mode);
  copy->id = g_strdup (cookie->id);
  copy->source_host = g_strdup (cookie->source_host);
  copy->machine = g_strdup (cookie->machine);
  copy->source_qemu = g_strdup (cookie->source_qemu);
  for (guint i = 0; i < cookie->features->len; i++)
    {
      const CookieFeature *feature = g_ptr_array_index (cookie->features, i);

      cookie_add_feature (copy, feature->name, feature->mandatory);
    }
  for (guint i = 0; i < cookie->disks->len; i++)
    g_ptr_array_add (copy->disks, cookie_disk_copy (g_ptr_array_index (cookie->disks, i), kind));
  if (kind >= COOKIE_KIND_DESTINATION)
    cookie_copy_destination (copy, cookie);
  if (kind >= COOKIE_KIND_RESULT)
    {
      copy->status = g_strdup (cookie->status);
      copy->downtime_ms = cookie->downtime_ms;
      copy->bytes = cookie->bytes;
    }
  return copy;
}

Cookie *
cookie_copy (const Cookie *cookie)
{
  g_return_val_if_fail (cookie != NULL, NULL);
  return cookie_copy_as (cookie, cookie->kind);
}

Cookie *
cookie_new_reply (const Cookie *offer)
{
  Cookie *reply;

  g_return_val_if_fail (offer != NULL, NULL);
  reply = cookie_copy_as (offer, COOKIE_KIND_SOURCE);
  reply->kind = COOKIE_KIND_DESTINATION;
  reply->dest_host = g_strdup (g_get_host_name ());
  reply->accepted = g_strdupv (offer->accepted);
  return reply;
}

gboolean
cookie_has_feature (const Cookie *cookie, const char *name)
{
  for (guint i = 0; i < cookie->features->len; i++)
    if (g_str_equal (((CookieFeature *) cookie->features->pdata[i])->name, name))
      return TRUE;
  return FALSE;
}

gboolean
cookie_has_accepted (const Cookie *cookie, const char *feature)
{
  g_return_val_if_fail (cookie != NULL && feature != NULL, FALSE);
  return cookie->accepted != NULL
         && g_strv_contains ((const char *const *) cookie->accepted, feature);
}

CookieDisk *
cookie_find_disk (const Cookie *cookie, const char *name)
{
  g_return_val_if_fail (cookie != NULL, NULL);
  if (name == NULL || cookie->disks == NULL)
    return NULL;
  for (guint i = 0; i < cookie->disks->len; i++)
    {
      CookieDisk *disk = g_ptr_array_index (cookie->disks, i);

      if (g_strcmp0 (disk->name, name) == 0)
        return disk;
    }
  return NULL;
}

/* ---- Enumerations -------------------------------------------------------- */

const char *
cookie_mode_to_string (CookieMode mode)
{
  if ((guint) mode >= G_N_ELEMENTS (mode_names))
    return "unknown";
  return mode_names[mode];
}

gboolean
cookie_mode_from_string (const char *str, CookieMode *mode)
{
  if (str == NULL)
    return FALSE;
  for (guint i = 0; i < G_N_ELEMENTS (mode_names); i++)
    if (strcmp (str, mode_names[i]) == 0)
      {
        if (mode != NULL)
          *mode = (CookieMode) i;
        return TRUE;
      }
  return FALSE;
}

const char *
cookie_kind_to_string (CookieKind kind)
{
  if ((guint) kind >= G_N_ELEMENTS (kind_names))
    return "unknown";
  return kind_names[kind];
}

static gboolean
kind_from_string (const char *str, CookieKind *kind)
{
  for (guint i = 0; i < G_N_ELEMENTS (kind_names); i++)
    if (strcmp (str, kind_names[i]) == 0)
      {
        *kind = (CookieKind) i;
        return TRUE;
      }
  return FALSE;
}

/* ---- Error helpers ------------------------------------------------------- */

/* Sets a BLKMIG_ERROR_COOKIE error "cookie: <message>" and returns FALSE. */
static gboolean G_GNUC_PRINTF (2, 3)
fail (GError **error, const char *fmt, ...)
{
  g_autofree char *message = NULL;
  va_list args;

  va_start (args, fmt);
  message = g_strdup_vprintf (fmt, args);
  va_end (args);
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_COOKIE, "cookie: %s", message);
  return FALSE;
}

gboolean
cookie_is_name (const char *value)
{
  gboolean ok = strlen (value) <= COOKIE_MAX_NAME;

  for (const char *p = value; ok && *p != '\0'; p++)
    ok = g_ascii_isalnum (*p) || strchr ("._-#", *p) != NULL;
  return ok;
}

gboolean
cookie_is_qemu_version (const char *value)
{
  guint dots = 0;
  gboolean ok = *value != '\0' && strlen (value) <= 32;

  for (const char *p = value; ok && *p != '\0'; p++)
    {
      dots += *p == '.';
      ok = g_ascii_isdigit (*p) || (*p == '.' && p[1] != '\0' && p[1] != '.' && p != value);
    }
  return ok && dots == 2;
}

gboolean
cookie_is_file_name (const char *value)
{
  gboolean ok = *value != '\0' && strlen (value) <= 255 && strcmp (value, ".") != 0
                && strcmp (value, "..") != 0;

  for (const char *p = value; ok && *p != '\0'; p++)
    ok = g_ascii_isalnum (*p) || strchr ("._+-", *p) != NULL;
  return ok;
}

/* A value from the cookie, escaped and bounded so that the message stays one
 * harmless line. */
static char *
quote (const char *value)
{
  return blkmig_escape (value);
}

static gboolean
check_kind_at_least (CookieKind kind, CookieKind min_kind, GError **error)
{
  if (kind >= min_kind)
    return TRUE;
  return fail (error, "expected a %s cookie, got a %s cookie",
               cookie_kind_to_string (min_kind), cookie_kind_to_string (kind));
}

Cookie *
cookie_new_result (const Cookie *cookie, const char *status, GError **error)
{
  Cookie *result;

  g_return_val_if_fail (cookie != NULL && status != NULL, NULL);
  if (!check_kind_at_least (cookie->kind, COOKIE_KIND_DESTINATION, error))
    return NULL;
  result = cookie_copy_as (cookie, COOKIE_KIND_DESTINATION);
  result->kind = COOKIE_KIND_RESULT;
  result->status = g_strdup (status);
  return result;
}

/* ---- Typed member access ------------------------------------------------- */

/* "where.key", or "key" at the top level. */
static char *
path_of (const char *where, const char *key)
{
  if (where == NULL)
    return g_strdup (key);
  return g_strdup_printf ("%s.%s", where, key);
}

/* Finds @key in @obj.  A missing (or null) member leaves *out NULL; that is an
 * error only when @required. */
static gboolean
lookup (JsonObject *obj, const char *where, const char *key, gboolean required,
        JsonNode **out, GError **error)
{
  JsonNode *node = json_object_get_member (obj, key);
  g_autofree char *path = NULL;

  if (node != NULL && JSON_NODE_HOLDS_NULL (node) && !required)
    node = NULL;
  *out = node;
  if (node != NULL || !required)
    return TRUE;
  path = path_of (where, key);
  return fail (error, "%s is missing", path);
}

static gboolean
holds (JsonNode *node, GType type)
{
  return JSON_NODE_HOLDS_VALUE (node) && json_node_get_value_type (node) == type;
}

static gboolean
mistyped (const char *where, const char *key, const char *what, GError **error)
{
  g_autofree char *path = path_of (where, key);

  return fail (error, "%s must be %s", path, what);
}

/* Strings must be non-empty.  *out is left alone when an optional one is absent. */
static gboolean
get_string (JsonObject *obj, const char *where, const char *key, gboolean required,
            char **out, GError **error)
{
  JsonNode *node;
  g_autofree char *path = NULL;

  if (!lookup (obj, where, key, required, &node, error))
    return FALSE;
  if (node == NULL)
    return TRUE;
  if (!holds (node, G_TYPE_STRING))
    return mistyped (where, key, "a string", error);
  if (*json_node_get_string (node) == '\0')
    {
      path = path_of (where, key);
      return fail (error, "%s must not be empty", path);
    }
  g_free (*out);
  *out = json_node_dup_string (node);
  return TRUE;
}

static gboolean
get_int (JsonObject *obj, const char *where, const char *key, gboolean required,
         gint64 *out, GError **error)
{
  JsonNode *node;

  if (!lookup (obj, where, key, required, &node, error))
    return FALSE;
  if (node == NULL)
    return TRUE;
  if (!holds (node, G_TYPE_INT64))
    return mistyped (where, key, "an integer", error);
  *out = json_node_get_int (node);
  return TRUE;
}

static gboolean
get_bool (JsonObject *obj, const char *where, const char *key,
          gboolean *out, GError **error)
{
  JsonNode *node;

  if (!lookup (obj, where, key, TRUE, &node, error))
    return FALSE;
  if (!holds (node, G_TYPE_BOOLEAN))
    return mistyped (where, key, "a boolean", error);
  *out = json_node_get_boolean (node);
  return TRUE;
}

static gboolean
get_object (JsonObject *obj, const char *where, const char *key,
            JsonObject **out, GError **error)
{
  JsonNode *node;

  if (!lookup (obj, where, key, TRUE, &node, error))
    return FALSE;
  if (!JSON_NODE_HOLDS_OBJECT (node))
    return mistyped (where, key, "an object", error);
  *out = json_node_get_object (node);
  return TRUE;
}

/* *out is left NULL when an optional array is absent. */
static gboolean
get_array (JsonObject *obj, const char *where, const char *key, gboolean required,
           JsonArray **out, GError **error)
{
  JsonNode *node;

  *out = NULL;
  if (!lookup (obj, where, key, required, &node, error))
    return FALSE;
  if (node == NULL)
    return TRUE;
  if (!JSON_NODE_HOLDS_ARRAY (node))
    return mistyped (where, key, "an array", error);
  *out = json_node_get_array (node);
  return TRUE;
}

/* An array of non-empty strings.  An empty or absent optional array gives NULL. */
static gboolean
get_strv (JsonObject *obj, const char *where, const char *key, gboolean required,
          GStrv *out, GError **error)
{
  JsonArray *array;
  g_autoptr (GPtrArray) items = g_ptr_array_new_with_free_func (g_free);
  g_autofree char *path = path_of (where, key);

  if (!get_array (obj, where, key, required, &array, error))
    return FALSE;
  for (guint i = 0; array != NULL && i < json_array_get_length (array); i++)
    {
      JsonNode *node = json_array_get_element (array, i);

      if (!holds (node, G_TYPE_STRING))
        return fail (error, "%s[%u] must be a string", path, i);
      if (*json_node_get_string (node) == '\0')
        return fail (error, "%s[%u] must not be empty", path, i);
      g_ptr_array_add (items, json_node_dup_string (node));
    }
  g_ptr_array_add (items, NULL);
  g_strfreev (*out);
  *out = (GStrv) g_ptr_array_free (g_steal_pointer (&items), FALSE);
  if (!required && (*out)[0] == NULL)
    g_clear_pointer (out, g_strfreev);
  return TRUE;
}

/* ---- Range checks -------------------------------------------------------- */

/* @value must be at least @min (0 or 1) and at most COOKIE_MAX_SIZE. */
static gboolean
check_size (const char *where, const char *key, gint64 value, gint64 min, GError **error)
{
  g_autofree char *path = path_of (where, key);

  if (value < min)
    return fail (error, "%s must be %s, got %" G_GINT64_FORMAT, path,
                 min > 0 ? "positive" : "non-negative", value);
  if (value > COOKIE_MAX_SIZE)
    return fail (error, "%s is absurdly large, got %" G_GINT64_FORMAT
                 " (the limit is %" G_GINT64_FORMAT ")", path, value, COOKIE_MAX_SIZE);
  return TRUE;
}

/* Exactly @len lowercase hex digits. */
static gboolean
is_lower_hex (const char *text, gsize len)
{
  gboolean ok = strlen (text) == len;

  for (const char *p = text; ok && *p != '\0'; p++)
    ok = g_ascii_isdigit (*p) || (*p >= 'a' && *p <= 'f');
  return ok;
}

static gboolean
check_hex_id (const char *id, GError **error)
{
  g_autofree char *quoted = NULL;

  if (is_lower_hex (id, 32))
    return TRUE;
  quoted = quote (id);
  return fail (error, "id must be 32 lowercase hex digits, got '%s'", quoted);
}

/* ---- Parsing: the header ------------------------------------------------- */

static gboolean
parse_version (JsonObject *obj, GError **error)
{
  gint64 version = 0;

  if (!get_int (obj, NULL, "version", TRUE, &version, error))
    return FALSE;
  if (version != COOKIE_VERSION)
    return fail (error, "unsupported version %" G_GINT64_FORMAT
                 " (this blkmig supports version %d)", version, COOKIE_VERSION);
  return TRUE;
}

static gboolean
parse_kind (JsonObject *obj, CookieKind min_kind, CookieKind *kind, GError **error)
{
  g_autofree char *str = NULL;
  g_autofree char *quoted = NULL;

  if (!get_string (obj, NULL, "kind", TRUE, &str, error))
    return FALSE;
  if (!kind_from_string (str, kind))
    {
      quoted = quote (str);
      return fail (error, "unknown kind '%s' (expected source, destination or result)",
                   quoted);
    }
  return check_kind_at_least (*kind, min_kind, error);
}

static gboolean
parse_mode (JsonObject *obj, CookieMode *mode, GError **error)
{
  g_autofree char *str = NULL;
  g_autofree char *quoted = NULL;

  if (!get_string (obj, NULL, "mode", TRUE, &str, error))
    return FALSE;
  if (cookie_mode_from_string (str, mode))
    return TRUE;
  quoted = quote (str);
  return fail (error, "unknown mode '%s' (expected live, copy or move)", quoted);
}

/* version, kind, id, mode and source: everything but features and disks. */
static gboolean check_name (const char *where, const char *key, const char *value,
                            GError **error);

/* Optional "qemu" of the source or destination object: a QEMU's version. */
static gboolean
get_qemu_version (JsonObject *obj, const char *where, char **out, GError **error)
{
  g_autofree char *quoted = NULL;

  if (!get_string (obj, where, "qemu", FALSE, out, error))
    return FALSE;
  if (*out == NULL || cookie_is_qemu_version (*out))
    return TRUE;
  quoted = quote (*out);
  return fail (error, "%s.qemu must be a QEMU version (MAJOR.MINOR.MICRO), got '%s'", where,
               quoted);
}

static Cookie *
parse_header (JsonObject *obj, CookieKind min_kind, GError **error)
{
  CookieKind kind = COOKIE_KIND_SOURCE;
  JsonObject *source;
  g_autoptr (Cookie) cookie = NULL;

  if (!parse_version (obj, error) || !parse_kind (obj, min_kind, &kind, error))
    return NULL;
  cookie = cookie_alloc (kind, COOKIE_MODE_LIVE);
  if (!get_string (obj, NULL, "id", TRUE, &cookie->id, error)
      || !check_hex_id (cookie->id, error)
      || !parse_mode (obj, &cookie->mode, error)
      || !get_object (obj, NULL, "source", &source, error)
      || !get_string (source, "source", "host", TRUE, &cookie->source_host, error)
      || !get_string (source, "source", "machine", FALSE, &cookie->machine, error)
      || (cookie->machine != NULL && !check_name ("source", "machine", cookie->machine, error))
      || !get_qemu_version (source, "source", &cookie->source_qemu, error))
    return NULL;
  return g_steal_pointer (&cookie);
}

/* ---- Parsing: features and disks ----------------------------------------- */

static gboolean
parse_feature (Cookie *cookie, JsonNode *node, guint i, GError **error)
{
  g_autofree char *where = g_strdup_printf ("features[%u]", i);
  g_autofree char *name = NULL;
  gboolean mandatory = FALSE;

  if (!JSON_NODE_HOLDS_OBJECT (node))
    return fail (error, "%s must be an object", where);
  if (!get_string (json_node_get_object (node), where, "name", TRUE, &name, error)
      || !get_bool (json_node_get_object (node), where, "mandatory", &mandatory, error))
    return FALSE;
  cookie_add_feature (cookie, name, mandatory);
  return TRUE;
}

static gboolean
parse_features (Cookie *cookie, JsonObject *obj, GError **error)
{
  JsonArray *array;

  if (!get_array (obj, NULL, "features", TRUE, &array, error))
    return FALSE;
  for (guint i = 0; i < json_array_get_length (array); i++)
    if (!parse_feature (cookie, json_array_get_element (array, i), i, error))
      return FALSE;
  return TRUE;
}

/* The formats blkmig handles: a cookie with any other is refused. */
static gboolean
cookie_format_supported (const char *format)
{
  static const char *const formats[] = { "raw", "qcow2", NULL };

  return format != NULL && g_strv_contains (formats, format);
}

/* The format names files and drivers on the destination: only the known ones. */
static gboolean
check_format (const char *where, const char *format, GError **error)
{
  g_autofree char *quoted = NULL;

  if (cookie_format_supported (format))
    return TRUE;
  quoted = quote (format);
  return fail (error, "%s.format must be raw or qcow2, got '%s'", where, quoted);
}

/* QEMU's ids and node names (and blkmig's export names) are [A-Za-z0-9._-], auto
 * node names start with '#': anything else in a name is not from a QEMU, and a name
 * that passes is safe in any message. */
static gboolean
check_name (const char *where, const char *key, const char *value, GError **error)
{
  g_autofree char *path = NULL;
  g_autofree char *quoted = NULL;

  if (cookie_is_name (value))
    return TRUE;
  path = path_of (where, key);
  quoted = quote (value);
  return fail (error, "%s must be a QEMU name ([A-Za-z0-9._-#], at most %d characters), got "
               "'%s'", path, COOKIE_MAX_NAME, quoted);
}

static gboolean
get_name (JsonObject *obj, const char *where, const char *key, char **out, GError **error)
{
  return get_string (obj, where, key, TRUE, out, error)
         && check_name (where, key, *out, error);
}

static gboolean parse_disk_chain (CookieDisk *disk, JsonObject *obj, const char *where,
                                  GError **error);

static gboolean
parse_disk_source (CookieDisk *disk, JsonObject *obj, const char *where, GError **error)
{
  return get_name (obj, where, "name", &disk->name, error)
         && get_name (obj, where, "node", &disk->node, error)
         && get_string (obj, where, "format", TRUE, &disk->format, error)
         && check_format (where, disk->format, error)
         && get_int (obj, where, "virtual-size", TRUE, &disk->virtual_size, error)
         && check_size (where, "virtual-size", disk->virtual_size, 1, error)
         && get_int (obj, where, "allocated", TRUE, &disk->allocated, error)
         && check_size (where, "allocated", disk->allocated, 0, error)
         && get_strv (obj, where, "backing", FALSE, &disk->backing, error)
         && parse_disk_chain (disk, obj, where, error);
}

static gboolean
check_identity (const char *where, const char *value, GError **error)
{
  g_autofree char *quoted = NULL;

  if (g_str_has_prefix (value, "sha256:") && is_lower_hex (value + 7, 64))
    return TRUE;
  quoted = quote (value);
  return fail (error, "%s.identity must be sha256: and 64 lowercase hex digits, got '%s'",
               where, quoted);
}

static gboolean
check_file_name (const char *where, const char *value, GError **error)
{
  g_autofree char *quoted = NULL;

  if (cookie_is_file_name (value))
    return TRUE;
  quoted = quote (value);
  return fail (error, "%s.name must be a plain file name ([A-Za-z0-9._+-], no directory), "
               "got '%s'", where, quoted);
}

static CookieLayer *
parse_layer (JsonNode *node, const char *where, GError **error)
{
  g_autoptr (CookieLayer) layer = g_new0 (CookieLayer, 1);
  JsonObject *obj;

  if (!JSON_NODE_HOLDS_OBJECT (node))
    return fail (error, "%s must be an object", where), NULL;
  obj = json_node_get_object (node);
  if (!get_string (obj, where, "name", TRUE, &layer->name, error)
      || !check_file_name (where, layer->name, error)
      || !get_string (obj, where, "format", TRUE, &layer->format, error)
      || !check_format (where, layer->format, error)
      || !get_int (obj, where, "virtual-size", TRUE, &layer->virtual_size, error)
      || !check_size (where, "virtual-size", layer->virtual_size, 1, error)
      || !get_int (obj, where, "allocated", TRUE, &layer->allocated, error)
      || !check_size (where, "allocated", layer->allocated, 0, error)
      || !get_string (obj, where, "identity", FALSE, &layer->identity, error)
      || (layer->identity != NULL && !check_identity (where, layer->identity, error))
      || !get_string (obj, where, "export", FALSE, &layer->export_name, error)
      || (layer->export_name != NULL && !check_name (where, "export", layer->export_name, error))
      || !get_string (obj, where, "target", FALSE, &layer->target_path, error))
    return NULL;
  return g_steal_pointer (&layer);
}

/* What each sync needs of the chain: top the identities it verifies, copy-base
 * nothing more in an offer (the destination's answer adds the exports). */
static gboolean
check_chain_sync (const CookieDisk *disk, const char *where, GError **error)
{
  gboolean top = g_strcmp0 (disk->sync, "top") == 0;

  if ((top || g_strcmp0 (disk->sync, "copy-base") == 0) && disk->chain == NULL)
    return fail (error, "%s.sync is %s but %s.chain lists no layer", where, disk->sync, where);
  for (guint i = 0; top && i < disk->chain->len; i++)
    if (((CookieLayer *) disk->chain->pdata[i])->identity == NULL)
      return fail (error, "%s.sync is top but %s.chain[%u] has no identity", where, where, i);
  return TRUE;
}

/* "sync" (full, top or copy-base) and "chain" (the layers below the active one),
 * optional. */
static gboolean
parse_disk_chain (CookieDisk *disk, JsonObject *obj, const char *where, GError **error)
{
  JsonArray *array;
  g_autofree char *quoted = NULL;

  if (!get_string (obj, where, "sync", FALSE, &disk->sync, error)
      || !get_array (obj, where, "chain", FALSE, &array, error))
    return FALSE;
  if (disk->sync != NULL && !g_str_equal (disk->sync, "full") && !g_str_equal (disk->sync, "top")
      && !g_str_equal (disk->sync, "copy-base"))
    return quoted = quote (disk->sync),
           fail (error, "%s.sync must be full, top or copy-base, got '%s'", where, quoted);
  if (array != NULL && json_array_get_length (array) > COOKIE_MAX_LAYERS)
    return fail (error, "%s.chain has more than %d layers", where, COOKIE_MAX_LAYERS);
  for (guint i = 0; array != NULL && i < json_array_get_length (array); i++)
    {
      g_autofree char *at = g_strdup_printf ("%s.chain[%u]", where, i);
      CookieLayer *layer = parse_layer (json_array_get_element (array, i), at, error);

      if (layer == NULL)
        return FALSE;
      if (disk->chain == NULL)
        disk->chain = g_ptr_array_new_with_free_func ((GDestroyNotify) cookie_layer_free);
      g_ptr_array_add (disk->chain, layer);
    }
  return check_chain_sync (disk, where, error);
}

static gboolean
parse_disk_destination (CookieDisk *disk, JsonObject *obj, const char *where,
                        GError **error)
{
  if (!get_name (obj, where, "export", &disk->export_name, error)
      || !get_name (obj, where, "target-node", &disk->target_node, error)
      || !get_string (obj, where, "target", FALSE, &disk->target_path, error)
      || !get_bool (obj, where, "created", &disk->created, error))
    return FALSE;
  for (guint i = 0; g_strcmp0 (disk->sync, "copy-base") == 0 && i < disk->chain->len; i++)
    if (((CookieLayer *) disk->chain->pdata[i])->export_name == NULL)
      return fail (error, "%s.chain[%u].export is missing (sync copy-base)", where, i);
  return TRUE;
}

static CookieDisk *
parse_disk (JsonNode *node, guint i, CookieKind kind, GError **error)
{
  g_autofree char *where = g_strdup_printf ("disks[%u]", i);
  g_autoptr (CookieDisk) disk = g_new0 (CookieDisk, 1);
  JsonObject *obj;

  if (!JSON_NODE_HOLDS_OBJECT (node))
    {
      fail (error, "%s must be an object", where);
      return NULL;
    }
  obj = json_node_get_object (node);
  if (!parse_disk_source (disk, obj, where, error))
    return NULL;
  if (kind >= COOKIE_KIND_DESTINATION
      && !parse_disk_destination (disk, obj, where, error))
    return NULL;
  return g_steal_pointer (&disk);
}

static gboolean
parse_disks (Cookie *cookie, JsonObject *obj, GError **error)
{
  JsonArray *array;

  if (!get_array (obj, NULL, "disks", TRUE, &array, error))
    return FALSE;
  if (json_array_get_length (array) == 0)
    return fail (error, "disks must list at least one disk");
  for (guint i = 0; i < json_array_get_length (array); i++)
    {
      CookieDisk *disk = parse_disk (json_array_get_element (array, i), i,
                                     cookie->kind, error);
      g_autofree char *quoted = NULL;

      if (disk == NULL)
        return FALSE;
      g_ptr_array_add (cookie->disks, disk);
      if (cookie_find_disk (cookie, disk->name) != disk)
        {
          quoted = quote (disk->name);
          return fail (error, "disk %s appears twice", quoted);
        }
    }
  return TRUE;
}

/* ---- Parsing: destination and result ------------------------------------- */

static gboolean
parse_nbd (Cookie *cookie, JsonObject *dest, GError **error)
{
  JsonObject *nbd;
  gint64 port = 0;

  if (!get_object (dest, "destination", "nbd", &nbd, error)
      || !get_string (nbd, "destination.nbd", "unix", FALSE, &cookie->nbd_unix, error)
      || !get_string (nbd, "destination.nbd", "host", FALSE, &cookie->nbd_host, error))
    return FALSE;
  if (cookie->nbd_unix != NULL && cookie->nbd_host != NULL)
    return fail (error, "destination.nbd has both unix and host; give only one");
  if (cookie->nbd_unix != NULL)
    return TRUE;
  if (cookie->nbd_host == NULL)
    return fail (error, "destination.nbd needs either unix or host and port");
  if (!get_int (nbd, "destination.nbd", "port", TRUE, &port, error))
    return FALSE;
  if (port < 1 || port > 65535)
    return fail (error, "destination.nbd.port must be between 1 and 65535, got %"
                 G_GINT64_FORMAT, port);
  cookie->nbd_port = (int) port;
  return TRUE;
}

static gboolean
parse_destination (Cookie *cookie, JsonObject *obj, GError **error)
{
  JsonObject *dest;

  return get_object (obj, NULL, "destination", &dest, error)
         && get_string (dest, "destination", "host", TRUE, &cookie->dest_host, error)
         && get_qemu_version (dest, "destination", &cookie->dest_qemu, error)
         && get_strv (dest, "destination", "accepted", TRUE, &cookie->accepted, error)
         && parse_nbd (cookie, dest, error)
         && get_string (dest, "destination", "migrate-uri", FALSE,
                        &cookie->migrate_uri, error);
}

/* Optional; absent means not measured (-1). */
static gboolean
parse_downtime (Cookie *cookie, JsonObject *result, GError **error)
{
  JsonNode *node;

  if (!lookup (result, "result", "downtime-ms", FALSE, &node, error) || node == NULL)
    return node == NULL;
  return get_int (result, "result", "downtime-ms", TRUE, &cookie->downtime_ms, error)
         && check_size ("result", "downtime-ms", cookie->downtime_ms, 0, error);
}

static gboolean
parse_result (Cookie *cookie, JsonObject *obj, GError **error)
{
  JsonObject *result;
  g_autofree char *quoted = NULL;

  if (!get_object (obj, NULL, "result", &result, error)
      || !get_string (result, "result", "status", TRUE, &cookie->status, error))
    return FALSE;
  if (!g_strv_contains (status_names, cookie->status))
    {
      quoted = quote (cookie->status);
      return fail (error, "unknown result.status '%s' (expected completed, copied or moved)",
                   quoted);
    }
  return parse_downtime (cookie, result, error)
         && get_int (result, "result", "bytes", TRUE, &cookie->bytes, error)
         && check_size ("result", "bytes", cookie->bytes, 0, error);
}

/* ---- Parsing: entry points ----------------------------------------------- */

static Cookie *
cookie_from_object (JsonObject *obj, CookieKind min_kind, GError **error)
{
  g_autoptr (Cookie) cookie = parse_header (obj, min_kind, error);

  if (cookie == NULL
      || !parse_features (cookie, obj, error)
      || !parse_disks (cookie, obj, error))
    return NULL;
  if (cookie->kind >= COOKIE_KIND_DESTINATION && !parse_destination (cookie, obj, error))
    return NULL;
  if (cookie->kind >= COOKIE_KIND_RESULT && !parse_result (cookie, obj, error))
    return NULL;
  return g_steal_pointer (&cookie);
}

Cookie *
cookie_parse (const char *data, gssize len, CookieKind min_kind, GError **error)
{
  g_autoptr (GError) local = NULL;
  g_autoptr (JsonNode) root = NULL;

  g_return_val_if_fail (data != NULL, NULL);
  root = blkmig_json_parse (data, len, &cookie_json_limits, &local);
  if (root == NULL)
    {
      fail (error, "%s", g_str_equal (local->message, "empty") ? "the cookie is empty"
                                                               : local->message);
      return NULL;
    }
  if (!JSON_NODE_HOLDS_OBJECT (root))
    {
      fail (error, "the top level must be a JSON object");
      return NULL;
    }
  return cookie_from_object (json_node_get_object (root), min_kind, error);
}

/* Reads at most COOKIE_MAX_TEXT bytes; more is an error, not a truncation. */
static gboolean
read_stream (FILE *in, char **contents, gsize *len, GError **error)
{
  g_autoptr (GString) buf = g_string_new (NULL);
  char chunk[65536];
  size_t n;

  while ((n = fread (chunk, 1, sizeof chunk, in)) > 0)
    {
      g_string_append_len (buf, chunk, n);
      if (buf->len > COOKIE_MAX_TEXT)
        return fail (error, "larger than %d bytes", COOKIE_MAX_TEXT);
    }
  if (ferror (in))
    return fail (error, "cannot read: %s", g_strerror (errno));
  *len = buf->len;
  *contents = g_string_free (g_steal_pointer (&buf), FALSE);
  return TRUE;
}

static gboolean
read_cookie_file (const char *path, char **contents, gsize *len, GError **error)
{
  FILE *in;
  gboolean ok;

  if (strcmp (path, "-") == 0)
    return read_stream (stdin, contents, len, error);
  in = fopen (path, "re");
  if (in == NULL)
    return fail (error, "cannot open: %s", g_strerror (errno));
  ok = read_stream (in, contents, len, error);
  fclose (in);
  return ok;
}

/* "cookie: <problem>" becomes "cookie: <where>: <problem>". */
static void
prefix_where (GError *error, const char *where)
{
  const char *problem = error->message;
  char *message;

  if (g_str_has_prefix (problem, "cookie: "))
    problem += strlen ("cookie: ");
  message = g_strdup_printf ("cookie: %s: %s", where, problem);
  g_free (error->message);
  error->message = message;
}

Cookie *
cookie_load (const char *path, CookieKind min_kind, GError **error)
{
  g_autofree char *contents = NULL;
  g_autoptr (GError) local = NULL;
  gsize len = 0;
  Cookie *cookie = NULL;

  g_return_val_if_fail (path != NULL, NULL);
  if (read_cookie_file (path, &contents, &len, &local))
    cookie = cookie_parse (contents, (gssize) len, min_kind, &local);
  if (cookie != NULL)
    return cookie;
  prefix_where (local, strcmp (path, "-") == 0 ? "standard input" : path);
  g_propagate_error (error, g_steal_pointer (&local));
  return NULL;
}

/* ---- Serialisation ------------------------------------------------------- */

static void
build_features (JsonBuilder *b, const Cookie *cookie)
{
  json_builder_set_member_name (b, "features");
  json_builder_begin_array (b);
  for (guint i = 0; i < cookie->features->len; i++)
    {
      const CookieFeature *feature = g_ptr_array_index (cookie->features, i);

      json_builder_begin_object (b);
      blkmig_json_add_string (b, "name", feature->name);
      json_builder_set_member_name (b, "mandatory");
      json_builder_add_boolean_value (b, feature->mandatory);
      json_builder_end_object (b);
    }
  json_builder_end_array (b);
}

static void
build_chain (JsonBuilder *b, const CookieDisk *disk, CookieKind kind)
{
  if (disk->sync != NULL)
    blkmig_json_add_string (b, "sync", disk->sync);
  if (disk->chain == NULL)
    return;
  json_builder_set_member_name (b, "chain");
  json_builder_begin_array (b);
  for (guint i = 0; i < disk->chain->len; i++)
    {
      const CookieLayer *layer = disk->chain->pdata[i];

      json_builder_begin_object (b);
      blkmig_json_add_string (b, "name", layer->name);
      blkmig_json_add_string (b, "format", layer->format);
      blkmig_json_add_int (b, "virtual-size", layer->virtual_size);
      blkmig_json_add_int (b, "allocated", layer->allocated);
      if (layer->identity != NULL)
        blkmig_json_add_string (b, "identity", layer->identity);
      if (kind >= COOKIE_KIND_DESTINATION && layer->export_name != NULL)
        blkmig_json_add_string (b, "export", layer->export_name);
      if (kind >= COOKIE_KIND_DESTINATION && layer->target_path != NULL)
        blkmig_json_add_string (b, "target", layer->target_path);
      json_builder_end_object (b);
    }
  json_builder_end_array (b);
}

static void
build_disk (JsonBuilder *b, const CookieDisk *disk, CookieKind kind)
{
  json_builder_begin_object (b);
  blkmig_json_add_string (b, "name", disk->name);
  blkmig_json_add_string (b, "node", disk->node);
  blkmig_json_add_string (b, "format", disk->format);
  blkmig_json_add_int (b, "virtual-size", disk->virtual_size);
  blkmig_json_add_int (b, "allocated", disk->allocated);
  if (disk->backing != NULL && disk->backing[0] != NULL)
    blkmig_json_add_strv (b, "backing", (const char *const *) disk->backing);
  build_chain (b, disk, kind);
  if (kind >= COOKIE_KIND_DESTINATION)
    {
      blkmig_json_add_string (b, "export", disk->export_name);
      blkmig_json_add_string (b, "target-node", disk->target_node);
      if (disk->target_path != NULL)
        blkmig_json_add_string (b, "target", disk->target_path);
      json_builder_set_member_name (b, "created");
      json_builder_add_boolean_value (b, disk->created);
    }
  json_builder_end_object (b);
}

static void
build_destination (JsonBuilder *b, const Cookie *cookie)
{
  json_builder_set_member_name (b, "destination");
  json_builder_begin_object (b);
  blkmig_json_add_string (b, "host", cookie->dest_host);
  if (cookie->dest_qemu != NULL)
    blkmig_json_add_string (b, "qemu", cookie->dest_qemu);
  blkmig_json_add_strv (b, "accepted", (const char *const *) cookie->accepted);
  json_builder_set_member_name (b, "nbd");
  json_builder_begin_object (b);
  if (cookie->nbd_unix != NULL)
    blkmig_json_add_string (b, "unix", cookie->nbd_unix);
  else
    {
      blkmig_json_add_string (b, "host", cookie->nbd_host);
      blkmig_json_add_int (b, "port", cookie->nbd_port);
    }
  json_builder_end_object (b);
  if (cookie->migrate_uri != NULL)
    blkmig_json_add_string (b, "migrate-uri", cookie->migrate_uri);
  json_builder_end_object (b);
}

static void
build_result (JsonBuilder *b, const Cookie *cookie)
{
  json_builder_set_member_name (b, "result");
  json_builder_begin_object (b);
  blkmig_json_add_string (b, "status", cookie->status);
  if (cookie->downtime_ms >= 0)
    blkmig_json_add_int (b, "downtime-ms", cookie->downtime_ms);
  blkmig_json_add_int (b, "bytes", cookie->bytes);
  json_builder_end_object (b);
}

static JsonNode *
build_cookie (const Cookie *cookie)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();

  json_builder_begin_object (b);
  blkmig_json_add_int (b, "version", COOKIE_VERSION);
  blkmig_json_add_string (b, "kind", cookie_kind_to_string (cookie->kind));
  blkmig_json_add_string (b, "id", cookie->id);
  blkmig_json_add_string (b, "mode", cookie_mode_to_string (cookie->mode));
  json_builder_set_member_name (b, "source");
  json_builder_begin_object (b);
  blkmig_json_add_string (b, "host", cookie->source_host);
  if (cookie->machine != NULL)
    blkmig_json_add_string (b, "machine", cookie->machine);
  if (cookie->source_qemu != NULL)
    blkmig_json_add_string (b, "qemu", cookie->source_qemu);
  json_builder_end_object (b);
  build_features (b, cookie);
  json_builder_set_member_name (b, "disks");
  json_builder_begin_array (b);
  for (guint i = 0; i < cookie->disks->len; i++)
    build_disk (b, g_ptr_array_index (cookie->disks, i), cookie->kind);
  json_builder_end_array (b);
  if (cookie->kind >= COOKIE_KIND_DESTINATION)
    build_destination (b, cookie);
  if (cookie->kind >= COOKIE_KIND_RESULT)
    build_result (b, cookie);
  json_builder_end_object (b);
  return json_builder_get_root (b);
}

char *
cookie_to_string (const Cookie *cookie)
{
  g_autoptr (JsonGenerator) generator = json_generator_new ();
  g_autoptr (JsonNode) root = NULL;
  g_autofree char *text = NULL;

  g_return_val_if_fail (cookie != NULL, NULL);
  root = build_cookie (cookie);
  json_generator_set_pretty (generator, TRUE);
  json_generator_set_indent (generator, 2);
  json_generator_set_root (generator, root);
  text = json_generator_to_data (generator, NULL);
  return g_strconcat (text, "\n", NULL);
}

static gboolean
write_stdout (const char *text, GError **error)
{
  size_t len = strlen (text);

  if (fwrite (text, 1, len, stdout) == len && fflush (stdout) == 0)
    return TRUE;
  return fail (error, "cannot write to standard output: %s", g_strerror (errno));
}

gboolean
cookie_save (const Cookie *cookie, const char *path, GError **error)
{
  g_autofree char *text = NULL;
  g_autoptr (GError) local = NULL;

  g_return_val_if_fail (cookie != NULL && path != NULL, FALSE);
  text = cookie_to_string (cookie);
  if (strcmp (path, "-") == 0)
    return write_stdout (text, error);
  if (g_file_set_contents (path, text, -1, &local))
    return TRUE;
  return fail (error, "%s", local->message);
}

/* ---- Negotiation --------------------------------------------------------- */

gboolean
cookie_accept_features (Cookie *offer, GError **error)
{
  g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);

  g_return_val_if_fail (offer != NULL, FALSE);
  for (guint i = 0; i < offer->features->len; i++)
    {
      const CookieFeature *feature = g_ptr_array_index (offer->features, i);
      g_autofree char *quoted = quote (feature->name);

      if (!g_strv_contains (known_features, feature->name))
        {
          if (feature->mandatory)
            return fail (error, "the source requires feature '%s', which this blkmig "
                         "does not support", quoted);
          continue;
        }
      if (!g_ptr_array_find_with_equal_func (names, feature->name, g_str_equal, NULL))
        g_ptr_array_add (names, g_strdup (feature->name));
    }
  g_ptr_array_add (names, NULL);
  g_strfreev (offer->accepted);
  offer->accepted = (GStrv) g_ptr_array_free (g_steal_pointer (&names), FALSE);
  return TRUE;
}

/* copy-base: the answer lists the offered layers, each with its export. */
static gboolean
check_reply_chain (const CookieDisk *ours, const CookieDisk *theirs, const char *quoted,
                   GError **error)
{
  guint n = ours->chain != NULL ? ours->chain->len : 0;

  if (g_strcmp0 (ours->sync, "copy-base") != 0)
    return TRUE;
  if (theirs->chain == NULL || theirs->chain->len != n)
    return fail (error, "disk %s: the destination answered another chain than the offer's",
                 quoted);
  for (guint i = 0; i < n; i++)
    {
      const CookieLayer *a = ours->chain->pdata[i], *b = theirs->chain->pdata[i];
      if (a->virtual_size != b->virtual_size || g_strcmp0 (a->name, b->name) != 0)
        return fail (error, "disk %s: the destination answered another chain than the "
                     "offer's (layer %u)", quoted, i);
    }
  return TRUE;
}

static gboolean
check_reply_disks (const Cookie *offer, const Cookie *reply, GError **error)
{
  for (guint i = 0; i < offer->disks->len; i++)
    {
      const CookieDisk *ours = g_ptr_array_index (offer->disks, i);
      const CookieDisk *theirs = cookie_find_disk (reply, ours->name);
      g_autofree char *quoted = quote (ours->name);

      if (theirs == NULL)
        return fail (error, "destination did not answer for disk %s", quoted);
      if (theirs->virtual_size != ours->virtual_size)
        return fail (error, "disk %s is %" G_GINT64_FORMAT " bytes on the source but %"
                     G_GINT64_FORMAT " bytes on the destination",
                     quoted, ours->virtual_size, theirs->virtual_size);
      /* the source mirrors as it offered, never as the answer says */
      if (g_strcmp0 (theirs->sync, ours->sync) != 0)
        return fail (error, "disk %s: the destination answered sync %s, the offer said %s",
                     quoted, theirs->sync != NULL ? theirs->sync : "full",
                     ours->sync != NULL ? ours->sync : "full");
      if (!check_reply_chain (ours, theirs, quoted, error))
        return FALSE;
    }
  for (guint i = 0; i < reply->disks->len; i++)
    {
      const CookieDisk *theirs = g_ptr_array_index (reply->disks, i);
      g_autofree char *quoted = quote (theirs->name);

      if (cookie_find_disk (offer, theirs->name) == NULL)
        return fail (error, "destination answered for disk %s, which was not offered",
                     quoted);
    }
  return TRUE;
}

static gboolean
check_reply_features (const Cookie *offer, const Cookie *reply, GError **error)
{
  for (guint i = 0; i < offer->features->len; i++)
    {
      const CookieFeature *feature = g_ptr_array_index (offer->features, i);
      g_autofree char *quoted = quote (feature->name);

      if (feature->mandatory && !cookie_has_accepted (reply, feature->name))
        return fail (error, "destination did not accept mandatory feature '%s'", quoted);
    }
  return TRUE;
}

gboolean
cookie_check_reply (const Cookie *offer, const Cookie *reply, GError **error)
{
  g_return_val_if_fail (offer != NULL && reply != NULL, FALSE);
  if (!check_kind_at_least (reply->kind, COOKIE_KIND_DESTINATION, error))
    return FALSE;
  if (g_strcmp0 (offer->id, reply->id) != 0)
    {
      g_autofree char *quoted = quote (reply->id);
      return fail (error, "destination answered migration %s, expected %s", quoted, offer->id);
    }
  if (offer->mode != reply->mode)
    return fail (error, "destination answered for a %s migration, expected %s",
                 cookie_mode_to_string (reply->mode), cookie_mode_to_string (offer->mode));
  return check_reply_disks (offer, reply, error)
         && check_reply_features (offer, reply, error);
}
