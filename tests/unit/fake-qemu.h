/* A scripted fake QEMU for tests: expected QMP commands in order, canned replies, schema checks. */
#pragma once

#include <gio/gio.h>

#include "qmp/qmp-client.h"

/* The fake listens on a UNIX socket in a private directory and speaks QMP like
 * QEMU 7.2: greeting, then qmp_capabilities, query-commands and query-qmp-schema
 * answered from the saved schema (tests/unit/qmp-schema-7.2.json) unless the script's
 * next entry is for them, then the script.
 *
 * Every other command is first checked against the schema (command known,
 * arguments known, of the right JSON types, required ones present), then must be
 * the next entry of the script (or of the current any-order section).  A failure
 * is recorded (the first one wins), answered with a GenericError naming it, and
 * reported by fake_qemu_verify(), which also fails when scripted commands were
 * never received.  Connections are served one after another; the script is one
 * queue across them. */
typedef struct _FakeQemu FakeQemu;

/* Serves on the thread-default main context: for tests that drive a QmpClient in
 * this process (its _sync calls iterate that context, so the fake answers). */
FakeQemu *fake_qemu_new (void);
/* Serves in a thread of its own: for tests that run blkmig as a child process. */
FakeQemu *fake_qemu_new_threaded (void);
void fake_qemu_free (FakeQemu *fake);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (FakeQemu, fake_qemu_free)

const char *fake_qemu_path (FakeQemu *fake);
/* Connects a QmpClient (label @label) to the fake; asserts it succeeds. */
QmpClient *fake_qemu_connect (FakeQemu *fake, const char *label);
/* Replaces the greeting line (raw text without the newline). */
void fake_qemu_set_greeting (FakeQemu *fake, const char *line);

/* Script entries.  @args: the expected "arguments" as JSON text, compared as JSON
 * values (member order does not matter); "*" accepts any arguments, NULL means
 * none.  Each returns nothing: a test lists its expectations, then runs. */
/* Answers {"return": @ret_json}. */
void fake_qemu_expect (FakeQemu *fake, const char *command, const char *args,
                       const char *ret_json);
/* Answers {"error": {"class": @klass, "desc": @desc}}. */
void fake_qemu_expect_error (FakeQemu *fake, const char *command, const char *args,
                             const char *klass, const char *desc);
/* Answers {"id": ID, @members} with @members sent as is (hostile replies). */
void fake_qemu_expect_raw (FakeQemu *fake, const char *command, const char *args,
                           const char *members);
/* Closes the connection without answering (QEMU died mid-step). */
void fake_qemu_expect_close (FakeQemu *fake, const char *command, const char *args);
/* Sends event @name with @data_json (NULL: no data) right after the reply of the
 * last scripted entry. */
void fake_qemu_event (FakeQemu *fake, const char *name, const char *data_json);
/* Entries added between these two may arrive in any order (best-effort cleanups). */
void fake_qemu_any_order_begin (FakeQemu *fake);
void fake_qemu_any_order_end (FakeQemu *fake);

/* Standing answers, outside the ordered script: @command, whenever it arrives and
 * is not the script's next entry, is answered with raw @members (NULL: "return":
 * {}).  For tests that care what blkmig does with a reply, not about the order.
 * @command "*" answers every command that has no answer of its own. */
void fake_qemu_answer_always (FakeQemu *fake, const char *command, const char *members);
/* How many times @command was received (handshake commands included). */
guint fake_qemu_count (FakeQemu *fake, const char *command);

/* FALSE with the first failure (or the first scripted command never received). */
gboolean fake_qemu_check (FakeQemu *fake, GError **error);
/* Asserts fake_qemu_check(). */
void fake_qemu_verify (FakeQemu *fake);

/* ---- interactive mode, for tests of the QMP client and the job group ----------
 * (single-threaded fakes only).  Commands that neither the script nor a standing
 * answer takes go to @handler (when it returns TRUE it answered, e.g. with
 * fake_qemu_reply and fake_qemu_send_event), else they wait, schema-checked, for
 * the test to take them in order and answer when it likes. */
typedef gboolean (*FakeQemuHandler) (FakeQemu *fake, const char *line, const char *id,
                                     const char *command, JsonNode *args, gpointer data);
void fake_qemu_set_manual (FakeQemu *fake, FakeQemuHandler handler, gpointer data);
/* Serves a socketpair instead of the socket (the only connection from now on);
 * returns the client's end.  @greet: send the greeting at once. */
int fake_qemu_socketpair (FakeQemu *fake, gboolean greet);
/* Waits for the next waiting command, checks its name (unless NULL) and arguments
 * (@args as in fake_qemu_expect), and returns its id. */
char *fake_qemu_take (FakeQemu *fake, const char *command, const char *args);
void fake_qemu_reply (FakeQemu *fake, const char *id, const char *ret_json);
/* Sends @text as is, now (half lines, batches, garbage). */
void fake_qemu_send_raw (FakeQemu *fake, const char *text);
void fake_qemu_send_event (FakeQemu *fake, const char *name, const char *data_json);
/* Closes the connection now (QEMU went away). */
void fake_qemu_close (FakeQemu *fake);
/* Whether the client closed its end. */
gboolean fake_qemu_client_gone (FakeQemu *fake);
/* Dispatches what is ready, then fails on any command not taken, and verifies. */
void fake_qemu_assert_quiet (FakeQemu *fake);
/* Keeps fds received with SCM_RIGHTS (closed by default) for fake_qemu_steal_fd. */
void fake_qemu_keep_fds (FakeQemu *fake);
guint fake_qemu_fd_count (FakeQemu *fake);
int fake_qemu_steal_fd (FakeQemu *fake);

/* Whether the saved schema (7.2's, or FAKE_QEMU_SCHEMA's) has @command and, unless
 * @argument is NULL, that top-level argument: scripts whose arguments differ between
 * QEMU versions ask this, as blkmig asks the real QEMU. */
gboolean fake_qemu_schema_has (const char *command, const char *argument);
/* Checks one command against the saved schema (exposed for the fake's own tests). */
gboolean fake_qemu_validate (const char *command, JsonNode *args, GError **error);
