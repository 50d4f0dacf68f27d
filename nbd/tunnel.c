/* NBD tunnel: many NBD connections multiplexed over one byte stream, with flow control. */
#include "nbd/tunnel.h"

#include <gio/gunixsocketaddress.h>
#include <gio/gfiledescriptorbased.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <glib/gstdio.h>

#include "common/debug.h"
#include "common/error.h"
#include "nbd/tunnel-zstd.h"

enum { FRAME_OPEN = 1, FRAME_DATA = 2, FRAME_CREDIT = 3, FRAME_CLOSE = 4, FRAME_ZDATA = 5 };

/* The negotiation rides on CLOSE frames for this channel, which older peers ignore. */
#define HELLO_CHANNEL 0
#define HELLO_OFFER "blkmig-tunnel zstd"
#define HELLO_ACCEPT "zstd"

#define FRAME_HEADER 9
#define READ_CHUNK (1024 * 1024)
#define FRAME_MAX (2 * 1024 * 1024)
/* Frames handed to one writev: fewer syscalls and wake-ups per byte. */
#define WRITEV_FRAMES 64
/* Send buffer asked for the connections to the NBD server (channel_grow_sndbuf). */
#define LOCAL_SNDBUF (2 * 1024 * 1024)
/* The stream is read this much at a time (tunnel_parse). */
#define IN_BUF (1024 * 1024)
/* What we send ahead of the peer's credit at most, per channel: the receiver
 * grants TUNNEL_WINDOW (older peers rely on it), but where the destination
 * writes slower than the stream brings data (it always does when local) every
 * byte of it sits in the receiver's memory: 16 MiB windows put tunnel-endpoint
 * at 34 MiB.  8 MiB is still 3x the bandwidth-delay product of 1 Gbit/s at
 * 20 ms RTT. */
#define SEND_WINDOW (8 * 1024 * 1024)
/* Local reads pause while this much is queued for the stream. */
#define OUTQ_HIGH (8 * 1024 * 1024)

typedef struct {
  Tunnel *tunnel;
  guint32 id;
  gint refs;
  GIOStream *conn;            /* the local NBD connection; NULL until connected */
  gint64 credit;              /* bytes we may still send the peer */
  gint64 window;              /* bytes the peer may still send us */
  gint64 owed;                /* bytes written out, not yet in a CREDIT frame */
  gboolean owing;             /* in tunnel->owing */
  gboolean reading;
  gboolean writing;
  gboolean local_eof;         /* CLOSE sent */
  gboolean peer_closed;       /* CLOSE received */
  gboolean dead;
  GQueue writes;              /* GBytes for the local connection */
  GCancellable *cancellable;
  guint8 *rbuf;               /* the frame being read into: header space, then data */
  TunnelZstdChannel *zstd;    /* its compression streams, once used */
  gssize rsize;               /* data it has room for */
} Channel;

struct _Tunnel {
  gint refs;                  /* the owner's, and one per stream operation in flight */
  GIOStream *stream;
  GSocketService *service;    /* listener side */
  char *listen_path;
  char *nbd_path;             /* connector side */
  GHashTable *channels;       /* id → Channel */
  guint32 next_id;
  GQueue outq;                /* GBytes frames for the stream */
  GQueue owing;               /* Channels (a ref each) with credit to return */
  gsize outq_bytes;
  guint out_frames;           /* frames of the writev in flight, 0 = none */
  GOutputVector out_vecs[WRITEV_FRAMES];
  guint8 *in_buf;             /* IN_BUF bytes read from the stream */
  gsize in_len;               /* of them not yet dispatched */
  guint8 header[FRAME_HEADER]; /* the frame whose payload is read on its own */
  gsize payload_have;         /* of it, bytes that were in in_buf */
  guint8 *payload;
  gboolean closed;
  GError *error;
  GCancellable *cancellable;
  TunnelClosedFunc closed_func;
  gpointer closed_data;
  TunnelCompress compress;    /* what this end sends */
  gboolean zstd_agreed;       /* both ends speak ZDATA */
  TunnelZstd *zstd;
  guint64 data_bytes;         /* the connections' bytes sent */
  guint64 wire_bytes;         /* what they took on the stream */
  int out_fd;                 /* the stream's descriptor, for tunnel_backlog; -1: none */
  gboolean out_is_pipe;
};

/* Big-endian u32 at any address: frames put them at odd offsets. */
static guint32
get_be32 (const guint8 *p)
{
  guint32 be;

  memcpy (&be, p, sizeof be);
  return GUINT32_FROM_BE (be);
}

