/* Unit tests of the migration steps (src/session*.c) against the scripted fake QEMU. */
#include "src/session.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <sys/stat.h>

#include "common/error.h"
#include "src/source-copy-base.h"
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
  char *perform_step;          /* the step perform's journal ended at */
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
  g_free (fx->perform_step);
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
  return j != NULL ? g_strdup (journal_step_to_string (j->step)) : NULL;
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

/* qom-get of the machine type (begin records it, prepare compares it). */
#define MACHINE_ARGS "{\"path\":\"/machine\",\"property\":\"type\"}"

/* nbd-server-start as prepare sends it: handshake-max-seconds where the schema
 * (QEMU 10.0's) has it. */
static const char *
nbd_server_args (void)
{
  if (fake_qemu_schema_has ("nbd-server-start", "handshake-max-seconds"))
    return "{\"addr\":{\"type\":\"fd\",\"data\":{\"str\":\"blkmig-nbd-listen\"}},"
           "\"max-connections\":128,\"handshake-max-seconds\":120}";
  return "{\"addr\":{\"type\":\"fd\",\"data\":{\"str\":\"blkmig-nbd-listen\"}},"
         "\"max-connections\":128}";
}

/* The start of every prepare of vda onto the destination's node vda. */
static void
script_prepare_start (Fixture *fx, const char *nodes)
{
  expect (fx, "query-block", NULL, "[]");
  expect (fx, "query-named-block-nodes", "{\"flat\":true}", nodes);
  expect (fx, "getfd", "{\"fdname\":\"blkmig-nbd-listen\"}", "{}");
  expect (fx, "nbd-server-start", nbd_server_args (), "{}");
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

/* What prepare's rollback sends when it refused before the server started: the
 * sweep of exports, nodes and TLS objects (@nodes: query-named-block-nodes' answer). */
static void
script_refused_sweep (Fixture *fx, const char *nodes)
{
  expect (fx, "query-block-exports", NULL, "[]");
  expect (fx, "query-named-block-nodes", "{\"flat\":true}", nodes);
  expect (fx, "query-migrate-parameters", NULL, "{}");
  fake_qemu_any_order_begin (fx->fake);
  for (guint i = 0; i < 3; i++)
    fake_qemu_expect (fx->fake, "object-del", "*", "{}");
  fake_qemu_any_order_end (fx->fake);
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
                   "prepare: vda (the destination QEMU could not reopen the image for writing: "
                   "a -drive image given by a relative path cannot be reopened once QEMU has "
                   "changed its directory, as -daemonize does; give the destination's images "
                   "by absolute paths): dst: block-export-add: Block node is read-only");
  g_assert_false (exists (fx->listen));    /* the rollback removed the socket */
}

static void
test_prepare_target_add_fails (Fixture *fx, gconstpointer data)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(Cookie) reply = NULL;
  g_autofree char *target = g_build_filename (fx->dir, "vda.qcow2", NULL);
  g_autofree char *args = g_strdup_printf ("{\"driver\":\"qcow2\",\"node-name\":\"blkmigID8d0\","
                                           "\"discard\":\"unmap\",\"file\":{\"driver\":\"file\","
                                           "\"filename\":\"%s\",\"discard\":\"unmap\"}}", target);

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
  script_refused_sweep (fx, "[]");
  reply = prepare (fx, NULL, &error);
  g_assert_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK);
  g_assert_cmpstr (error->message, ==, "prepare: vda: the destination has no disk of that "
                                       "name and no --create-dir was given");
  g_assert_null (journal_step (fx, "prepare"));
}

