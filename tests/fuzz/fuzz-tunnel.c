/* Fuzz harness: the tunnel's frame decoder, connector or listener side, on a stream fed by the fuzz input. */
#include "fuzz.h"
#include "fuzz-peer.h"

#include <gio/gio.h>
#include <gio/gunixsocketaddress.h>
#include <glib/gstdio.h>
#include <stdlib.h>
#include <string.h>

#include "nbd/tunnel.h"

/* The input is the byte stream the far tunnel end sends, written one frame at
 * a time (9-byte header, then the payload it announces, or what is left) with
 * the main context run in between.  Channels the input OPENs connect to a
 * local echo server standing in for the NBD server, so DATA comes back and
 * CREDIT matters.  OPEN frames after the first MAX_OPENS are not sent, which
 * keeps an input's file descriptors bounded.
 *
 * Built with -DFUZZ_TUNNEL_LISTENER (fuzz-tunnel-listener) it tests the
 * source's side instead: the tunnel listens, LISTENER_CLIENTS local clients
 * (echoing, like the NBD clients of QEMU) connect first and become channels
 * 1 and 2, and the input is what tunnel-endpoint sends back. */
#define FRAME_HEADER 9
#define MAX_OPENS 32
#define ECHO_CHUNK 16384
#define LISTENER_CLIENTS 2

typedef struct {
  GIOStream *conn;
  guint8 buf[ECHO_CHUNK];
} Echo;

static char *echo_dir;
static char *echo_path;
static GSocketService *echo_service;

static void echo_read (Echo *echo);

static void
echo_free (Echo *echo)
{
  g_io_stream_close (echo->conn, NULL, NULL);
  g_object_unref (echo->conn);
  g_free (echo);
}

static void
echo_written_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Echo *echo = user_data;

  if (!g_output_stream_write_all_finish (G_OUTPUT_STREAM (source), result, NULL, NULL))
    return echo_free (echo);
  echo_read (echo);
}

static void
echo_read_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Echo *echo = user_data;
  gssize n = g_input_stream_read_finish (G_INPUT_STREAM (source), result, NULL);

  if (n <= 0)
    return echo_free (echo);
  g_output_stream_write_all_async (g_io_stream_get_output_stream (echo->conn), echo->buf, n,
                                   G_PRIORITY_DEFAULT, NULL, echo_written_cb, echo);
}

static void
echo_read (Echo *echo)
{
  g_input_stream_read_async (g_io_stream_get_input_stream (echo->conn), echo->buf,
                             sizeof echo->buf, G_PRIORITY_DEFAULT, NULL, echo_read_cb, echo);
}

static gboolean
echo_incoming_cb (GSocketService *service, GSocketConnection *conn, GObject *source,
                  gpointer user_data)
{
  Echo *echo = g_new (Echo, 1);

  echo->conn = G_IO_STREAM (g_object_ref (conn));
  echo_read (echo);
  return TRUE;
}

static void
echo_cleanup (void)
{
  if (echo_path != NULL)
    g_unlink (echo_path);
  if (echo_dir != NULL)
    g_rmdir (echo_dir);
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GSocketAddress) addr = NULL;

  fuzz_init_glib ();
  echo_dir = g_dir_make_tmp ("blkmig-fuzz-tunnel-XXXXXX", &error);
  FUZZ_CHECK (echo_dir != NULL, "cannot make a temporary directory");
  echo_path = g_build_filename (echo_dir, "nbd.sock", NULL);
  addr = g_unix_socket_address_new (echo_path);
  echo_service = g_socket_service_new ();
  FUZZ_CHECK (g_socket_listener_add_address (G_SOCKET_LISTENER (echo_service), addr,
                                             G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_DEFAULT,
                                             NULL, NULL, &error),
              "cannot listen for the echo server");
  g_signal_connect (echo_service, "incoming", G_CALLBACK (echo_incoming_cb), NULL);
  g_socket_service_start (echo_service);
  atexit (echo_cleanup);
  return 0;
}

