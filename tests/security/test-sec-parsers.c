/* Hostile input to blkmig's parsers: deep, huge and mistyped cookies and QMP replies, escapes. */
#include <sys/resource.h>

#include <gio/gio.h>
#include <glib/gstdio.h>
#include <unistd.h>

#include "tests/unit/fake-qemu.h"

/* What blkmig may use at most while it refuses a hostile reply or cookie. */
#define ADDRESS_SPACE_LIMIT (1024UL * 1024 * 1024)

static void
limit_memory (gpointer data)
{
  struct rlimit rl = { ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT };

  setrlimit (RLIMIT_AS, &rl);
}

/* Runs $BLKMIG with @argv, @input on stdin, in at most ADDRESS_SPACE_LIMIT of
 * address space; returns the exit status (128 + signal when killed). */
static int
run_blkmig (const char *input, char **err, const char *const *argv)
{
  g_autoptr(GSubprocessLauncher) launcher = g_subprocess_launcher_new (
      G_SUBPROCESS_FLAGS_STDOUT_SILENCE | G_SUBPROCESS_FLAGS_STDERR_PIPE);
  g_autoptr(GPtrArray) args = g_ptr_array_new ();
  g_autoptr(GSubprocess) proc = NULL;
  g_autoptr(GBytes) err_bytes = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree char *in_path = NULL;
  int fd = g_file_open_tmp ("blkmig-sec-in-XXXXXX", &in_path, &error);

  /* from a file: blkmig may stop reading early, a pipe would break */
  g_assert_no_error (error);
  close (fd);
  g_assert_true (g_file_set_contents (in_path, input != NULL ? input : "", -1, NULL));
  g_subprocess_launcher_set_stdin_file_path (launcher, in_path);

  g_ptr_array_add (args, (gpointer) g_getenv ("BLKMIG"));
  for (gsize i = 0; argv[i] != NULL; i++)
    g_ptr_array_add (args, (gpointer) argv[i]);
  g_ptr_array_add (args, NULL);
  g_subprocess_launcher_setenv (launcher, "G_DEBUG", "fatal-criticals", TRUE);
  g_subprocess_launcher_set_child_setup (launcher, limit_memory, NULL, NULL);
  proc = g_subprocess_launcher_spawnv (launcher, (const char *const *) args->pdata, &error);
  g_assert_no_error (error);
  g_subprocess_communicate (proc, NULL, NULL, NULL, &err_bytes, &error);
  g_assert_no_error (error);
  g_unlink (in_path);
  *err = g_strndup (g_bytes_get_size (err_bytes) > 0 ? g_bytes_get_data (err_bytes, NULL) : "",
                    g_bytes_get_size (err_bytes));
  if (g_subprocess_get_if_signaled (proc))
    return 128 + g_subprocess_get_term_sig (proc);
  return g_subprocess_get_exit_status (proc);
}

/* No byte of @text but its final newline is a control code or a C1 code. */
static void
assert_printable (const char *text)
{
  gsize len = strlen (text);

  g_assert_cmpuint (len, >, 0);
  g_assert_cmpint (text[len - 1], ==, '\n');
  g_assert_true (g_utf8_validate (text, len, NULL));
  for (const char *p = text; p < text + len - 1; p = g_utf8_next_char (p))
    {
      gunichar c = g_utf8_get_char (p);
      if (c < 0x20 || c == 0x7f || (c >= 0x80 && c < 0xa0))
        g_error ("control code U+%04X in %s", c, text);
    }
}

/* "[[[...]]]" nested @depth deep. */
static char *
nested (gsize depth)
{
  GString *s = g_string_sized_new (2 * depth);

  for (gsize i = 0; i < depth; i++)
    g_string_append_c (s, '[');
  for (gsize i = 0; i < depth; i++)
    g_string_append_c (s, ']');
  return g_string_free (s, FALSE);
}