static void
test_prepare_live (Fixture *fx, gconstpointer data)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(Cookie) reply = NULL;
  g_autofree char *uri = g_strdup_printf ("unix:%s/mig.sock", fx->dir);
  g_autofree char *incoming = g_strdup_printf ("{\"uri\":\"%s\"}", uri);
  PrepareOptions opts = {
    .listen = { .unix_path = fx->listen },
    .incoming_uri = uri,
    .journal = fx->journal,
  };

  fx->offer->machine = g_strdup ("pc-i440fx-7.2");
  expect (fx, "query-block", NULL, "[]");
  expect (fx, "query-named-block-nodes", "{\"flat\":true}", DEST_NODES);
  expect (fx, "query-status", NULL, "{\"status\":\"inmigrate\",\"running\":false}");
  expect (fx, "qom-get", MACHINE_ARGS, "\"pc-i440fx-7.2-machine\"");
  expect (fx, "getfd", "{\"fdname\":\"blkmig-nbd-listen\"}", "{}");
  expect (fx, "nbd-server-start", nbd_server_args (), "{}");
  expect (fx, "block-export-add", "{\"type\":\"nbd\",\"id\":\"blkmig-ID8-0\",\"node-name\":\"vda\","
          "\"name\":\"blkmig-ID8-0\",\"writable\":true}", "{}");
  expect (fx, "migrate-set-capabilities",
          "{\"capabilities\":[{\"capability\":\"events\",\"state\":true},"
          "{\"capability\":\"late-block-activate\",\"state\":true}]}", "{}");
  expect (fx, "migrate-incoming", incoming, "{}");
  reply = session_prepare (connect (fx, "dst"), fx->offer, &opts, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (reply->migrate_uri, ==, uri);
  /* the memory stream's socket is listed for removal too */
  g_assert_true (g_ptr_array_find_with_equal_func (fx->journal->created, uri + 5,
                                                   g_str_equal, NULL));
}

/* copy-base into a running disk needs blockdev-reopen: a destination QEMU without
 * it is refused in prepare's checks, naming the command, before anything is made. */
static void
test_prepare_copy_base_cannot (Fixture *fx, gconstpointer data)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(Cookie) reply = NULL;
  g_autofree char *uri = g_strdup_printf ("unix:%s/mig.sock", fx->dir);
  CookieDisk *disk = fx->offer->disks->pdata[0];
  PrepareOptions opts = {
    .listen = { .unix_path = fx->listen }, .incoming_uri = uri, .journal = fx->journal,
  };

  disk->sync = g_strdup ("copy-base");
  disk->chain = g_ptr_array_new_with_free_func ((GDestroyNotify) cookie_layer_free);
  g_ptr_array_add (disk->chain, cookie_layer_new ("base.qcow2", "qcow2", 1048576, 0, NULL));
  cookie_add_feature (fx->offer, "chain-copy-base", TRUE);
  /* a QEMU that lists no blockdev-reopen */
  expect (fx, "query-commands", NULL,
          "[{\"name\":\"query-block\"},{\"name\":\"query-named-block-nodes\"},"
          "{\"name\":\"query-status\"},{\"name\":\"query-block-exports\"},"
          "{\"name\":\"block-export-add\"},{\"name\":\"query-migrate-parameters\"},"
          "{\"name\":\"object-del\"},{\"name\":\"change-backing-file\"},"
          "{\"name\":\"x-debug-query-block-graph\"}]");
  expect (fx, "query-block", NULL, "[]");
  expect (fx, "query-named-block-nodes", "{\"flat\":true}", DEST_NODES);
  expect (fx, "query-status", NULL, "{\"status\":\"inmigrate\",\"running\":false}");
  script_refused_sweep (fx, DEST_NODES);
  reply = session_prepare (connect (fx, "dst"), fx->offer, &opts, NULL, &error);
  g_assert_null (reply);
  g_assert_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE);
  g_assert_true (g_str_has_prefix (error->message, "prepare: vda: --chain copy-base into a "
                                   "running disk needs QMP blockdev-reopen, which the "
                                   "destination's QEMU ("));
  g_assert_cmpuint (fx->journal->created->len, ==, 0);
}

/* Another machine type on the destination (here with a hostile byte in QEMU's
 * answer): refused before anything starts, both types named, the peer's escaped. */
