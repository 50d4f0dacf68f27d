/* Unit tests of the tunnel framing: two Tunnels over a socketpair carrying an echo, and raw frames from a hostile peer. */
#include <fcntl.h>
#include <gio/gunixinputstream.h>
#include <glib-unix.h>
#include <gio/gunixoutputstream.h>
#include <gio/gunixsocketaddress.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zstd.h>

#include "common/error.h"
#include "nbd/tunnel.h"
#include "tests/unit/tunnel-v1.h"

#define ECHO_BYTES (3 * 1024 * 1024 + 12345)

typedef struct {
  char *dir;
  char *listen_path;          /* the listener tunnel's socket */
  char *nbd_path;             /* what the connector tunnel connects to */
  GIOStream *ends[2];
  GSocketService *echo;
  GError *closed_error;
  gint closed;
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

/* Bytes every sink has read so far. */
static gint sink_bytes;

static gpointer
sink_thread (gpointer data)
{
  g_autoptr(GIOStream) conn = data;
  g_autofree guint8 *buf = g_malloc (65536);
  gssize n;

  while ((n = g_input_stream_read (g_io_stream_get_input_stream (conn), buf, 65536, NULL,
                                   NULL)) > 0)
    g_atomic_int_add (&sink_bytes, n);
  return NULL;
}

static gboolean
sink_incoming_cb (GSocketService *service, GSocketConnection *conn, GObject *source,
                  gpointer user_data)
{
  g_thread_unref (g_thread_new ("sink", sink_thread, g_object_ref (conn)));
  return TRUE;
}

static gboolean
echo_incoming_cb (GSocketService *service, GSocketConnection *conn, GObject *source,
                  gpointer user_data)
{
  g_thread_unref (g_thread_new ("echo", echo_thread, g_object_ref (conn)));
  return TRUE;
}

/* The "NBD server" at fx->nbd_path: an echo, or (@sink) one that only reads. */
static void
server_start (Fixture *fx, gboolean sink)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GSocketAddress) addr = g_unix_socket_address_new (fx->nbd_path);

  fx->echo = g_socket_service_new ();
  g_socket_listener_add_address (G_SOCKET_LISTENER (fx->echo), addr, G_SOCKET_TYPE_STREAM,
                                 G_SOCKET_PROTOCOL_DEFAULT, NULL, NULL, &error);
  g_assert_no_error (error);
  g_signal_connect (fx->echo, "incoming",
                    sink ? G_CALLBACK (sink_incoming_cb) : G_CALLBACK (echo_incoming_cb), NULL);
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

/* Three clients echo ECHO_BYTES each through the listener at fx->listen_path. */
static void
run_clients (Fixture *fx)
{
  Client clients[3] = { { 0 } };
  GThread *threads[G_N_ELEMENTS (clients)];

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
}

/* Every frame type crosses the stream both ways, several channels at once,
 * frames of odd lengths: under UBSan a misaligned header access fails this. */
static void
test_echo (Fixture *fx, gconstpointer data)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(Tunnel) listener = NULL;
  g_autoptr(Tunnel) connector = NULL;

  server_start (fx, FALSE);
  listener = tunnel_new_listener (fx->ends[0], fx->listen_path, &error);
  g_assert_no_error (error);
  connector = tunnel_new_connector (fx->ends[1], fx->nbd_path);
  tunnel_set_closed_func (connector, closed_cb, fx);
  run_clients (fx);
  g_assert_false (fx->closed);
}

/* ---- compression: negotiated, and with an older peer ---------------------- */

typedef struct {
  int listener;             /* a TunnelCompress, or V1: the frozen pre-compression tunnel */
  int connector;
  gboolean zstd;            /* compression must be agreed */
} Pair;

#define V1 (-1)

static const Pair pairs[] = {
  { TUNNEL_COMPRESS_ZSTD, TUNNEL_COMPRESS_ZSTD, TRUE },
  { TUNNEL_COMPRESS_AUTO, TUNNEL_COMPRESS_ZSTD, TRUE },    /* the connector compresses */
  { TUNNEL_COMPRESS_ZSTD, TUNNEL_COMPRESS_NONE, FALSE },
  { TUNNEL_COMPRESS_NONE, TUNNEL_COMPRESS_ZSTD, FALSE },
  { TUNNEL_COMPRESS_ZSTD, V1, FALSE },                     /* an old endpoint */
  { V1, TUNNEL_COMPRESS_ZSTD, FALSE },                     /* an old source */
};
static const char *const pair_names[] = {
  "zstd-zstd", "auto-zstd", "zstd-none", "none-zstd", "zstd-v1", "v1-zstd",
};

