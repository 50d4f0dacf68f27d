/* Unit tests of the migration steps (src/session*.c) against the scripted fake QEMU. */
#include "src/session.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <sys/stat.h>

#include "common/error.h"
#include "tests/unit/fake-qemu.h"

#define SIZE "1048576"
#define DEST_NODES \
  "[{\"node-name\":\"vda\",\"drv\":\"qcow2\",\"file\":\"/img/vda.qcow2\",\"ro\":false," \
  "\"image\":{\"virtual-size\":" SIZE ",\"filename\":\"/img/vda.qcow2\",\"format\":\"qcow2\"}}]"

static char *state_dir;        /* BLKMIG_STATE_DIR of this program, 0700 */

typedef struct {
  FakeQemu *fake;
  QmpClient *qmp;
  Cookie *offer;               /* a copy-mode offer of one disk, vda */
  char *id8;                   /* the first 8 hex digits of its id */
  Journal *journal;
  char *dir;                   /* a private directory for sockets and targets */
  char *listen;                /* the NBD socket prepare binds */
} Fixture;

/* Replaces every "ID8" in @pattern with the migration's id prefix. */
static char *
ids (Fixture *fx, const char *pattern)
{
  g_auto(GStrv) parts = g_strsplit (pattern, "ID8", -1);

  return g_strjoinv (fx->id8, parts);
}

/* fake_qemu_expect with "ID8" in the arguments and reply replaced. */
static void
expect (Fixture *fx, const char *command, const char *args, const char *ret)
{
  g_autofree char *a = args != NULL ? ids (fx, args) : NULL;
  g_autofree char *r = ids (fx, ret);

  fake_qemu_expect (fx->fake, command, a, r);
}

static void
expect_error (Fixture *fx, const char *command, const char *args, const char *desc)
{
  g_autofree char *a = args != NULL ? ids (fx, args) : NULL;

  fake_qemu_expect_error (fx->fake, command, a, "GenericError", desc);
}

static void
setup (Fixture *fx, gconstpointer data)
{
  CookieMode mode = GPOINTER_TO_INT (data);

  fx->fake = fake_qemu_new ();
  fx->offer = cookie_new (mode);
  cookie_add_feature (fx->offer, "sparse", FALSE);
  g_ptr_array_add (fx->offer->disks,
                   cookie_disk_new ("vda", "node0", "qcow2", 1048576, 4096));
  fx->id8 = g_strndup (fx->offer->id, 8);
  fx->journal = journal_new (fx->offer->id, "prepare");
  fx->dir = g_dir_make_tmp ("test-session-XXXXXX", NULL);
  g_assert_nonnull (fx->dir);
  fx->listen = g_build_filename (fx->dir, "nbd.sock", NULL);
}

static void
teardown (Fixture *fx, gconstpointer data)
{
  if (fx->qmp != NULL)
    qmp_client_close (fx->qmp);
  g_clear_object (&fx->qmp);
  if (fx->fake != NULL)
    fake_qemu_verify (fx->fake);
  g_clear_pointer (&fx->fake, fake_qemu_free);
  journal_remove (fx->journal);
  journal_free (fx->journal);
  cookie_free (fx->offer);
  g_free (fx->id8);
  g_unlink (fx->listen);
  g_assert_cmpint (g_rmdir (fx->dir), ==, 0);   /* nothing left behind */
  g_free (fx->listen);
  g_free (fx->dir);
}

static QmpClient *
connect (Fixture *fx, const char *label)
{
  if (fx->qmp == NULL)
    fx->qmp = fake_qemu_connect (fx->fake, label);
  return fx->qmp;
}

/* The step the journal of this migration's prepare holds, or NULL without one. */
static char *
journal_step (Fixture *fx, const char *command)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(Journal) j = journal_find (fx->offer->id, command, &error);

  g_assert_no_error (error);
  return j != NULL ? g_strdup (j->step) : NULL;
}

static gboolean
journal_lists (Fixture *fx, const char *command, const char *path)
{
  g_autoptr(Journal) j = journal_find (fx->offer->id, command, NULL);

  g_assert_nonnull (j);
  return g_ptr_array_find_with_equal_func (j->created, path, g_str_equal, NULL);
}

static gboolean
exists (const char *path)
{
  struct stat st;

  return lstat (path, &st) == 0;
}

/* ---- prepare -------------------------------------------------------------- */