static void
test_prepare_machine_mismatch (Fixture *fx, gconstpointer data)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(Cookie) reply = NULL;
  PrepareOptions opts = {
    .listen = { .unix_path = fx->listen },
    .incoming_uri = (char *) "unix:/nonexistent/mig.sock",
    .journal = fx->journal,
  };

  fx->offer->machine = g_strdup ("pc-i440fx-7.2");
  expect (fx, "query-block", NULL, "[]");
  expect (fx, "query-named-block-nodes", "{\"flat\":true}", DEST_NODES);
  expect (fx, "query-status", NULL, "{\"status\":\"inmigrate\",\"running\":false}");
  expect (fx, "qom-get", MACHINE_ARGS, "\"pc-i440fx-10.0\\u001b-machine\"");
  script_refused_sweep (fx, "[]");
  reply = session_prepare (connect (fx, "dst"), fx->offer, &opts, NULL, &error);
  g_assert_null (reply);
  g_assert_error (error, BLKMIG_ERROR, BLKMIG_ERROR_MIGRATION);
  g_assert_cmpstr (error->message, ==,
                   "prepare: the source runs machine type pc-i440fx-7.2, the destination "
                   "pc-i440fx-10.0\\x1b: a live migration needs the same one on both sides "
                   "(QEMU would refuse the stream after the disks are copied); start the "
                   "destination with -machine pc-i440fx-7.2");
  g_assert_cmpuint (fake_qemu_count (fx->fake, "nbd-server-start"), ==, 0);
  g_assert_null (journal_step (fx, "prepare"));
}

static void
test_prepare_not_incoming (Fixture *fx, gconstpointer data)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(Cookie) reply = NULL;
  PrepareOptions opts = {
    .listen = { .unix_path = fx->listen },
    .incoming_uri = (char *) "unix:/nonexistent/mig.sock",
    .journal = fx->journal,
  };

  expect (fx, "query-block", NULL, "[]");
  expect (fx, "query-named-block-nodes", "{\"flat\":true}", DEST_NODES);
  expect (fx, "query-status", NULL, "{\"status\":\"running\\u001b[2J\",\"running\":true}");
  script_refused_sweep (fx, DEST_NODES);
  reply = session_prepare (connect (fx, "dst"), fx->offer, &opts, NULL, &error);
  g_assert_null (reply);
  g_assert_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE);
  g_assert_cmpstr (error->message, ==, "prepare: the destination QEMU is running\\x1b[2J, not "
                                       "waiting for a migration: start it with -incoming defer -S");
  g_assert_null (journal_step (fx, "prepare"));
}

/* A plaintext memory stream off loopback is refused before QEMU is asked for
 * anything but its disks (and it is rolled back as usual). */
static void
test_prepare_incoming_plaintext (Fixture *fx, gconstpointer data)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(Cookie) reply = NULL;
  PrepareOptions opts = {
    .listen = { .unix_path = fx->listen },
    .incoming_uri = (char *) "tcp:192.0.2.20:4444",
    .journal = fx->journal,
  };

  expect (fx, "query-block", NULL, "[]");
  expect (fx, "query-named-block-nodes", "{\"flat\":true}", DEST_NODES);
  fake_qemu_answer_always (fx->fake, "*", NULL);  /* the rollback, whatever it asks */
  reply = session_prepare (connect (fx, "dst"), fx->offer, &opts, NULL, &error);
  g_assert_null (reply);
  g_assert_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE);
  g_assert_cmpstr (error->message, ==, "prepare: refusing a plaintext memory stream over TCP on "
                                       "192.0.2.20: give --tls-creds DIR, or --insecure if the "
                                       "network is trusted");
  g_assert_cmpuint (fake_qemu_count (fx->fake, "migrate-incoming"), ==, 0);
  g_assert_cmpuint (fake_qemu_count (fx->fake, "nbd-server-start"), ==, 0);
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
  c->dest_host = g_strdup ("dst");
  c->nbd_unix = g_strdup (fx->listen);
  disk->export_name = ids (fx, "blkmig-ID8-0");
  disk->target_node = g_strdup ("vda");
  return c;
}

static void
script_remove_exports (Fixture *fx, const char *mode)
{
  g_autofree char *args = g_strdup_printf ("{\"id\":\"blkmig-ID8-0\",\"mode\":\"%s\"}", mode);
  g_autofree char *deleted = ids (fx, "{\"id\":\"blkmig-ID8-0\"}");

  expect (fx, "block-export-del", args, "{}");
  fake_qemu_event (fx->fake, "BLOCK_EXPORT_DELETED", deleted);
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
  g_assert_true (session_finish (connect (fx, "dst"), result, NULL, TRUE, NULL, &error));
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
  g_assert_false (session_finish (connect (fx, "dst"), result, NULL, FALSE, NULL, &error));
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
  /* Only a live cookie's abort cancels the QEMU's memory migration: a copy or a
   * replication leaves one someone else runs alone (the fake fails on any
   * command not scripted). */
  if (GPOINTER_TO_INT (data) == COOKIE_MODE_LIVE)
    {
      expect (fx, "query-migrate", NULL, "{\"status\":\"active\"}");
      expect (fx, "migrate_cancel", NULL, "{}");
    }
  session_abort (connect (fx, "dst"), cookie);
}

