/* Unit tests for the migration cookie, including the golden files in tests/golden/cookie/. */
#include <string.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "common/error.h"
#include "cookie/cookie.h"

#define TEST_ID "0f3c1a2b4d5e6f708192a3b4c5d6e7f8"
#define OTHER_ID "ffffffffffffffffffffffffffffffff"
#define GIB (G_GINT64_CONSTANT (1) << 30)

/* ---- Fixtures ------------------------------------------------------------ */

static Cookie *
make_source (void)
{
  Cookie *cookie = cookie_new (COOKIE_MODE_LIVE);
  CookieDisk *vda = cookie_disk_new ("vda", "#block123", "qcow2", 4 * GIB, GIB);
  const char *backing[] = { "/images/base.qcow2", NULL };

  g_free (cookie->id);
  cookie->id = g_strdup (TEST_ID);
  g_free (cookie->source_host);
  cookie->source_host = g_strdup ("hostA");
  cookie_add_feature (cookie, "sparse", FALSE);
  cookie_add_feature (cookie, "write-blocking", TRUE);
  vda->backing = g_strdupv ((char **) backing);
  g_ptr_array_add (cookie->disks, vda);
  g_ptr_array_add (cookie->disks,
                   cookie_disk_new ("vdb", "#block456", "raw", 2 * GIB, 0));
  return cookie;
}

/* The source cookie as a destination answers it, over a UNIX socket or TCP. */
static Cookie *
make_destination (gboolean tcp)
{
  Cookie *cookie = make_source ();

  cookie->kind = COOKIE_KIND_DESTINATION;
  cookie->dest_host = g_strdup ("hostB");
  g_assert_true (cookie_accept_features (cookie, NULL));
  if (tcp)
    {
      cookie->nbd_host = g_strdup ("192.0.2.1");
      cookie->nbd_port = 10809;
    }
  else
    {
      cookie->nbd_unix = g_strdup ("/run/x/nbd.sock");
      cookie->migrate_uri = g_strdup ("unix:/run/x/mig.sock");
    }
  for (guint i = 0; i < cookie->disks->len; i++)
    {
      CookieDisk *disk = g_ptr_array_index (cookie->disks, i);

      disk->export_name = g_strdup_printf ("bm-0f3c1a2b-%u", i);
      disk->target_node = g_strdup_printf ("drive-%s", disk->name);
      if (i == 0)
        disk->target_path = g_strdup ("/dst/vda.qcow2");
      disk->created = i == 0;
    }
  return cookie;
}

static Cookie *
make_result (gint64 downtime_ms)
{
  Cookie *cookie = make_destination (FALSE);

  cookie->kind = COOKIE_KIND_RESULT;
  cookie->status = g_strdup ("completed");
  cookie->downtime_ms = downtime_ms;
  cookie->bytes = 3 * GIB;
  return cookie;
}

/* ---- Comparison ---------------------------------------------------------- */

/* NULL and an empty vector are the same. */
static void
assert_strv_equal (char *const *a, char *const *b)
{
  guint na = a != NULL ? g_strv_length ((char **) a) : 0;
  guint nb = b != NULL ? g_strv_length ((char **) b) : 0;

  g_assert_cmpuint (na, ==, nb);
  for (guint i = 0; i < na; i++)
    g_assert_cmpstr (a[i], ==, b[i]);
}

static void
assert_disks_equal (const CookieDisk *a, const CookieDisk *b)
{
  g_assert_cmpstr (a->name, ==, b->name);
  g_assert_cmpstr (a->node, ==, b->node);
  g_assert_cmpstr (a->format, ==, b->format);
  g_assert_cmpint (a->virtual_size, ==, b->virtual_size);
  g_assert_cmpint (a->allocated, ==, b->allocated);
  assert_strv_equal (a->backing, b->backing);
  g_assert_cmpstr (a->export_name, ==, b->export_name);
  g_assert_cmpstr (a->target_node, ==, b->target_node);
  g_assert_cmpstr (a->target_path, ==, b->target_path);
  g_assert_cmpint (a->created, ==, b->created);
}

static void
assert_features_equal (const GPtrArray *a, const GPtrArray *b)
{
  g_assert_cmpuint (a->len, ==, b->len);
  for (guint i = 0; i < a->len; i++)
    {
      const CookieFeature *fa = g_ptr_array_index (a, i);
      const CookieFeature *fb = g_ptr_array_index (b, i);

      g_assert_cmpstr (fa->name, ==, fb->name);
      g_assert_cmpint (fa->mandatory, ==, fb->mandatory);
    }
}

