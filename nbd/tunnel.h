/* NBD tunnel: many NBD connections multiplexed over one byte stream, with flow control. */
#pragma once

#include <gio/gio.h>

/* Frames on the stream: a 9-byte header (channel u32, type u8, length u32, all
 * big-endian) and length bytes of payload.
 *   OPEN   listener → connector: a new NBD connection (channel ids from the listener)
 *   DATA   either way: bytes of that connection; at most the peer's credit
 *   CREDIT either way: payload u32, the receiver wrote that many bytes out and
 *          the sender may send that much more
 *   CLOSE  either way: that connection ended
 *   ZDATA  either way, once negotiated: u32 length n, then the next piece of
 *          the channel's zstd stream (one per channel and direction, flushed at
 *          the end of every frame), decoding to exactly n bytes of that
 *          connection (credit counts the n bytes)
 * Compression is negotiated without breaking older peers, which ignore a CLOSE
 * for channel 0 (ids start at 1): the listener offers "blkmig-tunnel zstd" in
 * such a frame's payload, a connector that agrees answers "zstd" the same way,
 * and only then does either side send ZDATA.
 * Each channel starts with TUNNEL_WINDOW bytes of credit each way, so a slow
 * receiver holds at most one window per channel in memory.  The receiver
 * enforces that: DATA beyond the credit it granted, CREDIT beyond what was
 * sent, or an OPEN past TUNNEL_MAX_CHANNELS open channels ends the whole
 * stream with an error (the peer is broken or hostile).  Credit returned while
 * a write to the stream is under way is summed up into one CREDIT per channel,
 * so a peer that never reads cannot make us queue frames without end either.
 * Memory is then bounded by TUNNEL_WINDOW x TUNNEL_MAX_CHANNELS. */
#define TUNNEL_WINDOW (16 * 1024 * 1024)
/* Channels one stream may have open at once: one per disk (and briefly one more
 * while QEMU reconnects), far above any VM's disk count. */
#define TUNNEL_MAX_CHANNELS 64

typedef struct _Tunnel Tunnel;

/* --tunnel-compress: what this end sends (it always takes what it agreed to). */
typedef enum {
  TUNNEL_COMPRESS_NONE,   /* neither offered nor accepted: exactly the old protocol */
  TUNNEL_COMPRESS_AUTO,   /* compress while the stream, not the CPU, holds data back, and
                           * the data shrinks */
  TUNNEL_COMPRESS_ZSTD,   /* compress every chunk that shrinks */
} TunnelCompress;

gboolean tunnel_compress_parse (const char *text, TunnelCompress *mode, GError **error);
/* Set right after construction: a listener offers compression, a connector accepts it. */
void tunnel_set_compress (Tunnel *tunnel, TunnelCompress mode);
/* Bytes of the connections' data sent, and what they took on the stream (frames
 * included); *compressing: the peer agreed to compression. */
void tunnel_get_stats (Tunnel *tunnel, guint64 *data_bytes, guint64 *wire_bytes,
                       gboolean *compressing);

/* Source side: listens on the UNIX socket @listen_path (0600, in a directory
 * the caller made private); every NBD client that connects becomes a channel. */
Tunnel *tunnel_new_listener (GIOStream *stream, const char *listen_path, GError **error);
/* Far side: every channel the peer opens is connected to the NBD server at @nbd_path. */
Tunnel *tunnel_new_connector (GIOStream *stream, const char *nbd_path);
/* Called once when the stream ends, with the reason (NULL: the peer closed it). */
typedef void (*TunnelClosedFunc) (Tunnel *tunnel, const GError *why, gpointer user_data);
void tunnel_set_closed_func (Tunnel *tunnel, TunnelClosedFunc func, gpointer user_data);
/* Iterates the main context until the stream ends (tunnel-endpoint). */
gboolean tunnel_run (Tunnel *tunnel, GCancellable *cancellable, GError **error);
/* Ends the tunnel and closes only the stream's sending side, so the peer reads
 * EOF and ends on its own while our receiving side stays open (a peer still
 * writing then gets no EPIPE).  tunnel_free does this too, then closes the rest. */
void tunnel_shutdown (Tunnel *tunnel);
void tunnel_free (Tunnel *tunnel);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (Tunnel, tunnel_free)