/* ---- begin ---------------------------------------------------------------- */

#define SRC_BLOCK \
  "[{\"device\":\"drive0\",\"qdev\":\"/machine/peripheral/vda/virtio-backend\"," \
  "\"inserted\":{\"node-name\":\"node0\",\"file\":\"/img/a.qcow2\",\"ro\":false," \
  "\"drv\":\"qcow2\",\"image\":{\"virtual-size\":" SIZE ",\"actual-size\":4096," \
  "\"filename\":\"/img/a.qcow2\",\"format\":\"qcow2\"}}}," \
  "{\"device\":\"cd0\",\"qdev\":\"/machine/peripheral/cd0\"}]"

static void
test_begin (Fixture *fx, gconstpointer data)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(Cookie) cookie = NULL;
  CookieDisk *disk;

  expect (fx, "query-block", NULL, SRC_BLOCK);
  expect (fx, "qom-get", MACHINE_ARGS, "\"pc-i440fx-7.2-machine\"");
  cookie = session_begin (connect (fx, "src"), COOKIE_MODE_LIVE, NULL, FALSE, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (cookie->machine, ==, "pc-i440fx-7.2");
  g_assert_cmpint (cookie->kind, ==, COOKIE_KIND_SOURCE);
  g_assert_cmpint (cookie->mode, ==, COOKIE_MODE_LIVE);
  g_assert_cmpuint (cookie->disks->len, ==, 1);       /* the empty cd drive is no disk */
  disk = cookie->disks->pdata[0];
  g_assert_cmpstr (disk->name, ==, "vda");
  g_assert_cmpstr (disk->node, ==, "node0");
  g_assert_cmpstr (disk->format, ==, "qcow2");
  g_assert_cmpint (disk->virtual_size, ==, 1048576);
  g_assert_cmpint (disk->allocated, ==, 4096);
}

static void
test_begin_unknown_disk (Fixture *fx, gconstpointer data)
{
  const char *const names[] = { "vd\x1b" "b", NULL };
  g_autoptr(GError) error = NULL;
  g_autoptr(Cookie) cookie = NULL;

  expect (fx, "query-block", NULL, SRC_BLOCK);
  expect (fx, "query-named-block-nodes", "{\"flat\":true}", "[]");
  cookie = session_begin (connect (fx, "src"), COOKIE_MODE_COPY, names, FALSE, NULL, &error);
  g_assert_null (cookie);
  g_assert_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK);
  g_assert_cmpstr (error->message, ==,
                   "begin: the source has no disk named vd\\x1bb (disks: vda)");
}

/* ---- perform ---------------------------------------------------------------- */

#define NBD_ADD \
  "{\"driver\":\"nbd\",\"node-name\":\"blkmigID8n0\",\"server\":{\"type\":\"unix\"," \
  "\"path\":\"%s\"},\"export\":\"blkmig-ID8-0\",\"discard\":\"unmap\"," \
  "\"detect-zeroes\":\"unmap\",\"reconnect-delay\":5}"
#define MIRROR \
  "{\"job-id\":\"blkmig-ID8-0\",\"device\":\"drive0\",\"target\":\"blkmigID8n0\"," \
  "\"sync\":\"full\",\"buf-size\":67108864,\"auto-dismiss\":false}"

static void
job_event (Fixture *fx, const char *status)
{
  g_autofree char *data = g_strdup_printf ("{\"id\":\"blkmig-%s-0\",\"status\":\"%s\"}",
                                           fx->id8, status);

  fake_qemu_event (fx->fake, "JOB_STATUS_CHANGE", data);
}