/* The stream carried the clients' bytes compressed (the echo data compresses
 * well) exactly when compression was agreed. */
static void
assert_compression (Tunnel *tunnel, int mode, gboolean zstd)
{
  guint64 data, wire;
  gboolean agreed;

  tunnel_get_stats (tunnel, &data, &wire, &agreed);
  g_test_message ("%" G_GUINT64_FORMAT " bytes as %" G_GUINT64_FORMAT, data, wire);
  g_assert_cmpint (agreed, ==, zstd);
  g_assert_cmpuint (data, ==, 3 * ECHO_BYTES);
  if (zstd && mode == TUNNEL_COMPRESS_ZSTD)
    g_assert_cmpuint (wire, <, data / 4);
  else if (!zstd)
    g_assert_cmpuint (wire, >, data);
}

static void
test_compress (Fixture *fx, gconstpointer data)
{
  const Pair *pair = data;
  g_autoptr(GError) error = NULL;
  Tunnel *listener = NULL, *connector = NULL;
  TunnelV1 *listener1 = NULL, *connector1 = NULL;

  server_start (fx, FALSE);
  if (pair->listener == V1)
    listener1 = tunnel_v1_new_listener (fx->ends[0], fx->listen_path, &error);
  else
    listener = tunnel_new_listener (fx->ends[0], fx->listen_path, &error);
  g_assert_no_error (error);
  if (pair->connector == V1)
    connector1 = tunnel_v1_new_connector (fx->ends[1], fx->nbd_path);
  else
    connector = tunnel_new_connector (fx->ends[1], fx->nbd_path);
  if (connector != NULL)
    tunnel_set_compress (connector, pair->connector);
  if (listener != NULL)
    tunnel_set_compress (listener, pair->listener);
  run_clients (fx);
  if (listener != NULL)
    assert_compression (listener, pair->listener, pair->zstd);
  if (connector != NULL)
    assert_compression (connector, pair->connector, pair->zstd);
  tunnel_free (listener);
  tunnel_free (connector);
  tunnel_v1_free (listener1);
  tunnel_v1_free (connector1);
}

/* ---- a hostile peer: raw frames into a connector tunnel ------------------ */

enum { OPEN = 1, DATA = 2, CREDIT = 3, CLOSE = 4, ZDATA = 5 };

static void
frame_append (GByteArray *out, guint32 id, guint8 type, const guint8 *payload, guint32 len)
{
  guint8 header[9] = { id >> 24, id >> 16, id >> 8, id, type, len >> 24, len >> 16, len >> 8, len };

  g_byte_array_append (out, header, sizeof header);
  if (len > 0)
    g_byte_array_append (out, payload, len);
}

typedef struct {
  GIOStream *stream;
  GByteArray *frames;
} RawPeer;

static gpointer
raw_peer_thread (gpointer data)
{
  RawPeer *peer = data;

  /* fails once the tunnel gives up on the stream: that is the point */
  g_output_stream_write_all (g_io_stream_get_output_stream (peer->stream), peer->frames->data,
                             peer->frames->len, NULL, NULL, NULL);
  return NULL;
}

/* Sends @frames to a connector tunnel whose NBD server never reads (@echo:
 * one that echoes) and waits up to 10 s for the tunnel to close (fx->closed). */
static void
run_hostile (Fixture *fx, GByteArray *frames, gboolean echo)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GSocketListener) mute = g_socket_listener_new ();  /* connects, never accepts */
  g_autoptr(GSocketAddress) addr = g_unix_socket_address_new (fx->nbd_path);
  g_autoptr(Tunnel) connector = NULL;
  RawPeer peer = { fx->ends[0], frames };
  GThread *thread;

  if (echo)
    server_start (fx, FALSE);
  else
    g_socket_listener_add_address (mute, addr, G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_DEFAULT,
                                   NULL, NULL, &error);
  g_assert_no_error (error);
  connector = tunnel_new_connector (fx->ends[1], fx->nbd_path);
  tunnel_set_compress (connector, TUNNEL_COMPRESS_ZSTD);
  tunnel_set_closed_func (connector, closed_cb, fx);
  thread = g_thread_new ("raw-peer", raw_peer_thread, &peer);
  iterate_until (&fx->closed, 10);
  g_clear_pointer (&connector, tunnel_free);  /* closes the stream: the writer ends */
  g_thread_join (thread);
}

