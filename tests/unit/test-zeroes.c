/* Unit tests for asking whether an NBD export reads as zeroes (nbd/zeroes.c): real
 * qemu-nbd exports, and servers that say nothing, hang up or answer nonsense. */
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gio/gio.h>
#include <glib/gstdio.h>
#include <libnbd.h>

#include "nbd/zeroes.h"

#define MIB (G_GINT64_CONSTANT (1) << 20)
#define ZERO LIBNBD_STATE_ZERO
#define DATA 0
#define HOLE (LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO)

static char *work_dir;

typedef struct {
  gboolean done;
  gboolean zero;
  char *why;
} Answer;

static void
answered_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Answer *a = user_data;

  a->zero = nbd_export_reads_zeroes_finish (result, &a->why);
  a->done = TRUE;
}

/* Asks about @uri and waits; *seconds (may be NULL) gets how long it took. */
static gboolean
ask (const char *uri, gint64 size, int timeout_ms, char **why, double *seconds)
{
  Answer a = { 0 };
  gint64 start = g_get_monotonic_time ();

  nbd_export_reads_zeroes_async (uri, size, timeout_ms, NULL, answered_cb, &a);
  while (!a.done)
    g_main_context_iteration (NULL, TRUE);
  if (seconds != NULL)
    *seconds = (g_get_monotonic_time () - start) / 1e6;
  if (why != NULL)
    *why = g_steal_pointer (&a.why);
  g_free (a.why);
  return a.zero;
}

static void
tool (const char *first, ...)
{
  g_autoptr(GPtrArray) argv = g_ptr_array_new ();
  g_autoptr(GError) error = NULL;
  int status;
  va_list ap;

  va_start (ap, first);
  for (const char *arg = first; arg != NULL; arg = va_arg (ap, const char *))
    g_ptr_array_add (argv, (gpointer) arg);
  va_end (ap);
  g_ptr_array_add (argv, NULL);
  g_assert_true (g_spawn_sync (NULL, (char **) argv->pdata, NULL,
                               G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL,
                               NULL, NULL, &status, &error));
  g_assert_no_error (error);
  g_assert_true (g_spawn_check_wait_status (status, NULL));
}

static gboolean
connectable (const char *path)
{
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  int fd = socket (AF_UNIX, SOCK_STREAM, 0);
  gboolean ok;

  g_strlcpy (sa.sun_path, path, sizeof sa.sun_path);
  ok = connect (fd, (struct sockaddr *) &sa, sizeof sa) == 0;
  close (fd);
  return ok;
}

/* qemu-nbd serving @image (read-only, format @format) on a socket; the URI. */
static GSubprocess *
serve (const char *image, const char *format, char **uri)
{
  g_autofree char *sock = g_build_filename (work_dir, "nbd.sock", NULL);
  g_autoptr(GError) error = NULL;
  GSubprocess *proc;

  g_unlink (sock);
  proc = g_subprocess_new (G_SUBPROCESS_FLAGS_NONE, &error, "qemu-nbd", "-t", "-r", "-f", format,
                           "-k", sock, image, NULL);
  g_assert_no_error (error);
  for (int i = 0; i < 500 && !connectable (sock); i++)
    g_usleep (10000);  /* the file comes with bind, before listen: connect to know */
  g_assert_true (connectable (sock));
  *uri = g_strdup_printf ("nbd+unix:///?socket=%s", sock);
  return proc;
}

static void
unserve (GSubprocess *proc)
{
  g_subprocess_send_signal (proc, SIGTERM);
  g_subprocess_wait (proc, NULL, NULL);
  g_object_unref (proc);
}

/* qemu-img's new 1 GiB image (raw: its first 4 KiB written, as zeroes), then
 * 64 KiB of @pattern (-1: none) at @offset, asked about as @size bytes. */