/* The start of every prepare of vda onto the destination's node vda. */
static void
script_prepare_start (Fixture *fx, const char *nodes)
{
  expect (fx, "query-block", NULL, "[]");
  expect (fx, "query-named-block-nodes", "{\"flat\":true}", nodes);
  expect (fx, "getfd", "{\"fdname\":\"blkmig-nbd-listen\"}", "{}");
  expect (fx, "nbd-server-start",
          "{\"addr\":{\"type\":\"fd\",\"data\":{\"str\":\"blkmig-nbd-listen\"}}}", "{}");
}

/* What prepare's rollback sends once the server started (no export of ours left). */
static void
script_prepare_rollback (Fixture *fx)
{
  expect (fx, "query-block-exports", NULL, "[]");
  expect (fx, "nbd-server-stop", NULL, "{}");
  expect (fx, "query-named-block-nodes", "{\"flat\":true}", DEST_NODES);
  expect (fx, "query-migrate-parameters", NULL, "{\"tls-creds\":\"\",\"tls-hostname\":\"\"}");
  expect_error (fx, "object-del", "{\"id\":\"blkmigID8t0\"}", "object 'blkmigID8t0' not found");
  expect_error (fx, "object-del", "{\"id\":\"blkmigID8z0\"}", "object 'blkmigID8z0' not found");
  expect_error (fx, "object-del", "{\"id\":\"blkmigID8c0\"}", "object 'blkmigID8c0' not found");
}

static Cookie *
prepare (Fixture *fx, const char *create_dir, GError **error)
{
  PrepareOptions opts = {
    .listen = { .unix_path = fx->listen },
    .create_dir = (char *) create_dir,
    .journal = fx->journal,
  };

  return session_prepare (connect (fx, "dst"), fx->offer, &opts, NULL, error);
}

static void
test_prepare (Fixture *fx, gconstpointer data)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(Cookie) reply = NULL;
  g_autofree char *export = ids (fx, "blkmig-ID8-0");
  g_autofree char *step = NULL;
  CookieDisk *disk;

  script_prepare_start (fx, DEST_NODES);
  expect (fx, "block-export-add", "{\"type\":\"nbd\",\"id\":\"blkmig-ID8-0\",\"node-name\":\"vda\","
          "\"name\":\"blkmig-ID8-0\",\"writable\":true}", "{}");
  reply = prepare (fx, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpint (reply->kind, ==, COOKIE_KIND_DESTINATION);
  g_assert_cmpstr (reply->id, ==, fx->offer->id);
  g_assert_cmpstr (reply->nbd_unix, ==, fx->listen);
  disk = reply->disks->pdata[0];
  g_assert_cmpstr (disk->export_name, ==, export);
  g_assert_cmpstr (disk->target_node, ==, "vda");
  g_assert_cmpstr (disk->target_path, ==, "/img/vda.qcow2");
  g_assert_false (disk->created);
  /* The journal on disk says "prepare"; the socket, which listens, is listed for
   * the caller's next step ("prepared"). */
  step = journal_step (fx, "prepare");
  g_assert_cmpstr (step, ==, "prepare");
  g_assert_true (g_ptr_array_find_with_equal_func (fx->journal->created, fx->listen,
                                                   g_str_equal, NULL));
  g_assert_true (exists (fx->listen));
}

static void
test_prepare_export_refused (Fixture *fx, gconstpointer data)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(Cookie) reply = NULL;

  script_prepare_start (fx, DEST_NODES);
  expect_error (fx, "block-export-add", "*", "Block node is read-only");
  script_prepare_rollback (fx);
  reply = prepare (fx, NULL, &error);
  g_assert_null (reply);
  g_assert_error (error, QMP_ERROR, QMP_ERROR_GENERIC);
  g_assert_cmpstr (error->message, ==,
                   "prepare: vda (an incoming QEMU 7.2 cannot export a -drive disk: give the "
                   "destination's disks with -blockdev): dst: block-export-add: Block node is "
                   "read-only");
  g_assert_false (exists (fx->listen));    /* the rollback removed the socket */
}