/* "[0,0,...]" of about @bytes bytes. */
static char *
flat_array (gsize bytes)
{
  GString *s = g_string_sized_new (bytes + 2);

  g_string_append (s, "[0");
  while (s->len < bytes)
    g_string_append (s, ",0");
  g_string_append_c (s, ']');
  return g_string_free (s, FALSE);
}

/* A fake QEMU in a thread of its own (blkmig runs as a child): every command it
 * is not told about gets {"return": {}}. */
static FakeQemu *
fake_new (void)
{
  FakeQemu *fake = fake_qemu_new_threaded ();

  fake_qemu_answer_always (fake, "*", NULL);
  return fake;
}

/* `blkmig list` against a fake QEMU whose query-block answers @reply_members. */
static int
list_with_query_block (const char *reply_members, char **err, FakeQemu **keep)
{
  FakeQemu *fake = fake_new ();
  const char *argv[] = { "list", "--qmp", fake_qemu_path (fake), NULL };
  int status;

  fake_qemu_expect_raw (fake, "query-block", NULL, reply_members);
  status = run_blkmig (NULL, err, argv);
  fake_qemu_verify (fake);
  g_assert_cmpuint (fake_qemu_count (fake, "query-block"), ==, 1);
  *keep = fake;
  return status;
}

static void
test_qmp_deep_reply (void)
{
  g_autofree char *deep = nested (200000);
  g_autofree char *members = g_strdup_printf ("\"return\": %s", deep);
  g_autofree char *err = NULL;
  g_autoptr(FakeQemu) fake = NULL;

  g_assert_cmpint (list_with_query_block (members, &err, &fake), ==, 5);
  g_assert_cmpstr (err, ==, "blkmig list: qemu: query-block: QMP peer sent bad JSON: nested deeper than "
                   "1024 levels\n");
}

/* json-glib also reads 'strings' and comments: a quote hidden in one must not
 * blind the nesting count to what follows. */
static void
test_qmp_deep_reply_hidden (void)
{
  static const char *const wrappers[][2] = { { "['\"', ", ", '\"']" },
                                             { "/* \" */ ", " /* \" */" } };

  for (gsize i = 0; i < G_N_ELEMENTS (wrappers); i++)
    {
      g_autofree char *deep = nested (200000);
      g_autofree char *members = g_strdup_printf ("\"return\": %s%s%s", wrappers[i][0], deep,
                                                  wrappers[i][1]);
      g_autofree char *err = NULL;
      g_autoptr(FakeQemu) fake = NULL;

      g_assert_cmpint (list_with_query_block (members, &err, &fake), ==, 5);
      g_assert_true (g_str_has_prefix (err, "blkmig list: qemu: query-block: QMP peer sent bad "
                                            "JSON: not valid JSON: unexpected character 0x"));
    }
}

static void
test_qmp_long_line (void)
{
  g_autofree char *big = flat_array (20 * 1024 * 1024);
  g_autofree char *members = g_strdup_printf ("\"return\": %s", big);
  g_autofree char *err = NULL;
  g_autoptr(FakeQemu) fake = NULL;

  g_assert_cmpint (list_with_query_block (members, &err, &fake), ==, 5);
  g_assert_cmpstr (err, ==, "blkmig list: qemu: query-block: QMP message too long\n");
}

/* 12 MiB is under the line limit, but 6 Mi values would cost GiBs as a tree. */
static void
test_qmp_many_values (void)
{
  g_autofree char *big = flat_array (12 * 1024 * 1024);
  g_autofree char *members = g_strdup_printf ("\"return\": %s", big);
  g_autofree char *err = NULL;
  g_autoptr(FakeQemu) fake = NULL;

  g_assert_cmpint (list_with_query_block (members, &err, &fake), ==, 5);
  g_assert_cmpstr (err, ==, "blkmig list: qemu: query-block: QMP peer sent bad JSON: more than 1048576 "
                   "values\n");
}