static gboolean
ask_image (const char *format, int pattern, const char *offset, gint64 size, char **why)
{
  g_autofree char *image = g_build_filename (work_dir, "disk.img", NULL);
  g_autofree char *cmd = g_strdup_printf ("write -P %d %s 64k", pattern, offset);
  g_autofree char *uri = NULL;
  GSubprocess *server;
  gboolean zero;

  g_unlink (image);
  tool ("qemu-img", "create", "-q", "-f", format, image, "1G", NULL);
  if (pattern >= 0)
    tool ("qemu-io", "-f", format, "-c", cmd, image, NULL);
  server = serve (image, format, &uri);
  zero = ask (uri, size, 5000, why, NULL);
  unserve (server);
  return zero;
}

static void
test_new_images (void)
{
  g_autofree char *why = NULL;

  g_assert_true (ask_image ("raw", -1, NULL, 1024 * MIB, NULL));
  g_assert_true (ask_image ("qcow2", -1, NULL, 1024 * MIB, NULL));
  /* zeroes written as data are read, and are zeroes */
  g_assert_true (ask_image ("raw", 0, "500M", 1024 * MIB, NULL));
  g_assert_false (ask_image ("raw", 0x5a, "700M", 1024 * MIB, &why));
  g_assert_cmpstr (why, ==, "not everything reads as zeroes");
  g_clear_pointer (&why, g_free);
  g_assert_false (ask_image ("qcow2", 0x5a, "0", 1024 * MIB, &why));
  g_assert_cmpstr (why, ==, "not everything reads as zeroes");
  g_clear_pointer (&why, g_free);
  g_assert_false (ask_image ("raw", -1, NULL, 512 * MIB, &why));
  g_assert_cmpstr (why, ==, "the export has another size");
}

/* Hostile: a data extent larger than what is read to look inside (1 MiB). */
static void
test_data_too_big_to_read (void)
{
  g_autofree char *image = g_build_filename (work_dir, "zeroes.raw", NULL);
  g_autofree char *uri = NULL;
  g_autofree char *why = NULL;
  GSubprocess *server;

  g_unlink (image);
  tool ("qemu-img", "create", "-q", "-f", "raw", image, "1G", NULL);
  tool ("qemu-io", "-f", "raw", "-c", "write -P 0 100M 2M", image, NULL);
  server = serve (image, "raw", &uri);
  g_assert_false (ask (uri, 1024 * MIB, 5000, &why, NULL));
  g_assert_cmpstr (why, ==, "not everything reads as zeroes");
  unserve (server);
}

/* Hostile: a server that accepts and never says anything, one that hangs up at
 * once, and no server: FALSE, within the time limit. */
static void
test_silent_server (void)
{
  g_autofree char *path = g_build_filename (work_dir, "silent.sock", NULL);
  g_autofree char *uri = g_strdup_printf ("nbd+unix:///?socket=%s", path);
  g_autofree char *why = NULL;
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  int fd = socket (AF_UNIX, SOCK_STREAM, 0);
  double seconds;

  g_strlcpy (sa.sun_path, path, sizeof sa.sun_path);
  g_unlink (path);
  g_assert_cmpint (bind (fd, (struct sockaddr *) &sa, sizeof sa), ==, 0);
  g_assert_cmpint (listen (fd, 4), ==, 0);  /* connects, never accepted */
  g_assert_false (ask (uri, 1024 * MIB, 300, &why, &seconds));
  g_assert_cmpstr (why, ==, "no answer in time");
  g_assert_cmpfloat (seconds, <, 2.0);
  close (fd);
  g_clear_pointer (&why, g_free);
  g_assert_false (ask (uri, 1024 * MIB, 300, &why, NULL));  /* nobody listens */
  g_assert_true (g_str_has_prefix (why, "cannot connect: "));
}