static void
put_be32 (guint8 *p, guint32 value)
{
  guint32 be = GUINT32_TO_BE (value);

  memcpy (p, &be, sizeof be);
}

static void tunnel_read (Tunnel *tunnel);
static void tunnel_unref (Tunnel *tunnel);
static void tunnel_close (Tunnel *tunnel, GError *error);

/* Ends the stream: the peer broke the protocol (a broken or hostile peer). */
static void G_GNUC_PRINTF (2, 3)
tunnel_violation (Tunnel *tunnel, const char *format, ...)
{
  va_list args;
  g_autofree char *what = NULL;

  va_start (args, format);
  what = g_strdup_vprintf (format, args);
  va_end (args);
  tunnel_close (tunnel, g_error_new (BLKMIG_ERROR, BLKMIG_ERROR_FAILED,
                                     "tunnel: the peer broke the protocol: %s", what));
}

/* The source's end (QEMU's NBD clients connect to it); else the connector.  Not
 * tunnel->service: that goes at shutdown. */
static gboolean
tunnel_is_listener (const Tunnel *tunnel)
{
  return tunnel->nbd_path == NULL;
}

static Tunnel *
tunnel_ref (Tunnel *tunnel)
{
  tunnel->refs++;
  return tunnel;
}
static void channel_read (Channel *ch);
static void channel_write (Channel *ch);
static void tunnel_flush (Tunnel *tunnel);

/* ---- channels ----------------------------------------------------------- */

static Channel *
channel_ref (Channel *ch)
{
  ch->refs++;
  return ch;
}

static void
channel_unref (Channel *ch)
{
  if (--ch->refs > 0)
    return;
  g_queue_clear_full (&ch->writes, (GDestroyNotify) g_bytes_unref);
  g_free (ch->rbuf);
  tunnel_zstd_channel_free (ch->zstd);
  g_clear_object (&ch->conn);
  g_clear_object (&ch->cancellable);
  g_free (ch);
}

static Channel *
channel_new (Tunnel *tunnel, guint32 id, GIOStream *conn)
{
  Channel *ch = g_new0 (Channel, 1);

  ch->tunnel = tunnel;
  ch->id = id;
  ch->refs = 1;                       /* the table's */
  ch->conn = conn != NULL ? g_object_ref (conn) : NULL;
  ch->credit = TUNNEL_WINDOW;
  ch->window = TUNNEL_WINDOW;
  ch->cancellable = g_cancellable_new ();
  g_queue_init (&ch->writes);
  g_hash_table_insert (tunnel->channels, GUINT_TO_POINTER (id), ch);
  return ch;
}

static void
channel_destroy (Channel *ch)
{
  if (ch->dead)
    return;
  ch->dead = TRUE;
  g_cancellable_cancel (ch->cancellable);
  if (ch->conn != NULL)
    g_io_stream_close (ch->conn, NULL, NULL);
  g_hash_table_remove (ch->tunnel->channels, GUINT_TO_POINTER (ch->id));  /* unrefs */
}

/* ---- the stream: writing ------------------------------------------------ */

/* Puts the header on @frame (FRAME_HEADER + len bytes, payload in place) and
 * wraps it for the output queue. */
static GBytes *
frame_finish (guint32 id, guint8 type, guint8 *frame, guint32 len)
{
  put_be32 (frame, id);
  frame[4] = type;
  put_be32 (frame + 5, len);
  return g_bytes_new_take (frame, FRAME_HEADER + len);
}

/* Queues @frame (FRAME_HEADER + len bytes, payload already in place; taken). */
static void
tunnel_queue (Tunnel *tunnel, guint32 id, guint8 type, guint8 *frame, guint32 len)
{
  if (tunnel->closed)
    {
      g_free (frame);
      return;
    }
  g_queue_push_tail (&tunnel->outq, frame_finish (id, type, frame, len));
  tunnel->outq_bytes += FRAME_HEADER + len;
  if (type == FRAME_DATA || type == FRAME_ZDATA)
    tunnel->wire_bytes += FRAME_HEADER + len;
  tunnel_flush (tunnel);
}

/* @ch wrote @n bytes out: the peer may send that much more.  The credit goes
 * out with the next write to the stream, one CREDIT per channel however many
 * writes it sums up, so a peer that does not read cannot make us pile them up. */
static void
channel_owe (Channel *ch, gsize n)
{
  ch->owed += n;
  if (!ch->owing)
    {
      ch->owing = TRUE;
      g_queue_push_tail (&ch->tunnel->owing, channel_ref (ch));
    }
  tunnel_flush (ch->tunnel);
}

/* Puts a CREDIT for every channel that owes one at the head of the output queue
 * (credit is never held up behind data); the window grows as it is sent. */