/* Members of the wrong JSON type are absent, never a crash or a GLib critical. */
static void
test_qmp_mistyped (void)
{
  g_autoptr(FakeQemu) fake = fake_new ();
  const char *argv[] = { "list", "--json", "--qmp", fake_qemu_path (fake), NULL };
  g_autofree char *err = NULL;

  fake_qemu_expect_raw (fake, "query-block", NULL,
                   "\"return\": [{\"device\": 5, \"qdev\": [], \"inserted\": {\"node-name\": "
                   "false, \"file\": {}, \"ro\": \"yes\", \"cache\": 3, \"image\": "
                   "{\"virtual-size\": \"big\", \"backing-image\": 7}}}, 12, null]");
  fake_qemu_expect_raw (fake, "query-named-block-nodes", "{\"flat\": true}",
                   "\"return\": [{\"node-name\": false, \"drv\": 1, \"image\": {}}, "
                   "{\"node-name\": \"n1\", \"drv\": \"qcow2\", \"image\": "
                   "{\"virtual-size\": [1], \"backing-image\": {\"filename\": 3}}}, \"x\"]");
  fake_qemu_expect_raw (fake, "query-block-jobs", NULL,
                   "\"return\": [{\"device\": false, \"offset\": \"x\", \"len\": {}}, 1]");
  g_assert_cmpint (run_blkmig (NULL, &err, argv), ==, 0);
  g_assert_cmpstr (err, ==, "");
  fake_qemu_verify (fake);
  g_assert_cmpuint (fake_qemu_count (fake, "query-block-jobs"), ==, 1);
}

/* A QEMU error text with terminal escapes and C1 codes is printed escaped. */
static void
test_qmp_error_escaped (void)
{
  g_autofree char *err = NULL;
  g_autoptr(FakeQemu) fake = NULL;

  g_assert_cmpint (list_with_query_block ("\"error\": {\"class\": \"GenericError\", \"desc\": "
                                          "\"\\u001b]0;owned\\u0007\\u009b2J\\r\"}",
                                          &err, &fake), ==, 5);
  assert_printable (err);
  g_assert_cmpstr (err, ==, "blkmig list: qemu: query-block: \\x1b]0;owned\\x07\\u009b2J\\r\n");
}

static const char *const prepare_argv[] = {
  "prepare", "--qmp", "/nonexistent/qmp.sock", "--listen", "unix:/nonexistent/nbd.sock", NULL
};

static void
test_cookie_deep (void)
{
  g_autofree char *deep = nested (100000);
  g_autofree char *cookie = g_strdup_printf ("{\"version\": 1, \"x\": %s}", deep);
  g_autofree char *err = NULL;

  g_assert_cmpint (run_blkmig (cookie, &err, prepare_argv), ==, 3);
  g_assert_cmpstr (err, ==, "blkmig prepare: cookie: standard input: nested deeper than 16 "
                   "levels\n");
}

static void
test_cookie_deep_hidden (void)
{
  g_autofree char *deep = nested (200000);
  g_autofree char *cookie = g_strdup_printf ("{\"version\": 1, \"x\": ['\"', %s, '\"']}", deep);
  g_autofree char *err = NULL;

  g_assert_cmpint (run_blkmig (cookie, &err, prepare_argv), ==, 3);
  g_assert_cmpstr (err, ==, "blkmig prepare: cookie: standard input: not valid JSON: unexpected "
                   "character 0x27\n");
}

static void
test_cookie_huge (void)
{
  g_autofree char *big = flat_array (2 * 1024 * 1024);
  g_autofree char *cookie = g_strdup_printf ("{\"version\": 1, \"x\": %s}", big);
  g_autofree char *err = NULL;

  g_assert_cmpint (run_blkmig (cookie, &err, prepare_argv), ==, 3);
  g_assert_cmpstr (err, ==, "blkmig prepare: cookie: standard input: larger than 1048576 "
                   "bytes\n");
}

/* Bad JSON: json-glib quotes the input in its message; it arrives escaped. */
static void
test_cookie_bad_json_escaped (void)
{
  g_autofree char *err = NULL;

  g_assert_cmpint (run_blkmig ("{\"a\x1b[2J\xc2\x9b\x07\" 1}", &err, prepare_argv), ==, 3);
  assert_printable (err);
  g_assert_cmpstr (err, ==, "blkmig prepare: cookie: standard input: not valid JSON: "
                   "<data>:1:11: Parse error: unexpected string constant \"a\\x1b[2J\\u009b"
                   "\\x07\", expected character `:'\n");
}