static void
assert_cookies_equal (const Cookie *a, const Cookie *b)
{
  g_assert_cmpint (a->kind, ==, b->kind);
  g_assert_cmpstr (a->id, ==, b->id);
  g_assert_cmpint (a->mode, ==, b->mode);
  g_assert_cmpstr (a->source_host, ==, b->source_host);
  assert_features_equal (a->features, b->features);
  g_assert_cmpuint (a->disks->len, ==, b->disks->len);
  for (guint i = 0; i < a->disks->len; i++)
    assert_disks_equal (g_ptr_array_index (a->disks, i), g_ptr_array_index (b->disks, i));
  g_assert_cmpstr (a->dest_host, ==, b->dest_host);
  assert_strv_equal (a->accepted, b->accepted);
  g_assert_cmpstr (a->nbd_unix, ==, b->nbd_unix);
  g_assert_cmpstr (a->nbd_host, ==, b->nbd_host);
  g_assert_cmpint (a->nbd_port, ==, b->nbd_port);
  g_assert_cmpstr (a->migrate_uri, ==, b->migrate_uri);
  g_assert_cmpstr (a->status, ==, b->status);
  g_assert_cmpint (a->downtime_ms, ==, b->downtime_ms);
  g_assert_cmpint (a->bytes, ==, b->bytes);
}

/* Serialises, parses back, compares, and checks that serialising again is stable. */
static void
assert_round_trip (const Cookie *cookie)
{
  g_autofree char *text = cookie_to_string (cookie);
  g_autofree char *again = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (Cookie) parsed = cookie_parse (text, -1, cookie->kind, &error);

  g_assert_no_error (error);
  g_assert_nonnull (parsed);
  assert_cookies_equal (cookie, parsed);
  again = cookie_to_string (parsed);
  g_assert_cmpstr (text, ==, again);
  g_assert_true (g_str_has_suffix (text, "}\n"));
}

/* The message of a failure that must be BLKMIG_ERROR_COOKIE and one line. */
static void
assert_cookie_error (const GError *error, const char *expected)
{
  g_assert_error (error, BLKMIG_ERROR, BLKMIG_ERROR_COOKIE);
  g_assert_true (g_str_has_prefix (error->message, "cookie: "));
  g_assert_null (strchr (error->message, '\n'));
  if (expected != NULL)
    g_assert_cmpstr (error->message, ==, expected);
}

static void
assert_parse_fails (const char *text, CookieKind min_kind, const char *expected)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (Cookie) cookie = cookie_parse (text, -1, min_kind, &error);

  g_assert_null (cookie);
  assert_cookie_error (error, expected);
}

/* ---- Construction and helpers -------------------------------------------- */

static void
test_new (void)
{
  g_autoptr (Cookie) a = cookie_new (COOKIE_MODE_COPY);
  g_autoptr (Cookie) b = cookie_new (COOKIE_MODE_COPY);

  g_assert_cmpint (a->kind, ==, COOKIE_KIND_SOURCE);
  g_assert_cmpint (a->mode, ==, COOKIE_MODE_COPY);
  g_assert_cmpuint (strlen (a->id), ==, 32);
  for (const char *p = a->id; *p != '\0'; p++)
    g_assert_true (g_ascii_isdigit (*p) || (*p >= 'a' && *p <= 'f'));
  g_assert_cmpstr (a->id, !=, b->id);
  g_assert_cmpstr (a->source_host, ==, g_get_host_name ());
  g_assert_cmpint (a->downtime_ms, ==, -1);
  g_assert_cmpuint (a->features->len, ==, 0);
  g_assert_cmpuint (a->disks->len, ==, 0);
  g_assert_null (a->accepted);
}

static void
test_free_null (void)
{
  cookie_free (NULL);
  cookie_disk_free (NULL);
  cookie_feature_free (NULL);
}