static void
tunnel_queue_credits (Tunnel *tunnel)
{
  Channel *ch;

  while ((ch = g_queue_pop_head (&tunnel->owing)) != NULL)
    {
      guint8 *frame = g_malloc (FRAME_HEADER + 4);

      ch->owing = FALSE;
      put_be32 (frame + FRAME_HEADER, ch->owed);  /* at most one window */
      if (ch->dead)
        g_free (frame);
      else
        {
          g_queue_push_head (&tunnel->outq, frame_finish (ch->id, FRAME_CREDIT, frame, 4));
          tunnel->outq_bytes += FRAME_HEADER + 4;
          ch->window += ch->owed;
        }
      ch->owed = 0;
      channel_unref (ch);
    }
}

static void
tunnel_send (Tunnel *tunnel, guint32 id, guint8 type, const void *data, guint32 len)
{
  guint8 *frame = g_malloc (FRAME_HEADER + len);

  if (len > 0)
    memcpy (frame + FRAME_HEADER, data, len);
  tunnel_queue (tunnel, id, type, frame, len);
}

static void
tunnel_close (Tunnel *tunnel, GError *error)
{
  GList *channels;

  if (tunnel->closed)
    {
      g_clear_error (&error);
      return;
    }
  blkmig_debug (BLKMIG_DEBUG_TUNNEL, "tunnel: closed: %s", error != NULL ? error->message : "end of stream");
  tunnel->closed = TRUE;
  tunnel->error = error;
  g_cancellable_cancel (tunnel->cancellable);
  if (tunnel->service != NULL)
    {
      g_socket_service_stop (tunnel->service);
      g_socket_listener_close (G_SOCKET_LISTENER (tunnel->service));  /* reconnects: refused */
    }
  channels = g_hash_table_get_values (tunnel->channels);
  for (GList *l = channels; l != NULL; l = l->next)
    channel_destroy (l->data);
  g_list_free (channels);
  if (tunnel->closed_func != NULL)
    tunnel->closed_func (tunnel, tunnel->error, tunnel->closed_data);
}

void
tunnel_set_closed_func (Tunnel *tunnel, TunnelClosedFunc func, gpointer user_data)
{
  tunnel->closed_func = func;
  tunnel->closed_data = user_data;
}

/* Local reads that paused for a full output queue may go on. */
static void
tunnel_resume_reads (Tunnel *tunnel)
{
  GHashTableIter iter;
  gpointer value;

  g_hash_table_iter_init (&iter, tunnel->channels);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    channel_read (value);
}

static void
tunnel_written_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Tunnel *tunnel = user_data;
  g_autoptr(GError) error = NULL;

  if (!g_output_stream_writev_all_finish (G_OUTPUT_STREAM (source), result, NULL, &error))
    {
      tunnel_close (tunnel, g_steal_pointer (&error));
      {
        tunnel_unref (tunnel);
        return;
      }
    }
  for (; tunnel->out_frames > 0; tunnel->out_frames--)
    {
      g_autoptr(GBytes) frame = g_queue_pop_head (&tunnel->outq);
      tunnel->outq_bytes -= g_bytes_get_size (frame);
    }
  tunnel_flush (tunnel);
  if (tunnel->outq_bytes < OUTQ_HIGH / 2)
    tunnel_resume_reads (tunnel);
  tunnel_unref (tunnel);
}

static void
tunnel_flush (Tunnel *tunnel)
{
  guint n = 0;

  if (tunnel->out_frames > 0 || tunnel->closed)
    return;
  tunnel_queue_credits (tunnel);
  for (GList *l = tunnel->outq.head; l != NULL && n < WRITEV_FRAMES; l = l->next, n++)
    tunnel->out_vecs[n].buffer = g_bytes_get_data (l->data, &tunnel->out_vecs[n].size);
  if (n == 0)
    return;
  tunnel->out_frames = n;
  g_output_stream_writev_all_async (g_io_stream_get_output_stream (tunnel->stream),
                                    tunnel->out_vecs, n, G_PRIORITY_DEFAULT, tunnel->cancellable,
                                    tunnel_written_cb, tunnel_ref (tunnel));
}

/* ---- local connections -------------------------------------------------- */

static void
channel_local_ended (Channel *ch)
{
  if (!ch->local_eof)
    tunnel_send (ch->tunnel, ch->id, FRAME_CLOSE, NULL, 0);
  ch->local_eof = TRUE;
  channel_destroy (ch);
}

/* The descriptor the stream finally writes to (a socket, or a pipe), through TLS
 * and GSimpleIOStream; -1 when there is none. */