static void
block_job_event (Fixture *fx, const char *name, const char *error)
{
  g_autofree char *data = g_strdup_printf ("{\"device\":\"blkmig-%s-0\",\"len\":" SIZE ","
                                           "\"offset\":%s,\"speed\":0,\"type\":\"mirror\"%s%s%s}",
                                           fx->id8, error != NULL ? "4096" : SIZE,
                                           error != NULL ? ",\"error\":\"" : "",
                                           error != NULL ? error : "", error != NULL ? "\"" : "");

  fake_qemu_event (fx->fake, name, data);
}

/* The job concludes (with @error or not) and is dismissed. */
static void
script_job_ends (Fixture *fx, const char *error)
{
  job_event (fx, "pending");
  block_job_event (fx, "BLOCK_JOB_COMPLETED", error);
  job_event (fx, "concluded");
  expect (fx, "job-dismiss", "{\"id\":\"blkmig-ID8-0\"}", "{}");
  job_event (fx, "null");
}

/* Up to the NBD client node: the journal says "mirror" by then. */
static void
script_perform_start (Fixture *fx)
{
  g_autofree char *nbd_add = g_strdup_printf (NBD_ADD, fx->listen);

  fake_qemu_answer_always (fx->fake, "query-block-jobs", "\"return\": []");
  expect (fx, "query-block", NULL, SRC_BLOCK);
  expect (fx, "query-named-block-nodes", "{\"flat\":true}", "[]");
  expect (fx, "blockdev-add", nbd_add, "{}");
}

/* blockdev-mirror, and the job runs until READY. */
static void
script_mirror_ready (Fixture *fx)
{
  expect (fx, "blockdev-mirror", MIRROR, "{}");
  job_event (fx, "created");
  job_event (fx, "running");
  block_job_event (fx, "BLOCK_JOB_READY", NULL);
  job_event (fx, "ready");
}

/* READY mirrors end without pivot, and the client node goes. */
static void
script_cancel_at_ready (Fixture *fx)
{
  expect (fx, "block-job-cancel", "{\"device\":\"blkmig-ID8-0\",\"force\":false}", "{}");
  job_event (fx, "waiting");
  script_job_ends (fx, NULL);
  expect (fx, "blockdev-del", "{\"node-name\":\"blkmigID8n0\"}", "{}");
}

/* session_abort on the source of a copy, after a failure with the NBD node
 * @node_there: no query-migrate, a copy does not own the memory migration. */
static void
script_source_abort (Fixture *fx, gboolean node_there)
{
  const char *nodes = node_there ? "[{\"node-name\":\"blkmigID8n0\",\"drv\":\"nbd\"}]" : "[]";

  fake_qemu_answer_always (fx->fake, "query-block-jobs", "\"return\": []");
  expect (fx, "query-named-block-nodes", "{\"flat\":true}", nodes);
  if (node_there)
    expect (fx, "yank", "{\"instances\":[{\"type\":\"block-node\",\"node-name\":\"blkmigID8n0\"}]}",
            "{}");
  expect (fx, "query-block-exports", NULL, "[]");
  expect (fx, "query-named-block-nodes", "{\"flat\":true}", nodes);
  if (node_there)
    expect (fx, "blockdev-del", "{\"node-name\":\"blkmigID8n0\"}", "{}");
  expect (fx, "query-migrate-parameters", NULL, "{}");
  fake_qemu_any_order_begin (fx->fake);
  expect_error (fx, "object-del", "{\"id\":\"blkmigID8t0\"}", "not found");
  expect_error (fx, "object-del", "{\"id\":\"blkmigID8z0\"}", "not found");
  expect_error (fx, "object-del", "{\"id\":\"blkmigID8c0\"}", "not found");
  fake_qemu_any_order_end (fx->fake);
}

static Cookie *
perform (Fixture *fx, CookieMode mode, const char *migrate_uri, GError **error)
{
  g_autoptr(Cookie) dest = dest_cookie (fx);
  SourceOptions opts = {
    .mirror = MIRROR_TUNING_INIT,
    .quiet = TRUE,
    .progress_ms = 1000,
    .journal = journal_new (fx->offer->id, "perform"),
    .local_destination = TRUE,
  };
  Cookie *result;

  dest->mode = mode;
  result = session_perform (connect (fx, "src"), dest, &opts, migrate_uri, FALSE, NULL, error);
  fx->perform_step = journal_step (fx, "perform");
  journal_remove (opts.journal);
  journal_free (opts.journal);
  return result;
}