static void
test_modes (void)
{
  CookieMode mode = COOKIE_MODE_LIVE;

  g_assert_cmpstr (cookie_mode_to_string (COOKIE_MODE_LIVE), ==, "live");
  g_assert_cmpstr (cookie_mode_to_string (COOKIE_MODE_COPY), ==, "copy");
  g_assert_cmpstr (cookie_mode_to_string (COOKIE_MODE_MOVE), ==, "move");
  g_assert_true (cookie_mode_from_string ("move", &mode));
  g_assert_cmpint (mode, ==, COOKIE_MODE_MOVE);
  g_assert_true (cookie_mode_from_string ("copy", &mode));
  g_assert_cmpint (mode, ==, COOKIE_MODE_COPY);
  g_assert_false (cookie_mode_from_string ("Live", &mode));
  g_assert_false (cookie_mode_from_string (NULL, &mode));
  g_assert_cmpint (mode, ==, COOKIE_MODE_COPY);
  g_assert_cmpstr (cookie_kind_to_string (COOKIE_KIND_SOURCE), ==, "source");
  g_assert_cmpstr (cookie_kind_to_string (COOKIE_KIND_DESTINATION), ==, "destination");
  g_assert_cmpstr (cookie_kind_to_string (COOKIE_KIND_RESULT), ==, "result");
}

static void
test_find_disk (void)
{
  g_autoptr (Cookie) cookie = make_source ();

  g_assert_cmpstr (cookie_find_disk (cookie, "vdb")->node, ==, "#block456");
  g_assert_null (cookie_find_disk (cookie, "vdc"));
  g_assert_null (cookie_find_disk (cookie, NULL));
}

/* ---- Round trips --------------------------------------------------------- */

static void
test_round_trip_source (void)
{
  g_autoptr (Cookie) cookie = make_source ();

  assert_round_trip (cookie);
}

static void
test_round_trip_destination (void)
{
  g_autoptr (Cookie) over_unix = make_destination (FALSE);
  g_autoptr (Cookie) over_tcp = make_destination (TRUE);

  assert_round_trip (over_unix);
  assert_round_trip (over_tcp);
}

static void
test_round_trip_result (void)
{
  g_autoptr (Cookie) measured = make_result (12);
  g_autoptr (Cookie) unmeasured = make_result (-1);
  g_autofree char *text = cookie_to_string (unmeasured);

  assert_round_trip (measured);
  assert_round_trip (unmeasured);
  g_assert_null (strstr (text, "downtime-ms"));
}

/* A copy is deep (nothing shared) and serialises as the original does. */
static void
assert_copy_equal (const Cookie *cookie)
{
  g_autoptr (Cookie) copy = cookie_copy (cookie);
  g_autofree char *text = cookie_to_string (cookie);
  g_autofree char *copied = cookie_to_string (copy);

  assert_cookies_equal (cookie, copy);
  g_assert_cmpstr (text, ==, copied);
  g_assert_true (copy->id != cookie->id && copy->disks != cookie->disks);
  for (guint i = 0; i < copy->disks->len; i++)
    {
      const CookieDisk *a = g_ptr_array_index (cookie->disks, i);
      const CookieDisk *b = g_ptr_array_index (copy->disks, i);

      g_assert_true (a != b && a->name != b->name);
      g_assert_true (a->backing == NULL || a->backing != b->backing);
    }
}

static void
test_copy (void)
{
  g_autoptr (Cookie) source = make_source ();
  g_autoptr (Cookie) dest = make_destination (FALSE);
  g_autoptr (Cookie) tcp = make_destination (TRUE);
  g_autoptr (Cookie) result = make_result (12);

  assert_copy_equal (source);
  assert_copy_equal (dest);
  assert_copy_equal (tcp);
  assert_copy_equal (result);
}

/* Copying as an earlier kind is what serialising with that kind gives. */
static void
test_copy_as (void)
{
  g_autoptr (Cookie) dest = make_destination (FALSE);
  g_autoptr (Cookie) part = cookie_copy_as (dest, COOKIE_KIND_SOURCE);
  g_autofree char *copied = cookie_to_string (part);
  g_autofree char *text = NULL;

  dest->kind = COOKIE_KIND_SOURCE;
  text = cookie_to_string (dest);
  g_assert_cmpstr (text, ==, copied);
  g_assert_null (part->dest_host);
  g_assert_null (((CookieDisk *) g_ptr_array_index (part->disks, 0))->export_name);
}

static void
test_new_reply (void)
{
  g_autoptr (Cookie) offer = make_source ();
  g_autoptr (Cookie) reply = NULL;
  g_autoptr (GError) error = NULL;

  g_assert_true (cookie_accept_features (offer, &error));
  reply = cookie_new_reply (offer);
  g_assert_cmpint (reply->kind, ==, COOKIE_KIND_DESTINATION);
  g_assert_cmpstr (reply->id, ==, offer->id);
  g_assert_cmpstr (reply->dest_host, ==, g_get_host_name ());
  assert_strv_equal (reply->accepted, offer->accepted);
  g_assert_true (reply->accepted != offer->accepted);
  g_assert_cmpuint (reply->disks->len, ==, offer->disks->len);
}