static int
stream_out_fd (GIOStream *stream)
{
  GOutputStream *out = g_io_stream_get_output_stream (stream);
  g_autoptr(GIOStream) base = NULL;

  if (G_IS_SOCKET_CONNECTION (stream))
    return g_socket_get_fd (g_socket_connection_get_socket (G_SOCKET_CONNECTION (stream)));
  if (G_IS_TLS_CONNECTION (stream))
    {
      g_object_get (stream, "base-io-stream", &base, NULL);
      return base != NULL ? stream_out_fd (base) : -1;
    }
  return G_IS_FILE_DESCRIPTOR_BASED (out)
         ? g_file_descriptor_based_get_fd (G_FILE_DESCRIPTOR_BASED (out)) : -1;
}

/* Bytes waiting to go out: our queue and what the kernel holds unsent on the
 * stream's socket (SIOCOUTQ) or pipe (FIONREAD) — its buffers, several MiB on
 * a slow TCP link, would hide a backlog from our queue alone. */
static gsize
tunnel_backlog (Tunnel *tunnel)
{
  int queued = 0;

  if (tunnel->out_fd >= 0
      && ioctl (tunnel->out_fd, tunnel->out_is_pipe ? FIONREAD : SIOCOUTQ, &queued) != 0)
    queued = 0;
  return tunnel->outq_bytes + MAX (queued, 0);
}

/* What @ch may still send: the peer's credit, less what we leave unused
 * (SEND_WINDOW of the TUNNEL_WINDOW it grants). */
static gint64
channel_usable (const Channel *ch)
{
  return ch->credit - (TUNNEL_WINDOW - SEND_WINDOW);
}

/* Sends the @n bytes read into ch->rbuf: as ZDATA when compression is agreed
 * and wanted (tunnel_zstd_want), else as they are. */
static void
channel_send_data (Channel *ch, guint32 n)
{
  Tunnel *tunnel = ch->tunnel;
  guint8 *packed = NULL;
  guint32 len = 0;

  tunnel->data_bytes += n;
  if (tunnel->zstd_agreed && tunnel->compress != TUNNEL_COMPRESS_NONE
      && tunnel_zstd_want (tunnel->zstd, n, tunnel_backlog (tunnel),
                           channel_usable (ch) - n < READ_CHUNK))
    packed = tunnel_zstd_pack (tunnel->zstd, &ch->zstd, ch->rbuf + FRAME_HEADER, n,
                               FRAME_HEADER, &len);
  if (packed != NULL)
    {
      g_clear_pointer (&ch->rbuf, g_free);
      tunnel_queue (tunnel, ch->id, FRAME_ZDATA, packed, len);
    }
  else
    tunnel_queue (tunnel, ch->id, FRAME_DATA, g_steal_pointer (&ch->rbuf), n);
}

/* After a read of @n bytes, what else the connection holds already, up to the
 * frame's size: fewer, larger frames for the same main-loop wake-up.  An error
 * or EOF here is left for the next read to see. */
static gssize
channel_read_more (Channel *ch, gssize n)
{
  GInputStream *in = g_io_stream_get_input_stream (ch->conn);
  gssize more, total = 0;

  if (!G_IS_POLLABLE_INPUT_STREAM (in)
      || !g_pollable_input_stream_can_poll (G_POLLABLE_INPUT_STREAM (in)))
    return 0;
  while (n + total < ch->rsize
         && (more = g_pollable_input_stream_read_nonblocking (
                 G_POLLABLE_INPUT_STREAM (in), ch->rbuf + FRAME_HEADER + n + total,
                 ch->rsize - n - total, NULL, NULL)) > 0)
    total += more;
  return total;
}

static void
channel_read_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Channel *ch = user_data;
  g_autoptr(GError) error = NULL;
  gssize n = g_input_stream_read_finish (G_INPUT_STREAM (source), result, &error);

  ch->reading = FALSE;
  if (!ch->dead && n > 0)
    {
      n += channel_read_more (ch, n);
      channel_send_data (ch, n);
      ch->credit -= n;
      channel_read (ch);
    }
  else if (!ch->dead)
    channel_local_ended (ch);  /* EOF or error: the NBD connection is over */
  channel_unref (ch);
}