/* DATA past the 16 MiB window on a channel whose NBD server is stuck: without
 * the check the tunnel buffered all of it (1.5 GiB in the issue). */
static void
test_data_beyond_window (Fixture *fx, gconstpointer data)
{
  g_autoptr(GByteArray) frames = g_byte_array_new ();
  g_autofree guint8 *chunk = g_malloc0 (1024 * 1024);

  frame_append (frames, 1, OPEN, NULL, 0);
  /* the window, plus what the stuck server's socket buffer takes (credit comes
   * back for that), plus more */
  for (guint i = 0; i <= TUNNEL_WINDOW / (1024 * 1024) + 8; i++)
    frame_append (frames, 1, DATA, chunk, 1024 * 1024);
  run_hostile (fx, frames, FALSE);
  g_assert_true (fx->closed);
  g_assert_error (fx->closed_error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED);
  g_assert_cmpstr (fx->closed_error->message, ==, "tunnel: the peer broke the protocol: "
                   "1048576 bytes of DATA on channel 1 beyond the credit it was given");
}

/* More channels than TUNNEL_MAX_CHANNELS, each kept open by the echo server. */
static void
test_too_many_channels (Fixture *fx, gconstpointer data)
{
  g_autoptr(GByteArray) frames = g_byte_array_new ();
  g_autofree char *expected = g_strdup_printf ("tunnel: the peer broke the protocol: more than "
                                               "%d channels open", TUNNEL_MAX_CHANNELS);

  for (guint i = 1; i <= TUNNEL_MAX_CHANNELS + 1; i++)
    frame_append (frames, i, OPEN, NULL, 0);
  run_hostile (fx, frames, TRUE);
  g_assert_true (fx->closed);
  g_assert_cmpstr (fx->closed_error->message, ==, expected);
}

/* CREDIT for bytes never sent. */
static void
test_credit_never_sent (Fixture *fx, gconstpointer data)
{
  g_autoptr(GByteArray) frames = g_byte_array_new ();
  static const guint8 one[4] = { 0, 0, 0, 1 };

  frame_append (frames, 1, OPEN, NULL, 0);
  frame_append (frames, 1, CREDIT, one, sizeof one);
  run_hostile (fx, frames, FALSE);
  g_assert_true (fx->closed);
  g_assert_cmpstr (fx->closed_error->message, ==, "tunnel: the peer broke the protocol: "
                   "more CREDIT on channel 1 than was sent");
}

/* ---- a peer that never reads: our CREDIT frames must not pile up ---------- */

#define TINY_FRAMES 100000

typedef struct {
  GIOStream *stream;
  guint credit_frames;
  guint64 credit;
  gint done;
} Miser;

static gpointer
miser_thread (gpointer data)
{
  Miser *miser = data;
  g_autoptr(GByteArray) frames = g_byte_array_new ();
  static const guint8 byte = 0x5a;
  guint8 header[9], value[4];

  frame_append (frames, 1, OPEN, NULL, 0);
  for (guint i = 0; i < TINY_FRAMES; i++)
    frame_append (frames, 1, DATA, &byte, 1);
  if (!g_output_stream_write_all (g_io_stream_get_output_stream (miser->stream), frames->data,
                                  frames->len, NULL, NULL, NULL))
    return g_atomic_int_set (&miser->done, 1), NULL;
  /* read nothing until the tunnel has written every byte out (and owes all the
   * credit: the stream reads fast enough that we would have finished writing
   * long before), then what came back: every CREDIT, until all is credited */
  while (g_atomic_int_get (&sink_bytes) < TINY_FRAMES)
    g_usleep (1000);
  while (miser->credit < TINY_FRAMES
         && g_input_stream_read_all (g_io_stream_get_input_stream (miser->stream), header, 9,
                                     NULL, NULL, NULL)
         && header[4] == CREDIT
         && g_input_stream_read_all (g_io_stream_get_input_stream (miser->stream), value, 4,
                                     NULL, NULL, NULL))
    {
      miser->credit_frames++;
      miser->credit += (guint32) value[0] << 24 | value[1] << 16 | value[2] << 8 | value[3];
    }
  g_atomic_int_set (&miser->done, 1);
  return NULL;
}