static void
test_new_result (void)
{
  g_autoptr (Cookie) dest = make_destination (TRUE);
  g_autoptr (Cookie) source = make_source ();
  g_autoptr (GError) error = NULL;
  g_autoptr (Cookie) result = cookie_new_result (dest, "copied", &error);
  g_autoptr (Cookie) none = NULL;
  g_autoptr (Cookie) parsed = NULL;
  g_autofree char *text = NULL;

  g_assert_no_error (error);
  g_assert_cmpint (result->kind, ==, COOKIE_KIND_RESULT);
  g_assert_cmpstr (result->status, ==, "copied");
  g_assert_cmpint (result->downtime_ms, ==, -1);
  g_assert_cmpint (result->bytes, ==, 0);
  g_assert_cmpstr (result->nbd_host, ==, dest->nbd_host);
  text = cookie_to_string (result);
  parsed = cookie_parse (text, -1, COOKIE_KIND_RESULT, &error);
  g_assert_no_error (error);
  assert_cookies_equal (result, parsed);
  none = cookie_new_result (source, "copied", &error);
  g_assert_null (none);
  assert_cookie_error (error, "cookie: expected a destination cookie, got a source cookie");
}

/* No features, no backing, a destination that accepted nothing. */
static void
test_round_trip_minimal (void)
{
  g_autoptr (Cookie) cookie = cookie_new (COOKIE_MODE_MOVE);
  g_autofree char *text = NULL;

  g_ptr_array_add (cookie->disks, cookie_disk_new ("sda", "n", "raw", 512, 0));
  assert_round_trip (cookie);
  cookie->kind = COOKIE_KIND_DESTINATION;
  cookie->dest_host = g_strdup ("h");
  cookie->nbd_unix = g_strdup ("/s");
  cookie_find_disk (cookie, "sda")->export_name = g_strdup ("e");
  cookie_find_disk (cookie, "sda")->target_node = g_strdup ("t");
  assert_round_trip (cookie);
  text = cookie_to_string (cookie);
  g_assert_null (strstr (text, "backing"));
  g_assert_null (strstr (text, "\"target\""));
  g_assert_null (strstr (text, "migrate-uri"));
}

/* A source cookie never carries destination fields, even if the struct has them. */
static void
test_to_string_by_kind (void)
{
  g_autoptr (Cookie) cookie = make_result (12);
  g_autofree char *text = NULL;

  cookie->kind = COOKIE_KIND_SOURCE;
  text = cookie_to_string (cookie);
  g_assert_null (strstr (text, "destination"));
  g_assert_null (strstr (text, "export"));
  g_assert_null (strstr (text, "result"));
}

/* ---- Parsing ------------------------------------------------------------- */

static void
add_future_member (JsonObject *obj)
{
  json_object_set_string_member (obj, "from-the-future", "ignored");
}

static void
test_parse_unknown_keys (void)
{
  g_autoptr (Cookie) cookie = make_result (12);
  g_autofree char *text = cookie_to_string (cookie);
  g_autoptr (JsonNode) root = json_from_string (text, NULL);
  JsonObject *obj = json_node_get_object (root);
  g_autofree char *extended = NULL;
  g_autofree char *again = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (Cookie) parsed = NULL;

  add_future_member (obj);
  add_future_member (json_object_get_object_member (obj, "source"));
  add_future_member (json_object_get_object_member (obj, "destination"));
  add_future_member (json_object_get_object_member (obj, "result"));
  add_future_member (json_array_get_object_element (
                       json_object_get_array_member (obj, "disks"), 1));
  add_future_member (json_array_get_object_element (
                       json_object_get_array_member (obj, "features"), 0));
  extended = json_to_string (root, FALSE);
  parsed = cookie_parse (extended, -1, COOKIE_KIND_RESULT, &error);
  g_assert_no_error (error);
  assert_cookies_equal (cookie, parsed);
  again = cookie_to_string (parsed);
  g_assert_cmpstr (text, ==, again);
}