static void
channel_read (Channel *ch)
{
  gint64 usable = channel_usable (ch);

  if (ch->dead || ch->reading || ch->conn == NULL || ch->local_eof || usable <= 0
      || ch->tunnel->outq_bytes >= OUTQ_HIGH)
    return;
  ch->reading = TRUE;
  /* read straight into the frame that will carry it: no copy on the way out */
  g_free (ch->rbuf);
  ch->rsize = MIN (usable, READ_CHUNK);
  ch->rbuf = g_malloc (FRAME_HEADER + ch->rsize);
  g_input_stream_read_async (g_io_stream_get_input_stream (ch->conn), ch->rbuf + FRAME_HEADER,
                             ch->rsize, G_PRIORITY_DEFAULT, ch->cancellable, channel_read_cb,
                             channel_ref (ch));
}

static void
channel_written_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Channel *ch = user_data;
  g_autoptr(GError) error = NULL;
  g_autoptr(GBytes) data = NULL;

  ch->writing = FALSE;
  if (!g_output_stream_write_all_finish (G_OUTPUT_STREAM (source), result, NULL, &error))
    {
      if (!ch->dead)
        channel_local_ended (ch);
      {
        channel_unref (ch);
        return;
      }
    }
  data = g_queue_pop_head (&ch->writes);
  if (!ch->dead)
    channel_owe (ch, g_bytes_get_size (data));
  channel_write (ch);
  channel_unref (ch);
}

static void
channel_write (Channel *ch)
{
  GBytes *data;

  if (ch->dead || ch->writing || ch->conn == NULL)
    return;
  data = g_queue_peek_head (&ch->writes);
  if (data == NULL)
    {
      if (ch->peer_closed)
        channel_destroy (ch);  /* everything the peer sent is out */
      return;
    }
  ch->writing = TRUE;
  g_output_stream_write_all_async (g_io_stream_get_output_stream (ch->conn),
                                   g_bytes_get_data (data, NULL), g_bytes_get_size (data),
                                   G_PRIORITY_DEFAULT, ch->cancellable, channel_written_cb,
                                   channel_ref (ch));
}

/* ---- the stream: reading ------------------------------------------------ */

/* The NBD server's socket takes a whole frame or more per write (the default
 * ~200 KiB made every 1 MiB a handful of writes and wake-ups); root may exceed
 * wmem_max.  Best effort: the default works, just with more wake-ups. */
static void
channel_grow_sndbuf (Channel *ch)
{
  GSocket *sock = g_socket_connection_get_socket (G_SOCKET_CONNECTION (ch->conn));

  if (!g_socket_set_option (sock, SOL_SOCKET, SO_SNDBUFFORCE, LOCAL_SNDBUF, NULL))
    g_socket_set_option (sock, SOL_SOCKET, SO_SNDBUF, LOCAL_SNDBUF, NULL);
}

static void
channel_connected_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Channel *ch = user_data;
  g_autoptr(GError) error = NULL;
  GSocketConnection *conn = g_socket_client_connect_finish (G_SOCKET_CLIENT (source), result,
                                                            &error);

  if (ch->dead)
    g_clear_object (&conn);
  else if (conn == NULL)
    {
      blkmig_debug (BLKMIG_DEBUG_TUNNEL, "tunnel: cannot reach %s: %s", ch->tunnel->nbd_path,
                    error->message);
      channel_local_ended (ch);
    }
  else
    {
      ch->conn = G_IO_STREAM (conn);
      channel_grow_sndbuf (ch);
      channel_write (ch);
      channel_read (ch);
    }
  channel_unref (ch);
}

static void
tunnel_open_channel (Tunnel *tunnel, guint32 id)
{
  g_autoptr(GSocketClient) client = g_socket_client_new ();
  g_autoptr(GSocketAddress) addr = g_unix_socket_address_new (tunnel->nbd_path);
  Channel *ch;

  if (tunnel->nbd_path == NULL || g_hash_table_contains (tunnel->channels, GUINT_TO_POINTER (id)))
    {
      tunnel_violation (tunnel, "unexpected OPEN for channel %u", id);
      return;
    }
  if (g_hash_table_size (tunnel->channels) >= TUNNEL_MAX_CHANNELS)
    {
      tunnel_violation (tunnel, "more than %d channels open", TUNNEL_MAX_CHANNELS);
      return;
    }
  ch = channel_new (tunnel, id, NULL);
  g_socket_client_connect_async (client, G_SOCKET_CONNECTABLE (addr), ch->cancellable,
                                 channel_connected_cb, channel_ref (ch));
}

/* @len bytes of the peer's data for @ch, to be written out locally. */
static void
channel_take (Channel *ch, guint8 *data, guint32 len)
{
  ch->window -= len;
  g_queue_push_tail (&ch->writes, g_bytes_new_take (data, len));
  channel_write (ch);
}