static void
test_perform_copy (Fixture *fx, gconstpointer data)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(Cookie) result = NULL;

  script_perform_start (fx);
  script_mirror_ready (fx);
  script_cancel_at_ready (fx);
  result = perform (fx, COOKIE_MODE_COPY, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpint (result->kind, ==, COOKIE_KIND_RESULT);
  g_assert_cmpstr (result->status, ==, "copied");
  g_assert_cmpint (result->bytes, ==, 1048576);
  g_assert_cmpstr (fx->perform_step, ==, "copied");
}

static void
test_perform_live (Fixture *fx, gconstpointer data)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(Cookie) result = NULL;
  g_autofree char *uri = g_strdup_printf ("unix:%s/mig.sock", fx->dir);
  g_autofree char *migrate = g_strdup_printf ("{\"uri\":\"%s\"}", uri);

  script_perform_start (fx);
  script_mirror_ready (fx);
  expect (fx, "migrate-set-capabilities",
          "{\"capabilities\":[{\"capability\":\"events\",\"state\":true},"
          "{\"capability\":\"pause-before-switchover\",\"state\":true}]}", "{}");
  expect (fx, "migrate", migrate, "{}");
  fake_qemu_event (fx->fake, "MIGRATION", "{\"status\":\"setup\"}");
  fake_qemu_event (fx->fake, "MIGRATION", "{\"status\":\"active\"}");
  fake_qemu_event (fx->fake, "MIGRATION", "{\"status\":\"pre-switchover\"}");
  script_cancel_at_ready (fx);
  expect (fx, "migrate-continue", "{\"state\":\"pre-switchover\"}", "{}");
  fake_qemu_event (fx->fake, "MIGRATION", "{\"status\":\"device\"}");
  fake_qemu_event (fx->fake, "MIGRATION", "{\"status\":\"completed\"}");
  result = perform (fx, COOKIE_MODE_LIVE, uri, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (result->status, ==, "completed");
  g_assert_cmpint (result->downtime_ms, >=, 0);
  g_assert_cmpstr (fx->perform_step, ==, "completed");
}

static void
test_perform_nbd_add_fails (Fixture *fx, gconstpointer data)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(Cookie) result = NULL;

  fake_qemu_answer_always (fx->fake, "query-block-jobs", "\"return\": []");
  expect (fx, "query-block", NULL, SRC_BLOCK);
  expect (fx, "query-named-block-nodes", "{\"flat\":true}", "[]");
  expect_error (fx, "blockdev-add", "*", "Failed to connect to 'nbd.sock': No such file");
  script_source_abort (fx, FALSE);
  result = perform (fx, COOKIE_MODE_COPY, NULL, &error);
  g_assert_null (result);
  g_assert_error (error, QMP_ERROR, QMP_ERROR_GENERIC);
  g_assert_cmpstr (error->message, ==, "mirror: vda: cannot connect to the destination export: "
                                       "src: blockdev-add: Failed to connect to 'nbd.sock': "
                                       "No such file");
  g_assert_cmpstr (fx->perform_step, ==, "mirror");
}

static void
test_perform_job_error (Fixture *fx, gconstpointer data)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(Cookie) result = NULL;
  g_autofree char *want = NULL;

  script_perform_start (fx);
  expect (fx, "blockdev-mirror", MIRROR, "{}");
  job_event (fx, "created");
  job_event (fx, "running");
  job_event (fx, "aborting");
  script_job_ends (fx, "Input/output error");
  script_source_abort (fx, TRUE);
  result = perform (fx, COOKIE_MODE_COPY, NULL, &error);
  g_assert_null (result);
  want = ids (fx, "mirror: vda: block job blkmig-ID8-0 failed: Input/output error");
  g_assert_cmpstr (error->message, ==, want);
  g_assert_cmpstr (fx->perform_step, ==, "mirror");
}