/* A disk name with escapes is no QEMU name: refused before anything, shown escaped. */
static void
test_cookie_disk_name_escaped (void)
{
  g_autoptr(FakeQemu) fake = fake_new ();
  const char *argv[] = { "prepare", "--qmp", fake_qemu_path (fake), "--listen",
                         "unix:/nonexistent/nbd.sock", NULL };
  const char *cookie =
    "{\"version\": 1, \"kind\": \"source\", \"id\": \"0123456789abcdef0123456789abcdef\", "
    "\"mode\": \"copy\", \"source\": {\"host\": \"h\"}, \"features\": [], \"disks\": [{\"name\": "
    "\"\\u001b[2Jvda\\u009b\", \"node\": \"n\", \"format\": \"raw\", \"virtual-size\": 1048576, "
    "\"allocated\": 0}]}";
  g_autofree char *err = NULL;

  g_assert_cmpint (run_blkmig (cookie, &err, argv), ==, 3);
  assert_printable (err);
  g_assert_cmpstr (err, ==, "blkmig prepare: cookie: standard input: disks[0].name must be a "
                   "QEMU name ([A-Za-z0-9._-#], at most 128 characters), got "
                   "'\\x1b[2Jvda\\u009b'\n");
  g_assert_cmpuint (fake_qemu_count (fake, "query-block"), ==, 0);
}

/* prepare and its rollback against a QEMU whose every reply is an empty object:
 * lists that are not lists are empty, no GLib critical. */
static void
test_qmp_mistyped_prepare (void)
{
  g_autoptr(FakeQemu) fake = fake_new ();
  const char *argv[] = { "prepare", "--qmp", fake_qemu_path (fake), "--listen",
                         "unix:/nonexistent/nbd.sock", NULL };
  const char *cookie =
    "{\"version\": 1, \"kind\": \"source\", \"id\": \"0123456789abcdef0123456789abcdef\", "
    "\"mode\": \"copy\", \"source\": {\"host\": \"h\"}, \"features\": [], \"disks\": "
    "[{\"name\": \"vda\", \"node\": \"n\", \"format\": \"raw\", \"virtual-size\": 1048576, "
    "\"allocated\": 0}]}";
  g_autofree char *err = NULL;

  g_assert_cmpint (run_blkmig (cookie, &err, argv), ==, 4);
  fake_qemu_verify (fake);
  g_assert_cmpstr (err, ==, "blkmig prepare: vda: the destination has no disk of that name and "
                   "no --create-dir was given\n");
  g_assert_cmpuint (fake_qemu_count (fake, "query-block"), ==, 1);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/sec/qmp/deep-reply", test_qmp_deep_reply);
  g_test_add_func ("/sec/qmp/deep-reply-hidden", test_qmp_deep_reply_hidden);
  g_test_add_func ("/sec/qmp/long-line", test_qmp_long_line);
  g_test_add_func ("/sec/qmp/many-values", test_qmp_many_values);
  g_test_add_func ("/sec/qmp/mistyped", test_qmp_mistyped);
  g_test_add_func ("/sec/qmp/error-escaped", test_qmp_error_escaped);
  g_test_add_func ("/sec/qmp/mistyped-prepare", test_qmp_mistyped_prepare);
  g_test_add_func ("/sec/cookie/deep", test_cookie_deep);
  g_test_add_func ("/sec/cookie/deep-hidden", test_cookie_deep_hidden);
  g_test_add_func ("/sec/cookie/huge", test_cookie_huge);
  g_test_add_func ("/sec/cookie/bad-json-escaped", test_cookie_bad_json_escaped);
  g_test_add_func ("/sec/cookie/disk-name-escaped", test_cookie_disk_name_escaped);
  return g_test_run ();
}