static void
test_prepare_target_add_fails (Fixture *fx, gconstpointer data)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(Cookie) reply = NULL;
  g_autofree char *target = g_build_filename (fx->dir, "vda.qcow2", NULL);
  g_autofree char *args = g_strdup_printf ("{\"driver\":\"qcow2\",\"node-name\":\"blkmigID8d0\","
                                           "\"file\":{\"driver\":\"file\",\"filename\":\"%s\"}}",
                                           target);

  script_prepare_start (fx, "[]");
  expect_error (fx, "blockdev-add", args, "Could not open the image");
  script_prepare_rollback (fx);
  reply = prepare (fx, fx->dir, &error);
  g_assert_null (reply);
  g_assert_cmpstr (error->message, ==, "prepare: dst: blockdev-add: Could not open the image");
  /* The target was made (qemu-img), listed, and removed again with the socket. */
  g_assert_true (journal_lists (fx, "prepare", target));
  g_assert_false (exists (target));
  g_assert_false (exists (fx->listen));
}

static void
test_prepare_qmp_closes (Fixture *fx, gconstpointer data)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(Cookie) reply = NULL;

  script_prepare_start (fx, DEST_NODES);
  fake_qemu_expect_close (fx->fake, "block-export-add", "*");
  reply = prepare (fx, NULL, &error);
  g_assert_null (reply);
  g_assert_error (error, QMP_ERROR, QMP_ERROR_CLOSED);
  g_assert_cmpstr (error->message, ==,
                   "prepare: vda: dst: block-export-add: QMP connection closed by QEMU");
  g_assert_false (exists (fx->listen));
}

static void
test_prepare_no_disk (Fixture *fx, gconstpointer data)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(Cookie) reply = NULL;

  /* Refused before anything starts: no server, so only the nodes and TLS sweep. */
  expect (fx, "query-block", NULL, "[]");
  expect (fx, "query-named-block-nodes", "{\"flat\":true}", "[]");
  expect (fx, "query-block-exports", NULL, "[]");
  expect (fx, "query-named-block-nodes", "{\"flat\":true}", "[]");
  expect (fx, "query-migrate-parameters", NULL, "{}");
  fake_qemu_expect (fx->fake, "object-del", "*", "{}");
  fake_qemu_expect (fx->fake, "object-del", "*", "{}");
  fake_qemu_expect (fx->fake, "object-del", "*", "{}");
  reply = prepare (fx, NULL, &error);
  g_assert_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK);
  g_assert_cmpstr (error->message, ==, "prepare: vda: the destination has no disk of that "
                                       "name and no --create-dir was given");
  g_assert_null (journal_step (fx, "prepare"));
}

/* ---- finish and abort on the destination ---------------------------------- */

/* A destination cookie as prepare returns it, for finish and abort. */
static Cookie *
dest_cookie (Fixture *fx)
{
  g_autofree char *text = cookie_to_string (fx->offer);
  Cookie *c = cookie_parse (text, -1, COOKIE_KIND_SOURCE, NULL);
  CookieDisk *disk = c->disks->pdata[0];

  c->kind = COOKIE_KIND_DESTINATION;
  c->nbd_unix = g_strdup (fx->listen);
  disk->export_name = ids (fx, "blkmig-ID8-0");
  disk->target_node = g_strdup ("vda");
  return c;
}

static void
script_remove_exports (Fixture *fx, const char *mode)
{
  g_autofree char *args = g_strdup_printf ("{\"id\":\"blkmig-ID8-0\",\"mode\":\"%s\"}", mode);

  expect (fx, "block-export-del", args, "{}");
  fake_qemu_event (fx->fake, "BLOCK_EXPORT_DELETED", ids (fx, "{\"id\":\"blkmig-ID8-0\"}"));
  expect (fx, "nbd-server-stop", NULL, "{}");
}

static void
script_del_tls (Fixture *fx)
{
  expect (fx, "query-migrate-parameters", NULL, "{\"tls-creds\":\"blkmigID8t0\"}");
  expect (fx, "migrate-set-parameters", "{\"tls-creds\":null,\"tls-hostname\":null}", "{}");
  expect (fx, "object-del", "{\"id\":\"blkmigID8t0\"}", "{}");
  expect_error (fx, "object-del", "{\"id\":\"blkmigID8z0\"}", "object 'blkmigID8z0' not found");
  expect_error (fx, "object-del", "{\"id\":\"blkmigID8c0\"}", "object 'blkmigID8c0' not found");
}