static void
test_parse_min_kind (void)
{
  g_autoptr (Cookie) result = make_result (12);
  g_autoptr (Cookie) source = make_source ();
  g_autoptr (Cookie) destination = make_destination (TRUE);
  g_autofree char *result_text = cookie_to_string (result);
  g_autofree char *source_text = cookie_to_string (source);
  g_autofree char *destination_text = cookie_to_string (destination);
  g_autoptr (Cookie) parsed = cookie_parse (result_text, -1, COOKIE_KIND_SOURCE, NULL);

  g_assert_nonnull (parsed);
  g_assert_cmpint (parsed->kind, ==, COOKIE_KIND_RESULT);
  g_assert_cmpstr (parsed->status, ==, "completed");
  assert_parse_fails (source_text, COOKIE_KIND_DESTINATION,
                      "cookie: expected a destination cookie, got a source cookie");
  assert_parse_fails (source_text, COOKIE_KIND_RESULT,
                      "cookie: expected a result cookie, got a source cookie");
  assert_parse_fails (destination_text, COOKIE_KIND_RESULT,
                      "cookie: expected a result cookie, got a destination cookie");
}

static void
test_parse_empty (void)
{
  assert_parse_fails ("", COOKIE_KIND_SOURCE, "cookie: the cookie is empty");
  assert_parse_fails (" \n", COOKIE_KIND_SOURCE, "cookie: the cookie is empty");
  assert_parse_fails ("null", COOKIE_KIND_SOURCE,
                      "cookie: the top level must be a JSON object");
}

/* @len bounds the data: it need not be NUL-terminated. */
static void
test_parse_length (void)
{
  g_autoptr (Cookie) source = make_source ();
  g_autofree char *text = cookie_to_string (source);
  g_autofree char *padded = g_strconcat (text, "garbage", NULL);
  g_autoptr (Cookie) parsed = cookie_parse (padded, strlen (text), COOKIE_KIND_SOURCE, NULL);

  g_assert_nonnull (parsed);
  assert_cookies_equal (source, parsed);
}

/* Values from the cookie are escaped so that a message stays on one line. */
static void
test_parse_one_line (void)
{
  assert_parse_fails ("{\"version\": 1, \"kind\": \"so\\nurce\"}", COOKIE_KIND_SOURCE,
                      "cookie: unknown kind 'so\\nurce' (expected source, destination "
                      "or result)");
}

/* ---- Feature negotiation ------------------------------------------------- */

static void
test_features_known (void)
{
  g_autoptr (Cookie) cookie = make_source ();
  const char *expected[] = { "sparse", "write-blocking", NULL };

  cookie_add_feature (cookie, "sparse", FALSE);
  g_assert_true (cookie_accept_features (cookie, NULL));
  assert_strv_equal (cookie->accepted, (char **) expected);
  g_assert_true (cookie_has_accepted (cookie, "sparse"));
  g_assert_true (cookie_has_accepted (cookie, "write-blocking"));
}