static void
tunnel_zdata (Tunnel *tunnel, Channel *ch, guint32 id, guint32 len)
{
  const char *why = NULL;
  guint32 n = 0;
  guint8 *data;

  if (!tunnel->zstd_agreed)
    {
      tunnel_violation (tunnel, "ZDATA on channel %u without agreeing to compression", id);
      return;
    }
  if (ch == NULL)
    return;  /* that connection already ended here */
  data = tunnel_zstd_unpack (&ch->zstd, tunnel->payload, len, ch->window, &n, &why);
  if (data == NULL)
    tunnel_violation (tunnel, "%s on channel %u", why, id);
  else
    channel_take (ch, data, n);
}

/* The peer's CLOSE for HELLO_CHANNEL: an offer (to a connector) or the answer
 * (to a listener).  Anything else there is ignored, as older peers do. */
static void
tunnel_hello (Tunnel *tunnel, guint32 len)
{
  const char *want = tunnel_is_listener (tunnel) ? HELLO_ACCEPT : HELLO_OFFER;

  if (len != strlen (want) || memcmp (tunnel->payload, want, len) != 0
      || tunnel->compress == TUNNEL_COMPRESS_NONE || tunnel->zstd_agreed)
    return;
  tunnel->zstd_agreed = TRUE;
  blkmig_debug (BLKMIG_DEBUG_TUNNEL, "tunnel: compression agreed");
  if (!tunnel_is_listener (tunnel))
    tunnel_send (tunnel, HELLO_CHANNEL, FRAME_CLOSE, HELLO_ACCEPT, strlen (HELLO_ACCEPT));
}

static void
tunnel_dispatch (Tunnel *tunnel, guint32 id, guint8 type, guint32 len)
{
  Channel *ch = g_hash_table_lookup (tunnel->channels, GUINT_TO_POINTER (id));

  switch (type)
    {
    case FRAME_OPEN:
      tunnel_open_channel (tunnel, id);
      break;
    case FRAME_DATA:
      if (ch == NULL)
        break;  /* that connection already ended here */
      if (len > ch->window)
        {
          tunnel_violation (tunnel, "%u bytes of DATA on channel %u beyond the credit it "
                            "was given", len, id);
          return;
        }
      channel_take (ch, g_steal_pointer (&tunnel->payload), len);
      break;
    case FRAME_ZDATA:
      tunnel_zdata (tunnel, ch, id, len);
      break;
    case FRAME_CREDIT:
      if (len != 4)
        {
          tunnel_violation (tunnel, "CREDIT of %u bytes", len);
          return;
        }
      if (ch == NULL)
        break;
      ch->credit += get_be32 (tunnel->payload);
      if (ch->credit > TUNNEL_WINDOW)
        {
          tunnel_violation (tunnel, "more CREDIT on channel %u than was sent", id);
          return;
        }
      channel_read (ch);
      break;
    case FRAME_CLOSE:
      if (id == HELLO_CHANNEL)
        tunnel_hello (tunnel, len);
      else if (ch != NULL)
        {
          ch->peer_closed = TRUE;
          ch->local_eof = TRUE;  /* no CLOSE back: the peer has forgotten it */
          channel_write (ch);
        }
      break;
    default:
      tunnel_violation (tunnel, "unknown frame type %u", type);
    }
}

/* The stream is read in large pieces (IN_BUF) and every whole frame in them
 * dispatched: one read and one main-loop wake-up for many frames, where a read
 * per header and one per payload had cost two each.  A payload that goes on
 * past the buffer is read straight into its own buffer. */
static void
tunnel_payload_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Tunnel *tunnel = user_data;
  g_autoptr(GError) error = NULL;
  gsize got = 0;
  guint32 len = get_be32 (tunnel->header + 5);

  if (!g_input_stream_read_all_finish (G_INPUT_STREAM (source), result, &got, &error)
      || got < len - tunnel->payload_have)
    tunnel_close (tunnel, g_steal_pointer (&error));  /* NULL error: the peer ended it */
  else
    {
      tunnel_dispatch (tunnel, get_be32 (tunnel->header), tunnel->header[4], len);
      tunnel_read (tunnel);
    }
  tunnel_unref (tunnel);
}

/* The frame whose header is at @p has @have of its payload in the buffer:
 * reads the rest into tunnel->payload, then dispatches it. */
static void
tunnel_read_payload (Tunnel *tunnel, const guint8 *p, gsize have)
{
  guint32 len = get_be32 (p + 5);

  memcpy (tunnel->header, p, FRAME_HEADER);
  tunnel->payload = g_realloc (tunnel->payload, len);
  memcpy (tunnel->payload, p + FRAME_HEADER, have);
  tunnel->payload_have = have;
  tunnel->in_len = 0;
  g_input_stream_read_all_async (g_io_stream_get_input_stream (tunnel->stream),
                                 tunnel->payload + have, len - have, G_PRIORITY_DEFAULT,
                                 tunnel->cancellable, tunnel_payload_cb, tunnel_ref (tunnel));
}