static void
test_finish_copy (Fixture *fx, gconstpointer data)
{
  g_autoptr(Cookie) result = dest_cookie (fx);
  g_autoptr(GError) error = NULL;

  result->kind = COOKIE_KIND_RESULT;
  result->status = g_strdup ("copied");
  expect (fx, "query-block-exports", NULL,
          "[{\"id\":\"other\",\"type\":\"nbd\",\"node-name\":\"x\",\"shutting-down\":false},"
          "{\"id\":\"blkmig-ID8-0\",\"type\":\"nbd\",\"node-name\":\"vda\",\"shutting-down\":false}]");
  script_remove_exports (fx, "safe");
  script_del_tls (fx);
  expect (fx, "cont", NULL, "{}");
  g_assert_true (session_finish (connect (fx, "dst"), result, TRUE, NULL, &error));
  g_assert_no_error (error);
}

static void
test_finish_live_failed (Fixture *fx, gconstpointer data)
{
  g_autoptr(Cookie) result = dest_cookie (fx);
  g_autoptr(GError) error = NULL;

  result->kind = COOKIE_KIND_RESULT;
  result->mode = COOKIE_MODE_LIVE;
  result->status = g_strdup ("completed");
  expect (fx, "query-migrate", NULL, "{\"status\":\"active\"}");
  fake_qemu_event (fx->fake, "MIGRATION", "{\"status\":\"failed\"}");
  g_assert_false (session_finish (connect (fx, "dst"), result, FALSE, NULL, &error));
  g_assert_error (error, BLKMIG_ERROR, BLKMIG_ERROR_MIGRATION);
  g_assert_cmpstr (error->message, ==, "finish: the incoming migration on the destination failed");
}

static void
test_abort_dest (Fixture *fx, gconstpointer data)
{
  g_autoptr(Cookie) cookie = dest_cookie (fx);

  /* Only what carries the id goes: not the export "other", not the node "vda". */
  expect (fx, "query-named-block-nodes", "{\"flat\":true}", DEST_NODES);
  expect (fx, "query-block-jobs", NULL, "[]");
  expect (fx, "query-block-exports", NULL,
          "[{\"id\":\"other\",\"type\":\"nbd\",\"node-name\":\"x\",\"shutting-down\":false},"
          "{\"id\":\"blkmig-ID8-0\",\"type\":\"nbd\",\"node-name\":\"blkmigID8d0\","
          "\"shutting-down\":false}]");
  script_remove_exports (fx, "hard");
  expect (fx, "query-named-block-nodes", "{\"flat\":true}",
          "[{\"node-name\":\"vda\",\"drv\":\"qcow2\"},{\"node-name\":\"blkmigID8d0\","
          "\"drv\":\"qcow2\"}]");
  expect (fx, "blockdev-del", "{\"node-name\":\"blkmigID8d0\"}", "{}");
  script_del_tls (fx);
  expect (fx, "query-migrate", NULL, "{\"status\":\"active\"}");
  expect (fx, "migrate_cancel", NULL, "{}");
  session_abort (connect (fx, "dst"), cookie);
}

int
main (int argc, char **argv)
{
  int ret;

  signal (SIGPIPE, SIG_IGN);
  g_test_init (&argc, &argv, NULL);
  state_dir = g_dir_make_tmp ("test-session-state-XXXXXX", NULL);
  g_assert_nonnull (state_dir);
  g_assert_cmpint (g_chmod (state_dir, 0700), ==, 0);
  g_setenv ("BLKMIG_STATE_DIR", state_dir, TRUE);
#define ADD(path, mode, func) \
  g_test_add ("/session/" path, Fixture, GINT_TO_POINTER (mode), setup, func, teardown)
  ADD ("prepare/ok", COOKIE_MODE_COPY, test_prepare);
  ADD ("prepare/export-refused", COOKIE_MODE_COPY, test_prepare_export_refused);
  ADD ("prepare/target-add-fails", COOKIE_MODE_COPY, test_prepare_target_add_fails);
  ADD ("prepare/qmp-closes", COOKIE_MODE_COPY, test_prepare_qmp_closes);
  ADD ("prepare/no-disk", COOKIE_MODE_COPY, test_prepare_no_disk);
  ADD ("finish/copy", COOKIE_MODE_COPY, test_finish_copy);
  ADD ("finish/live-failed", COOKIE_MODE_COPY, test_finish_live_failed);
  ADD ("abort/dest", COOKIE_MODE_COPY, test_abort_dest);
  ret = g_test_run ();
  g_rmdir (state_dir);
  g_free (state_dir);
  return ret;
}