/* 100000 one-byte DATA frames and the peer reads nothing meanwhile: the credit
 * for them comes back in far fewer frames (the old code queued one CREDIT per
 * DATA frame, without bound, for as long as the peer did not read). */
static void
test_credit_coalesced (Fixture *fx, gconstpointer data)
{
  g_autoptr(Tunnel) connector = NULL;
  Miser miser = { fx->ends[0], 0, 0, 0 };
  GThread *thread;

  g_socket_set_timeout (g_socket_connection_get_socket (G_SOCKET_CONNECTION (fx->ends[0])), 20);
  g_atomic_int_set (&sink_bytes, 0);
  server_start (fx, TRUE);
  connector = tunnel_new_connector (fx->ends[1], fx->nbd_path);
  tunnel_set_closed_func (connector, closed_cb, fx);
  thread = g_thread_new ("miser", miser_thread, &miser);
  iterate_until (&miser.done, 30);
  g_assert_true (g_atomic_int_get (&miser.done));
  g_thread_join (thread);
  g_test_message ("credit for %" G_GUINT64_FORMAT " bytes in %u CREDIT frames", miser.credit,
                  miser.credit_frames);
  g_assert_false (fx->closed);
  g_assert_cmpuint (miser.credit, ==, TINY_FRAMES);
  g_assert_cmpuint (miser.credit_frames, <, TINY_FRAMES / 2);
}

/* Over pipes, as --tunnel-command runs: freeing a tunnel while a write to the
 * stream is pending (the far end is slow to read) must still close the pipe, so
 * the far end reads EOF once it has drained it.  It used to stay open — a
 * stream refuses to close with an operation pending — and the far end was
 * killed 5 s later, most of a short tunnelled copy's time. */
static void
test_free_closes_pipe (Fixture *fx, gconstpointer data)
{
  int to_peer[2], from_peer[2];
  g_autoptr(GInputStream) in = NULL;
  g_autoptr(GOutputStream) out = NULL;
  g_autoptr(GIOStream) stream = NULL;
  const guint8 open_frame[9] = { 0, 0, 0, 1, 1, 0, 0, 0, 0 };  /* OPEN channel 1 */
  char buf[65536];
  gssize n;
  Tunnel *connector;

  g_assert_true (g_unix_open_pipe (to_peer, FD_CLOEXEC, NULL));
  g_assert_true (g_unix_open_pipe (from_peer, FD_CLOEXEC, NULL));
  g_assert_cmpint (fcntl (to_peer[0], F_SETFL, O_NONBLOCK), ==, 0);
  g_assert_cmpint (fcntl (to_peer[1], F_SETFL, O_NONBLOCK), ==, 0);
  memset (buf, 0, sizeof buf);
  while (write (to_peer[1], buf, sizeof buf) > 0)
    ;  /* the far end is not reading: the pipe is full */
  in = g_unix_input_stream_new (from_peer[0], TRUE);
  out = g_unix_output_stream_new (to_peer[1], TRUE);
  stream = g_simple_io_stream_new (in, out);
  connector = tunnel_new_connector (stream, fx->nbd_path);
  /* nothing listens at nbd_path: the channel fails and its CLOSE waits on the pipe */
  g_assert_cmpint (write (from_peer[1], open_frame, sizeof open_frame), ==, sizeof open_frame);
  while (!g_output_stream_has_pending (out))
    g_main_context_iteration (NULL, TRUE);
  g_clear_object (&stream);
  tunnel_free (connector);
  while ((n = read (to_peer[0], buf, sizeof buf)) > 0)
    ;
  g_assert_cmpint (n, ==, 0);  /* EOF, not EAGAIN */
  close (to_peer[0]);
  close (from_peer[1]);
}

/* ---- hostile ZDATA ---------------------------------------------------------- */

/* The listener's offer, as a new source sends it. */
static void
append_hello (GByteArray *frames)
{
  frame_append (frames, 0, CLOSE, (const guint8 *) "blkmig-tunnel zstd", 18);
}

/* A ZDATA frame for channel 1 claiming @n bytes, carrying @real bytes of 0x5a
 * compressed (a zstd frame: the start of a stream), cut short by @cut bytes;
 * @garbage: not zstd at all. */