static void
test_features_unknown_optional (void)
{
  g_autoptr (Cookie) cookie = cookie_new (COOKIE_MODE_LIVE);
  g_autoptr (GError) error = NULL;

  cookie_add_feature (cookie, "zstd", FALSE);
  cookie_add_feature (cookie, "sparse", FALSE);
  g_assert_true (cookie_accept_features (cookie, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (g_strv_length (cookie->accepted), ==, 1);
  g_assert_true (cookie_has_accepted (cookie, "sparse"));
  g_assert_false (cookie_has_accepted (cookie, "zstd"));
  g_assert_false (cookie_has_accepted (cookie, "write-blocking"));
}

static void
test_features_unknown_mandatory (void)
{
  g_autoptr (Cookie) cookie = cookie_new (COOKIE_MODE_LIVE);
  g_autoptr (GError) error = NULL;

  cookie_add_feature (cookie, "sparse", FALSE);
  cookie_add_feature (cookie, "dirty-bitmaps", TRUE);
  g_assert_false (cookie_accept_features (cookie, &error));
  assert_cookie_error (error, "cookie: the source requires feature 'dirty-bitmaps', "
                       "which this blkmig does not support");
  g_assert_null (cookie->accepted);
  g_assert_false (cookie_has_accepted (cookie, "sparse"));
}

static void
test_features_none (void)
{
  g_autoptr (Cookie) cookie = cookie_new (COOKIE_MODE_LIVE);

  g_assert_true (cookie_accept_features (cookie, NULL));
  g_assert_nonnull (cookie->accepted);
  g_assert_null (cookie->accepted[0]);
}

/* ---- Checking the destination's answer ----------------------------------- */

static void
assert_reply_fails (const Cookie *offer, const Cookie *reply, const char *expected)
{
  g_autoptr (GError) error = NULL;

  g_assert_false (cookie_check_reply (offer, reply, &error));
  assert_cookie_error (error, expected);
}

static void
test_reply_ok (void)
{
  g_autoptr (Cookie) offer = make_source ();
  g_autoptr (Cookie) reply = make_destination (TRUE);
  g_autoptr (Cookie) result = make_result (12);
  g_autoptr (GError) error = NULL;

  g_assert_true (cookie_check_reply (offer, reply, &error));
  g_assert_no_error (error);
  g_assert_true (cookie_check_reply (offer, result, &error));
  g_assert_no_error (error);
}

static void
test_reply_id (void)
{
  g_autoptr (Cookie) offer = make_source ();
  g_autoptr (Cookie) reply = make_destination (FALSE);

  g_free (reply->id);
  reply->id = g_strdup (OTHER_ID);
  assert_reply_fails (offer, reply, "cookie: destination answered migration "
                      OTHER_ID ", expected " TEST_ID);
}

static void
test_reply_kind (void)
{
  g_autoptr (Cookie) offer = make_source ();
  g_autoptr (Cookie) reply = make_source ();

  assert_reply_fails (offer, reply,
                      "cookie: expected a destination cookie, got a source cookie");
}

static void
test_reply_mode (void)
{
  g_autoptr (Cookie) offer = make_source ();
  g_autoptr (Cookie) reply = make_destination (FALSE);

  reply->mode = COOKIE_MODE_COPY;
  assert_reply_fails (offer, reply,
                      "cookie: destination answered for a copy migration, expected live");
}

static void
test_reply_missing_disk (void)
{
  g_autoptr (Cookie) offer = make_source ();
  g_autoptr (Cookie) reply = make_destination (FALSE);

  g_ptr_array_remove_index (reply->disks, 1);
  assert_reply_fails (offer, reply, "cookie: destination did not answer for disk vdb");
}

static void
test_reply_extra_disk (void)
{
  g_autoptr (Cookie) offer = make_source ();
  g_autoptr (Cookie) reply = make_destination (FALSE);

  g_ptr_array_add (reply->disks, cookie_disk_new ("vdc", "n", "raw", GIB, 0));
  assert_reply_fails (offer, reply,
                      "cookie: destination answered for disk vdc, which was not offered");
}

static void
test_reply_size (void)
{
  g_autoptr (Cookie) offer = make_source ();
  g_autoptr (Cookie) reply = make_destination (FALSE);

  cookie_find_disk (reply, "vda")->virtual_size = 2 * GIB;
  assert_reply_fails (offer, reply, "cookie: disk vda is 4294967296 bytes on the source "
                      "but 2147483648 bytes on the destination");
}

/* The source mirrors as it offered: an answer that turns full into top (the source
 * would skip the base) or top into full is refused. */
static void
test_reply_sync (void)
{
  g_autoptr (Cookie) offer = make_source ();
  g_autoptr (Cookie) reply = make_destination (FALSE);

  cookie_find_disk (reply, "vda")->sync = g_strdup ("top");
  assert_reply_fails (offer, reply, "cookie: disk vda: the destination answered sync top, "
                      "the offer said full");
  cookie_find_disk (offer, "vda")->sync = g_strdup ("top");
  g_clear_pointer (&cookie_find_disk (reply, "vda")->sync, g_free);
  assert_reply_fails (offer, reply, "cookie: disk vda: the destination answered sync full, "
                      "the offer said top");
}

static void
test_reply_mandatory (void)
{
  g_autoptr (Cookie) offer = make_source ();
  g_autoptr (Cookie) reply = make_destination (FALSE);
  char *only_sparse[] = { (char *) "sparse", NULL };

  g_strfreev (reply->accepted);
  reply->accepted = g_strdupv (only_sparse);
  assert_reply_fails (offer, reply,
                      "cookie: destination did not accept mandatory feature "
                      "'write-blocking'");
}

/* ---- Files --------------------------------------------------------------- */

static void
test_save_load (void)
{
  g_autofree char *dir = g_dir_make_tmp ("test-cookie-XXXXXX", NULL);
  g_autofree char *path = g_build_filename (dir, "c.json", NULL);
  g_autoptr (Cookie) cookie = make_result (7);
  g_autofree char *text = cookie_to_string (cookie);
  g_autofree char *contents = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (Cookie) loaded = NULL;

  g_assert_nonnull (dir);
  g_assert_true (cookie_save (cookie, path, &error));
  g_assert_no_error (error);
  g_assert_true (g_file_get_contents (path, &contents, NULL, NULL));
  g_assert_cmpstr (contents, ==, text);
  loaded = cookie_load (path, COOKIE_KIND_RESULT, &error);
  g_assert_no_error (error);
  assert_cookies_equal (cookie, loaded);
  g_assert_cmpint (g_unlink (path), ==, 0);
  g_assert_cmpint (g_rmdir (dir), ==, 0);
}

/* Problems in a loaded file name the file. */
static void
test_load_errors (void)
{
  g_autofree char *dir = g_dir_make_tmp ("test-cookie-XXXXXX", NULL);
  g_autofree char *path = g_build_filename (dir, "c.json", NULL);
  g_autofree char *expected = g_strdup_printf ("cookie: %s: the top level must be a JSON "
                                               "object", path);
  g_autoptr (GError) error = NULL;

  g_assert_null (cookie_load (path, COOKIE_KIND_SOURCE, &error));
  assert_cookie_error (error, NULL);
  g_clear_error (&error);
  g_assert_true (g_file_set_contents (path, "[]", -1, NULL));
  g_assert_null (cookie_load (path, COOKIE_KIND_SOURCE, &error));
  assert_cookie_error (error, expected);
  g_assert_cmpint (g_unlink (path), ==, 0);
  g_assert_cmpint (g_rmdir (dir), ==, 0);
}

static void
test_save_error (void)
{
  g_autoptr (Cookie) cookie = make_source ();
  g_autoptr (GError) error = NULL;

  g_assert_false (cookie_save (cookie, "/nonexistent-blkmig-dir/c.json", &error));
  assert_cookie_error (error, NULL);
}

/* ---- Golden files -------------------------------------------------------- */

static gboolean
regenerating (void)
{
  return g_strcmp0 (g_getenv ("BLKMIG_REGENERATE"), "1") == 0;
}

static char *
golden_path (const char *name)
{
  return g_test_build_filename (G_TEST_DIST, "golden", "cookie", name, NULL);
}

static char *
golden_read (const char *name)
{
  g_autofree char *path = golden_path (name);
  g_autoptr (GError) error = NULL;
  char *contents = NULL;

  g_file_get_contents (path, &contents, NULL, &error);
  g_assert_no_error (error);
  return contents;
}

static void
golden_write (const char *name, const char *contents)
{
  g_autofree char *path = golden_path (name);
  g_autoptr (GError) error = NULL;

  g_file_set_contents (path, contents, -1, &error);
  g_assert_no_error (error);
  g_test_message ("rewrote %s", path);
}

/* NAME.err for NAME.json. */
static char *
golden_err_name (const char *name)
{
  g_autofree char *base = g_strndup (name, strlen (name) - strlen (".json"));

  return g_strconcat (base, ".err", NULL);
}

/* expect-destination-*.json and expect-result-*.json are parsed with that min_kind. */
static CookieKind
golden_min_kind (const char *name)
{
  if (g_str_has_prefix (name, "expect-result-"))
    return COOKIE_KIND_RESULT;
  if (g_str_has_prefix (name, "expect-destination-"))
    return COOKIE_KIND_DESTINATION;
  return COOKIE_KIND_SOURCE;
}

/* A valid file must parse and serialise back byte for byte. */
static void
test_golden_valid (gconstpointer data)
{
  const char *name = data;
  g_autofree char *text = golden_read (name);
  g_autoptr (GError) error = NULL;
  g_autoptr (Cookie) cookie = cookie_parse (text, -1, golden_min_kind (name), &error);
  g_autofree char *out = NULL;

  g_assert_no_error (error);
  out = cookie_to_string (cookie);
  if (regenerating () && strcmp (text, out) != 0)
    golden_write (name, out);
  else
    g_assert_cmpstr (out, ==, text);
}

/* An invalid file must be refused with exactly the message in its .err file. */
static void
test_golden_invalid (gconstpointer data)
{
  const char *name = data;
  g_autofree char *text = golden_read (name);
  g_autofree char *err_name = golden_err_name (name);
  g_autofree char *expected = NULL;
  g_autofree char *actual = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (Cookie) cookie = NULL;

  cookie = cookie_parse (text, -1, golden_min_kind (name), &error);
  g_assert_null (cookie);
  assert_cookie_error (error, NULL);
  actual = g_strconcat (error->message, "\n", NULL);
  expected = golden_read (err_name);
  if (regenerating () && strcmp (expected, actual) != 0)
    golden_write (err_name, actual);
  else
    g_assert_cmpstr (actual, ==, expected);
}

static guint golden_valid_count;
static guint golden_invalid_count;

static void
test_golden_found (void)
{
  g_assert_cmpuint (golden_valid_count, >=, 4);
  g_assert_cmpuint (golden_invalid_count, >=, 1);
}

/* Registers one case per NAME.json; a NAME.err beside it makes it an invalid case. */
static void
add_golden_case (const char *name)
{
  g_autofree char *base = g_strndup (name, strlen (name) - strlen (".json"));
  g_autofree char *err_name = golden_err_name (name);
  g_autofree char *err_path = golden_path (err_name);
  gboolean invalid = g_file_test (err_path, G_FILE_TEST_EXISTS);
  g_autofree char *test_path = g_strdup_printf ("/cookie/golden/%s/%s",
                                                invalid ? "invalid" : "valid", base);

  g_test_add_data_func_full (test_path, g_strdup (name),
                             invalid ? test_golden_invalid : test_golden_valid, g_free);
  if (invalid)
    golden_invalid_count++;
  else
    golden_valid_count++;
}

static int
compare_names (gconstpointer a, gconstpointer b)
{
  return strcmp (*(const char *const *) a, *(const char *const *) b);
}

static void
add_golden_cases (void)
{
  g_autofree char *dir_path = golden_path ("");
  g_autoptr (GDir) dir = g_dir_open (dir_path, 0, NULL);
  g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
  const char *name;

  while (dir != NULL && (name = g_dir_read_name (dir)) != NULL)
    if (g_str_has_suffix (name, ".json"))
      g_ptr_array_add (names, g_strdup (name));
  g_ptr_array_sort (names, compare_names);
  for (guint i = 0; i < names->len; i++)
    add_golden_case (g_ptr_array_index (names, i));
  g_test_add_func ("/cookie/golden/found", test_golden_found);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/cookie/new", test_new);
  g_test_add_func ("/cookie/free-null", test_free_null);
  g_test_add_func ("/cookie/modes", test_modes);
  g_test_add_func ("/cookie/find-disk", test_find_disk);
  g_test_add_func ("/cookie/copy", test_copy);
  g_test_add_func ("/cookie/copy-as", test_copy_as);
  g_test_add_func ("/cookie/new-reply", test_new_reply);
  g_test_add_func ("/cookie/new-result", test_new_result);
  g_test_add_func ("/cookie/round-trip/source", test_round_trip_source);
  g_test_add_func ("/cookie/round-trip/destination", test_round_trip_destination);
  g_test_add_func ("/cookie/round-trip/result", test_round_trip_result);
  g_test_add_func ("/cookie/round-trip/minimal", test_round_trip_minimal);
  g_test_add_func ("/cookie/to-string/by-kind", test_to_string_by_kind);
  g_test_add_func ("/cookie/parse/unknown-keys", test_parse_unknown_keys);
  g_test_add_func ("/cookie/parse/min-kind", test_parse_min_kind);
  g_test_add_func ("/cookie/parse/empty", test_parse_empty);
  g_test_add_func ("/cookie/parse/length", test_parse_length);
  g_test_add_func ("/cookie/parse/one-line", test_parse_one_line);
  g_test_add_func ("/cookie/features/known", test_features_known);
  g_test_add_func ("/cookie/features/unknown-optional", test_features_unknown_optional);
  g_test_add_func ("/cookie/features/unknown-mandatory", test_features_unknown_mandatory);
  g_test_add_func ("/cookie/features/none", test_features_none);
  g_test_add_func ("/cookie/check-reply/ok", test_reply_ok);
  g_test_add_func ("/cookie/check-reply/id", test_reply_id);
  g_test_add_func ("/cookie/check-reply/kind", test_reply_kind);
  g_test_add_func ("/cookie/check-reply/mode", test_reply_mode);
  g_test_add_func ("/cookie/check-reply/missing-disk", test_reply_missing_disk);
  g_test_add_func ("/cookie/check-reply/extra-disk", test_reply_extra_disk);
  g_test_add_func ("/cookie/check-reply/size", test_reply_size);
  g_test_add_func ("/cookie/check-reply/sync", test_reply_sync);
  g_test_add_func ("/cookie/check-reply/mandatory", test_reply_mandatory);
  g_test_add_func ("/cookie/file/save-load", test_save_load);
  g_test_add_func ("/cookie/file/load-errors", test_load_errors);
  g_test_add_func ("/cookie/file/save-error", test_save_error);
  add_golden_cases ();

  return g_test_run ();
}