static void
test_perform_qmp_closes (Fixture *fx, gconstpointer data)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(Cookie) result = NULL;

  script_perform_start (fx);
  fake_qemu_expect_close (fx->fake, "blockdev-mirror", "*");
  result = perform (fx, COOKIE_MODE_COPY, NULL, &error);
  g_assert_null (result);
  g_assert_error (error, QMP_ERROR, QMP_ERROR_CLOSED);
  g_assert_cmpstr (error->message, ==,
                   "mirror: vda: src: blockdev-mirror: QMP connection closed by QEMU");
  g_assert_cmpstr (fx->perform_step, ==, "mirror");
}

/* copy-base on the source copies QEMU's own layer files into exports with its own
 * names: an answer naming another export, or a chain that changed, starts nothing. */
static void
test_copy_base_refusals (void)
{
  g_autofree char *path = g_test_build_filename (G_TEST_DIST, "golden", "cookie",
                                                 "chain-copy-base-answer.json", NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(Cookie) answer = cookie_load (path, COOKIE_KIND_DESTINATION, &error);
  const char *const layers[] = { "/images/base.qcow2", "/images/template.raw", NULL };
  const char *const formats[] = { "qcow2", "raw", NULL };
  const char *const one[] = { "/images/base.qcow2", NULL };
  g_autoptr(GPtrArray) files = g_ptr_array_new ();
  g_autoptr(GPtrArray) kinds = g_ptr_array_new ();
  const BaseCopyTarget target = { .unix_path = "/nonexistent/nbd.sock" };
  CookieLayer *second;

  g_assert_no_error (error);
  g_ptr_array_add (files, (gpointer) one);
  g_ptr_array_add (kinds, (gpointer) formats);
  g_assert_null (base_copy_start (answer, files, kinds, &target, NULL, TRUE, &error));
  g_assert_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK);
  g_assert_cmpstr (error->message, ==, "vda: the disk has 1 backing layers now, the cookie 2");
  g_clear_error (&error);
  files->pdata[0] = (gpointer) layers;
  second = ((CookieDisk *) answer->disks->pdata[0])->chain->pdata[1];
  g_free (second->export_name);
  second->export_name = g_strdup ("blkmig-0f3c1a2b-0.b0");
  g_assert_null (base_copy_start (answer, files, kinds, &target, NULL, TRUE, &error));
  g_assert_error (error, BLKMIG_ERROR, BLKMIG_ERROR_COOKIE);
  g_assert_cmpstr (error->message, ==, "disk 0: the destination answered export "
                   "blkmig-0f3c1a2b-0.b0 for backing layer 2, not blkmig-0f3c1a2b-0.b1");
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
  ADD ("prepare/live", COOKIE_MODE_LIVE, test_prepare_live);
  ADD ("prepare/machine-mismatch", COOKIE_MODE_LIVE, test_prepare_machine_mismatch);
  ADD ("prepare/not-incoming", COOKIE_MODE_LIVE, test_prepare_not_incoming);
  ADD ("prepare/incoming-plaintext", COOKIE_MODE_LIVE, test_prepare_incoming_plaintext);
  ADD ("prepare/copy-base-cannot", COOKIE_MODE_LIVE, test_prepare_copy_base_cannot);
  ADD ("finish/copy", COOKIE_MODE_COPY, test_finish_copy);
  ADD ("finish/live-failed", COOKIE_MODE_COPY, test_finish_live_failed);
  ADD ("abort/dest", COOKIE_MODE_COPY, test_abort_dest);
  ADD ("abort/dest-live", COOKIE_MODE_LIVE, test_abort_dest);
  ADD ("begin/ok", COOKIE_MODE_LIVE, test_begin);
  ADD ("begin/unknown-disk", COOKIE_MODE_COPY, test_begin_unknown_disk);
  ADD ("perform/copy", COOKIE_MODE_COPY, test_perform_copy);
  ADD ("perform/live", COOKIE_MODE_LIVE, test_perform_live);
  ADD ("perform/nbd-add-fails", COOKIE_MODE_COPY, test_perform_nbd_add_fails);
  ADD ("perform/job-error", COOKIE_MODE_COPY, test_perform_job_error);
  ADD ("perform/qmp-closes", COOKIE_MODE_COPY, test_perform_qmp_closes);
  g_test_add_func ("/session/copy-base/refusals", test_copy_base_refusals);
  ret = g_test_run ();
  g_rmdir (state_dir);
  g_free (state_dir);
  return ret;
}