static void
closed_cb (Tunnel *tunnel, const GError *why, gpointer user_data)
{
  gboolean *closed = user_data;

  FUZZ_CHECK (!*closed, "the closed function ran twice");
  *closed = TRUE;
}

/* Feeds @data frame by frame; stops early once the tunnel has closed. */
static void
feed (FuzzPeer *peer, const uint8_t *data, size_t size, const gboolean *closed)
{
  size_t off = 0;
  guint opens = 0;

  while (off < size && !peer->broken && !*closed)
    {
      size_t left = size - off;
      size_t len = left;
      gboolean skip = FALSE;

      if (left >= FRAME_HEADER)
        {
          guint32 payload = (guint32) data[off + 5] << 24 | (guint32) data[off + 6] << 16
                            | (guint32) data[off + 7] << 8 | data[off + 8];

          len = FRAME_HEADER + MIN (payload, left - FRAME_HEADER);
          skip = data[off + 4] == 1 && ++opens > MAX_OPENS;  /* OPEN */
        }
      if (!skip)
        fuzz_peer_send (peer, data + off, len);
      off += len;
    }
}

#ifdef FUZZ_TUNNEL_LISTENER
/* Listens in the private directory; the local clients connect and echo. */
static Tunnel *
tunnel_under_test (GIOStream *stream)
{
  g_autofree char *path = g_build_filename (echo_dir, "listen.sock", NULL);
  g_autoptr(GError) error = NULL;
  Tunnel *tunnel = tunnel_new_listener (stream, path, &error);

  FUZZ_CHECK (tunnel != NULL, "tunnel_new_listener failed");
  for (int i = 0; i < LISTENER_CLIENTS; i++)
    {
      g_autoptr(GSocketClient) client = g_socket_client_new ();
      g_autoptr(GSocketAddress) addr = g_unix_socket_address_new (path);
      GSocketConnection *conn = g_socket_client_connect (client, G_SOCKET_CONNECTABLE (addr),
                                                         NULL, &error);

      FUZZ_CHECK (conn != NULL, "cannot connect to the tunnel's socket");
      echo_incoming_cb (NULL, conn, NULL, NULL);  /* takes its own reference */
      g_object_unref (conn);
      fuzz_peer_settle ();                       /* accepted: channel i + 1 */
    }
  return tunnel;
}
#else
static Tunnel *
tunnel_under_test (GIOStream *stream)
{
  return tunnel_new_connector (stream, echo_path);
}
#endif

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  FuzzPeer peer;
  int fd = fuzz_peer_open (&peer);
  g_autoptr(GError) error = NULL;
  g_autoptr(GSocket) socket = NULL;
  g_autoptr(GSocketConnection) stream = NULL;
  Tunnel *tunnel;
  gboolean closed = FALSE;

  FUZZ_CHECK (fd >= 0, "socketpair failed");
  socket = g_socket_new_from_fd (fd, &error);
  FUZZ_CHECK (socket != NULL, "g_socket_new_from_fd failed");
  stream = g_socket_connection_factory_create_connection (socket);
  tunnel = tunnel_under_test (G_IO_STREAM (stream));
  tunnel_set_closed_func (tunnel, closed_cb, &closed);
  tunnel_set_compress (tunnel, TUNNEL_COMPRESS_ZSTD);  /* ZDATA reachable after a hello */
  fuzz_peer_settle ();
  feed (&peer, data, size, &closed);
  /* end of the stream: the tunnel must notice and close every channel */
  fuzz_peer_shutdown (&peer);
  while (!closed)
    g_main_context_iteration (NULL, TRUE);
  tunnel_free (tunnel);
  fuzz_peer_settle ();        /* cancelled operations and echo connections finish */
  fuzz_peer_close (&peer);
  fuzz_peer_settle ();
  return 0;
}
