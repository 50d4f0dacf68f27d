/* Unit tests of the tunnel framing: two Tunnels over a socketpair carrying an echo, and raw frames from a hostile peer. */
#include <gio/gunixsocketaddress.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/socket.h>

#include "nbd/tunnel.h"

#define ECHO_BYTES (3 * 1024 * 1024 + 12345)

typedef struct {
  char *dir;
  char *listen_path;          /* the listener tunnel's socket */
  char *nbd_path;             /* what the connector tunnel connects to */
  GIOStream *ends[2];
  GSocketService *echo;
  GError *closed_error;
  gboolean closed;
} Fixture;

static GIOStream *
stream_from_fd (int fd)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GSocket) sock = g_socket_new_from_fd (fd, &error);

  g_assert_no_error (error);
  return G_IO_STREAM (g_socket_connection_factory_create_connection (sock));
}

static void
fixture_setup (Fixture *fx, gconstpointer data)
{
  int fds[2];

  fx->dir = g_dir_make_tmp ("blkmig-tunnel-XXXXXX", NULL);
  g_assert_nonnull (fx->dir);
  fx->listen_path = g_build_filename (fx->dir, "listen.sock", NULL);
  fx->nbd_path = g_build_filename (fx->dir, "nbd.sock", NULL);
  g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), ==, 0);
  fx->ends[0] = stream_from_fd (fds[0]);
  fx->ends[1] = stream_from_fd (fds[1]);
}

static void
fixture_teardown (Fixture *fx, gconstpointer data)
{
  if (fx->echo != NULL)
    {
      g_socket_service_stop (fx->echo);
      g_socket_listener_close (G_SOCKET_LISTENER (fx->echo));
      g_object_unref (fx->echo);
    }
  g_clear_object (&fx->ends[0]);
  g_clear_object (&fx->ends[1]);
  g_unlink (fx->nbd_path);
  g_unlink (fx->listen_path);
  g_rmdir (fx->dir);
  g_clear_error (&fx->closed_error);
  g_free (fx->listen_path);
  g_free (fx->nbd_path);
  g_free (fx->dir);
}

static void
closed_cb (Tunnel *tunnel, const GError *why, gpointer user_data)
{
  Fixture *fx = user_data;

  fx->closed = TRUE;
  fx->closed_error = why != NULL ? g_error_copy (why) : NULL;
}

/* ---- the echo "NBD server": one thread per connection, blocking I/O ------- */

static gpointer
echo_thread (gpointer data)
{
  g_autoptr(GIOStream) conn = data;
  GInputStream *in = g_io_stream_get_input_stream (conn);
  GOutputStream *out = g_io_stream_get_output_stream (conn);
  g_autofree guint8 *buf = g_malloc (65536);
  gssize n;

  while ((n = g_input_stream_read (in, buf, 65536, NULL, NULL)) > 0)
    if (!g_output_stream_write_all (out, buf, n, NULL, NULL, NULL))
      break;
  g_io_stream_close (conn, NULL, NULL);
  return NULL;
}

static gboolean
echo_incoming_cb (GSocketService *service, GSocketConnection *conn, GObject *source,
                  gpointer user_data)
{
  g_thread_unref (g_thread_new ("echo", echo_thread, g_object_ref (conn)));
  return TRUE;
}

static void
echo_start (Fixture *fx)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GSocketAddress) addr = g_unix_socket_address_new (fx->nbd_path);

  fx->echo = g_socket_service_new ();
  g_socket_listener_add_address (G_SOCKET_LISTENER (fx->echo), addr, G_SOCKET_TYPE_STREAM,
                                 G_SOCKET_PROTOCOL_DEFAULT, NULL, NULL, &error);
  g_assert_no_error (error);
  g_signal_connect (fx->echo, "incoming", G_CALLBACK (echo_incoming_cb), NULL);
  g_socket_service_start (fx->echo);
}

/* ---- clients of the listener tunnel: blocking, in threads ----------------- */

typedef struct {
  const char *path;
  guint8 seed;
  gint done;
  gboolean ok;
} Client;

static gboolean
client_exchange (GIOStream *conn, guint8 seed)
{
  g_autofree guint8 *sent = g_malloc (ECHO_BYTES);
  g_autofree guint8 *got = g_malloc (ECHO_BYTES);
  gsize n = 0;

  for (gsize i = 0; i < ECHO_BYTES; i++)
    sent[i] = (guint8) (i * 7 + seed);
  /* less than one window: the tunnel buffers it while nobody reads the echo */
  if (!g_output_stream_write_all (g_io_stream_get_output_stream (conn), sent, ECHO_BYTES, NULL,
                                  NULL, NULL)
      || !g_input_stream_read_all (g_io_stream_get_input_stream (conn), got, ECHO_BYTES, &n,
                                   NULL, NULL))
    return FALSE;
  return n == ECHO_BYTES && memcmp (sent, got, ECHO_BYTES) == 0;
}

static gpointer
client_thread (gpointer data)
{
  Client *client = data;
  g_autoptr(GSocketClient) sc = g_socket_client_new ();
  g_autoptr(GSocketAddress) addr = g_unix_socket_address_new (client->path);
  g_autoptr(GSocketConnection) conn = g_socket_client_connect (sc, G_SOCKET_CONNECTABLE (addr),
                                                                NULL, NULL);

  client->ok = conn != NULL && client_exchange (G_IO_STREAM (conn), client->seed);
  if (conn != NULL)
    g_io_stream_close (G_IO_STREAM (conn), NULL, NULL);
  g_atomic_int_set (&client->done, 1);
  return NULL;
}

static void
iterate_until (gint *flag, guint seconds)
{
  gint64 end = g_get_monotonic_time () + seconds * G_USEC_PER_SEC;

  while (!g_atomic_int_get (flag) && g_get_monotonic_time () < end)
    if (!g_main_context_iteration (NULL, FALSE))
      g_usleep (1000);
}

/* Every frame type crosses the stream both ways, several channels at once,
 * frames of odd lengths: under UBSan a misaligned header access fails this. */
static void
test_echo (Fixture *fx, gconstpointer data)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(Tunnel) listener = NULL;
  g_autoptr(Tunnel) connector = NULL;
  Client clients[3] = { { 0 } };
  GThread *threads[G_N_ELEMENTS (clients)];

  echo_start (fx);
  listener = tunnel_new_listener (fx->ends[0], fx->listen_path, &error);
  g_assert_no_error (error);
  connector = tunnel_new_connector (fx->ends[1], fx->nbd_path);
  tunnel_set_closed_func (connector, closed_cb, fx);
  for (guint i = 0; i < G_N_ELEMENTS (clients); i++)
    {
      clients[i] = (Client) { fx->listen_path, (guint8) (i + 1), 0, FALSE };
      threads[i] = g_thread_new ("client", client_thread, &clients[i]);
    }
  for (guint i = 0; i < G_N_ELEMENTS (clients); i++)
    {
      iterate_until (&clients[i].done, 30);
      g_assert_true (g_atomic_int_get (&clients[i].done));
      g_thread_join (threads[i]);
      g_assert_true (clients[i].ok);
    }
  g_assert_false (fx->closed);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add ("/tunnel/echo", Fixture, NULL, fixture_setup, test_echo, fixture_teardown);
  return g_test_run ();
}