static void
append_zdata (GByteArray *frames, guint32 n, gsize real, gsize cut, gboolean garbage)
{
  g_autofree guint8 *plain = g_malloc (real);
  gsize bound = ZSTD_compressBound (real);
  g_autofree guint8 *payload = g_malloc (4 + bound);
  gsize len;

  memset (plain, 0x5a, real);
  len = ZSTD_compress (payload + 4, bound, plain, real, 1);
  g_assert_false (ZSTD_isError (len));
  payload[0] = n >> 24, payload[1] = n >> 16, payload[2] = n >> 8, payload[3] = n;
  if (garbage)
    payload[4] ^= 0xff;  /* the zstd magic number */
  frame_append (frames, 1, ZDATA, payload, 4 + len - cut);
}

static void
assert_violation (Fixture *fx, const char *what)
{
  g_autofree char *expected = g_strdup_printf ("tunnel: the peer broke the protocol: %s", what);

  g_assert_true (fx->closed);
  g_assert_error (fx->closed_error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED);
  g_assert_cmpstr (fx->closed_error->message, ==, expected);
}

/* Each malformed ZDATA ends the stream with its own reason; the bomb (16 MiB +
 * 1 MiB that compress to almost nothing) stops at the window like DATA. */
static void
test_hostile_zdata (Fixture *fx, gconstpointer data)
{
  const char *what = data;
  g_autoptr(GByteArray) frames = g_byte_array_new ();

  if (!g_str_equal (what, "unagreed"))
    append_hello (frames);
  frame_append (frames, 1, OPEN, NULL, 0);
  if (g_str_equal (what, "unagreed"))
    append_zdata (frames, 4096, 4096, 0, FALSE);
  else if (g_str_equal (what, "size"))
    append_zdata (frames, 4096, 8192, 0, FALSE);
  else if (g_str_equal (what, "cut"))
    append_zdata (frames, 1 << 20, 1 << 20, 5, FALSE);
  else if (g_str_equal (what, "garbage"))
    append_zdata (frames, 4096, 4096, 0, TRUE);
  else if (g_str_equal (what, "huge"))
    append_zdata (frames, 3 << 20, 3 << 20, 0, FALSE);
  else
    for (guint i = 0; i <= TUNNEL_WINDOW / (1 << 20) + 8; i++)  /* as data-beyond-window */
      append_zdata (frames, 1 << 20, 1 << 20, 0, FALSE);
  run_hostile (fx, frames, FALSE);
  if (g_str_equal (what, "unagreed"))
    assert_violation (fx, "ZDATA on channel 1 without agreeing to compression");
  else if (g_str_equal (what, "size") || g_str_equal (what, "cut"))
    assert_violation (fx, "a ZDATA frame whose zstd data has another size on channel 1");
  else if (g_str_equal (what, "garbage"))
    assert_violation (fx, "a ZDATA frame that does not decompress on channel 1");
  else if (g_str_equal (what, "huge"))
    assert_violation (fx, "a ZDATA frame of an impossible length on channel 1");
  else
    assert_violation (fx, "ZDATA beyond the credit it was given on channel 1");
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add ("/tunnel/echo", Fixture, NULL, fixture_setup, test_echo, fixture_teardown);
  g_test_add ("/tunnel/hostile/data-beyond-window", Fixture, NULL, fixture_setup,
              test_data_beyond_window, fixture_teardown);
  g_test_add ("/tunnel/hostile/too-many-channels", Fixture, NULL, fixture_setup,
              test_too_many_channels, fixture_teardown);
  g_test_add ("/tunnel/hostile/credit-coalesced", Fixture, NULL, fixture_setup,
              test_credit_coalesced, fixture_teardown);
  g_test_add ("/tunnel/hostile/credit-never-sent", Fixture, NULL, fixture_setup,
              test_credit_never_sent, fixture_teardown);
  for (guint i = 0; i < G_N_ELEMENTS (pairs); i++)
    {
      g_autofree char *path = g_strdup_printf ("/tunnel/compress/%s", pair_names[i]);
      g_test_add (path, Fixture, &pairs[i], fixture_setup, test_compress, fixture_teardown);
    }
  for (guint i = 0; i < 6; i++)
    {
      static const char *const cases[] = { "unagreed", "size", "cut", "garbage", "huge", "bomb" };
      g_autofree char *path = g_strdup_printf ("/tunnel/hostile/zdata-%s", cases[i]);
      g_test_add (path, Fixture, cases[i], fixture_setup, test_hostile_zdata, fixture_teardown);
    }
  g_test_add ("/tunnel/free-closes-pipe", Fixture, NULL, fixture_setup, test_free_closes_pipe,
              fixture_teardown);
  return g_test_run ();
}