/* Dispatches every whole frame in the buffer; FALSE when a payload is being
 * read on its own (or the stream ended), TRUE to read more. */
static gboolean
tunnel_parse (Tunnel *tunnel)
{
  gsize off = 0;

  while (!tunnel->closed && tunnel->in_len - off >= FRAME_HEADER)
    {
      const guint8 *p = tunnel->in_buf + off;
      guint32 len = get_be32 (p + 5);
      gsize have = tunnel->in_len - off - FRAME_HEADER;

      if (len > FRAME_MAX)
        return tunnel_violation (tunnel, "frame of %u bytes", len), FALSE;
      if (have < len)
        {
          if (FRAME_HEADER + len <= IN_BUF)
            break;  /* it fits: read on behind it */
          tunnel_read_payload (tunnel, p, have);
          return FALSE;
        }
      tunnel->payload = g_realloc (tunnel->payload, len);  /* NULL for 0 */
      if (len > 0)
        memcpy (tunnel->payload, p + FRAME_HEADER, len);
      off += FRAME_HEADER + len;
      tunnel_dispatch (tunnel, get_be32 (p), p[4], len);
    }
  memmove (tunnel->in_buf, tunnel->in_buf + off, tunnel->in_len - off);
  tunnel->in_len -= off;
  return !tunnel->closed;
}

static void
tunnel_read_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Tunnel *tunnel = user_data;
  g_autoptr(GError) error = NULL;
  gssize n = g_input_stream_read_finish (G_INPUT_STREAM (source), result, &error);

  if (n <= 0)
    tunnel_close (tunnel, g_steal_pointer (&error));  /* NULL error: the peer ended it */
  else
    {
      tunnel->in_len += n;
      if (tunnel_parse (tunnel))
        tunnel_read (tunnel);
    }
  tunnel_unref (tunnel);
}

static void
tunnel_read (Tunnel *tunnel)
{
  if (tunnel->closed)
    return;
  g_input_stream_read_async (g_io_stream_get_input_stream (tunnel->stream),
                             tunnel->in_buf + tunnel->in_len, IN_BUF - tunnel->in_len,
                             G_PRIORITY_DEFAULT, tunnel->cancellable, tunnel_read_cb,
                             tunnel_ref (tunnel));
}

/* ---- construction ------------------------------------------------------- */

static Tunnel *
tunnel_new (GIOStream *stream)
{
  Tunnel *tunnel = g_new0 (Tunnel, 1);
  struct stat st;

  tunnel->refs = 1;
  tunnel->stream = g_object_ref (stream);
  tunnel->channels = g_hash_table_new_full (NULL, NULL, NULL, (GDestroyNotify) channel_unref);
  tunnel->payload = NULL;  /* one buffer per frame: DATA hands it on without a copy */
  tunnel->cancellable = g_cancellable_new ();
  g_queue_init (&tunnel->outq);
  g_queue_init (&tunnel->owing);
  tunnel->in_buf = g_malloc (IN_BUF);
  tunnel->out_fd = stream_out_fd (stream);
  tunnel->out_is_pipe = tunnel->out_fd >= 0 && fstat (tunnel->out_fd, &st) == 0
                        && S_ISFIFO (st.st_mode);
  tunnel_read (tunnel);
  return tunnel;
}

static gboolean
tunnel_incoming_cb (GSocketService *service, GSocketConnection *conn, GObject *source,
                    gpointer user_data)
{
  Tunnel *tunnel = user_data;
  Channel *ch;

  if (tunnel->closed)
    return g_io_stream_close (G_IO_STREAM (conn), NULL, NULL), TRUE;
  ch = channel_new (tunnel, ++tunnel->next_id, G_IO_STREAM (conn));
  tunnel_send (tunnel, ch->id, FRAME_OPEN, NULL, 0);
  channel_read (ch);
  return TRUE;
}

Tunnel *
tunnel_new_listener (GIOStream *stream, const char *listen_path, GError **error)
{
  g_autoptr(Tunnel) tunnel = tunnel_new (stream);
  g_autoptr(GSocketAddress) addr = g_unix_socket_address_new (listen_path);

  tunnel->service = g_socket_service_new ();
  if (!g_socket_listener_add_address (G_SOCKET_LISTENER (tunnel->service), addr,
                                      G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_DEFAULT, NULL,
                                      NULL, error))
    return g_prefix_error (error, "tunnel: cannot listen on %s: ", listen_path), NULL;
  g_chmod (listen_path, 0600);
  tunnel->listen_path = g_strdup (listen_path);
  g_signal_connect (tunnel->service, "incoming", G_CALLBACK (tunnel_incoming_cb), tunnel);
  g_socket_service_start (tunnel->service);
  return g_steal_pointer (&tunnel);
}