static void
test_hangup (void)
{
  g_autoptr(GSocketService) service = g_socket_service_new ();
  g_autofree char *path = g_build_filename (work_dir, "hangup.sock", NULL);
  g_autofree char *uri = g_strdup_printf ("nbd+unix:///?socket=%s", path);
  g_autoptr(GSocketAddress) addr = g_unix_socket_address_new (path);
  g_autofree char *why = NULL;
  g_autoptr(GError) error = NULL;

  g_unlink (path);
  g_socket_listener_add_address (G_SOCKET_LISTENER (service), addr, G_SOCKET_TYPE_STREAM,
                                 G_SOCKET_PROTOCOL_DEFAULT, NULL, NULL, &error);
  g_assert_no_error (error);
  /* "incoming" is not connected: the connection is dropped as it comes */
  g_assert_false (ask (uri, 1024 * MIB, 2000, &why, NULL));
  g_assert_nonnull (why);
  g_socket_service_stop (service);
}

/* The walker over one reply: what a server may send, and what it must not. */
static void
test_walk (void)
{
  gint64 pos, len;
  size_t next;
  const uint32_t zeroes[] = { 4096, HOLE, 8192, ZERO };
  const uint32_t data_after[] = { 4096, HOLE, 512, DATA, 4096, HOLE };
  const uint32_t empty_extent[] = { 4096, HOLE, 0, HOLE, 4096, HOLE };
  const uint32_t beyond[] = { 1 << 30, HOLE };

  pos = 0;
  g_assert_true (nbd_zeroes_walk (&pos, 12288, zeroes, 4, &next, &len));
  g_assert_cmpint (pos, ==, 12288);
  g_assert_cmpint (len, ==, 0);
  pos = 0;  /* stops at the data, and goes on after it */
  g_assert_true (nbd_zeroes_walk (&pos, 1 << 20, data_after, 6, &next, &len));
  g_assert_cmpint (pos, ==, 4096);
  g_assert_cmpuint (next, ==, 2);
  g_assert_cmpint (len, ==, 512);
  pos += len;
  g_assert_true (nbd_zeroes_walk (&pos, 1 << 20, data_after + 4, 2, &next, &len));
  g_assert_cmpint (pos, ==, 8704);
  g_assert_cmpint (len, ==, 0);
  pos = 0;  /* an empty extent would never end a walk */
  g_assert_false (nbd_zeroes_walk (&pos, 1 << 20, empty_extent, 6, &next, &len));
  pos = 0;  /* an odd count, no entries */
  g_assert_false (nbd_zeroes_walk (&pos, 1 << 20, zeroes, 3, &next, &len));
  g_assert_false (nbd_zeroes_walk (&pos, 1 << 20, zeroes, 0, &next, &len));
  g_assert_cmpint (pos, ==, 0);
  pos = 4096;  /* more than asked about: ours ends where we asked */
  g_assert_true (nbd_zeroes_walk (&pos, 8192, beyond, 2, &next, &len));
  g_assert_cmpint (pos, ==, 8192);
  pos = 4096;  /* data beyond the end is clipped to it */
  g_assert_true (nbd_zeroes_walk (&pos, 8192, data_after + 2, 2, &next, &len));
  g_assert_cmpint (len, ==, 512);
  g_assert_true (nbd_zeroes_walk (&pos, 4196, data_after + 2, 2, &next, &len));
  g_assert_cmpint (len, ==, 100);
}

int
main (int argc, char **argv)
{
  int rc;

  g_test_init (&argc, &argv, NULL);
  work_dir = g_dir_make_tmp ("blkmig-zeroes-XXXXXX", NULL);
  g_test_add_func ("/zeroes/walk", test_walk);
  g_test_add_func ("/zeroes/silent-server", test_silent_server);
  g_test_add_func ("/zeroes/hangup", test_hangup);
  g_test_add_func ("/zeroes/new-images", test_new_images);
  g_test_add_func ("/zeroes/data-too-big-to-read", test_data_too_big_to_read);
  rc = g_test_run ();
  tool ("rm", "-rf", work_dir, NULL);
  g_free (work_dir);
  return rc;
}