Tunnel *
tunnel_new_connector (GIOStream *stream, const char *nbd_path)
{
  Tunnel *tunnel = tunnel_new (stream);

  tunnel->nbd_path = g_strdup (nbd_path);
  return tunnel;
}

void
tunnel_set_compress (Tunnel *tunnel, TunnelCompress mode)
{
  tunnel->compress = mode;
  if (mode == TUNNEL_COMPRESS_NONE || tunnel->zstd != NULL)
    return;
  tunnel->zstd = tunnel_zstd_new (mode);
  if (tunnel_is_listener (tunnel))
    tunnel_send (tunnel, HELLO_CHANNEL, FRAME_CLOSE, HELLO_OFFER, strlen (HELLO_OFFER));
}

void
tunnel_get_stats (Tunnel *tunnel, guint64 *data_bytes, guint64 *wire_bytes,
                  gboolean *compressing)
{
  *data_bytes = tunnel->data_bytes;
  *wire_bytes = tunnel->wire_bytes;
  *compressing = tunnel->zstd_agreed;
}

gboolean
tunnel_run (Tunnel *tunnel, GCancellable *cancellable, GError **error)
{
  while (!tunnel->closed && !g_cancellable_is_cancelled (cancellable))
    g_main_context_iteration (NULL, TRUE);
  if (g_cancellable_set_error_if_cancelled (cancellable, error))
    return FALSE;
  if (tunnel->error != NULL && !g_error_matches (tunnel->error, G_IO_ERROR, G_IO_ERROR_CLOSED))
    return g_propagate_error (error, g_error_copy (tunnel->error)), FALSE;
  return TRUE;
}


static void
tunnel_unref (Tunnel *tunnel)
{
  if (--tunnel->refs > 0)
    return;
  g_queue_clear_full (&tunnel->owing, (GDestroyNotify) channel_unref);
  g_hash_table_unref (tunnel->channels);
  g_queue_clear_full (&tunnel->outq, (GDestroyNotify) g_bytes_unref);
  g_clear_error (&tunnel->error);
  g_object_unref (tunnel->cancellable);
  g_object_unref (tunnel->stream);
  g_free (tunnel->payload);
  g_free (tunnel->in_buf);
  tunnel_zstd_free (tunnel->zstd);
  g_free (tunnel->listen_path);
  g_free (tunnel->nbd_path);
  g_free (tunnel);
}

void
tunnel_shutdown (Tunnel *tunnel)
{
  tunnel->closed_func = NULL;
  tunnel_close (tunnel, NULL);
  g_clear_object (&tunnel->service);
  if (tunnel->listen_path != NULL)
    g_unlink (tunnel->listen_path);
  /* A stream with a read or write pending refuses to close (G_IO_ERROR_PENDING)
   * and keeps its descriptors: the far end of --tunnel-command then never saw
   * EOF and was killed after 5 s, the bulk of every short tunnelled copy.  The
   * cancelled operations return within an iteration or two. */
  while (tunnel->refs > 1)
    g_main_context_iteration (g_main_context_get_thread_default (), TRUE);
  g_output_stream_close (g_io_stream_get_output_stream (tunnel->stream), NULL, NULL);
}

/* The process's peak resident memory in KiB (VmHWM), for the debug trace the
 * memory tests read; 0 when /proc does not say. */
static guint64
tunnel_peak_kib (void)
{
  g_autofree char *status = NULL;
  const char *line;

  if (!g_file_get_contents ("/proc/self/status", &status, NULL, NULL)
      || (line = strstr (status, "VmHWM:")) == NULL)
    return 0;
  return g_ascii_strtoull (line + strlen ("VmHWM:"), NULL, 10);
}

void
tunnel_free (Tunnel *tunnel)
{
  if (tunnel == NULL)
    return;
  blkmig_debug (BLKMIG_DEBUG_TUNNEL, "tunnel: %s process peak memory %" G_GUINT64_FORMAT " KiB",
                tunnel_is_listener (tunnel) ? "listener" : "connector", tunnel_peak_kib ());
  tunnel_shutdown (tunnel);
  g_io_stream_close (tunnel->stream, NULL, NULL);
  tunnel_unref (tunnel);
}
