/* The tunnel's compression: a zstd stream per channel for ZDATA frames, and when to try it. */
#include "nbd/tunnel-zstd.h"

#include <string.h>
#include <zstd.h>

#include "common/debug.h"
#include "common/error.h"

/* Fast: at 100 Mbit/s any level keeps up; on a fast link only a fast one does. */
#define ZSTD_LEVEL 1
/* The compression window: what a receiver holds per channel for the history. */
#define ZSTD_WINDOW_LOG 20
/* A chunk counts as compressible when it saves at least 1/16. */
#define SHRINK_NUM 15
#define SHRINK_DEN 16
/* auto: the stream is the bottleneck once this much waits to be written, and
 * stays so until nothing does (the kernel's socket buffers hide the first MiBs,
 * and compressed frames drain faster than raw ones: a plain threshold made auto
 * send half of everything raw). */
#define AUTO_BACKLOG (256 * 1024)
/* auto: a stream that takes more than this much data per second is not the
 * bottleneck zstd could relieve (level 1 compresses mixed data at a few hundred
 * MB/s per core): a local pipe to a busy tunnel-endpoint, not a WAN.  Measured
 * over AUTO_RATE_US. */
#define AUTO_MAX_RATE (160 * 1024 * 1024)
#define AUTO_RATE_US (250 * 1000)
/* auto: after n > AUTO_FAILS chunks in a row that did not shrink, the next
 * min(2^(n - AUTO_FAILS), AUTO_SKIP_MAX) go as they are before another try
 * (random data: about 1 chunk in 64 tried).  A chunk that did not shrink still
 * goes out compressed (it is in the stream's history), no larger on the link:
 * trying costs only CPU, so mixed data (a filesystem holding .gz files) is
 * tried on. */
#define AUTO_FAILS 3
#define AUTO_SKIP_MAX 64
/* A ZDATA frame never holds more than this many bytes of data (FRAME_MAX). */
#define UNPACK_MAX (2 * 1024 * 1024)

struct _TunnelZstd {
  TunnelCompress mode;
  gboolean link_bound;        /* auto: the stream holds data back */
  gint64 rate_start;          /* auto: the data rate's window, since (µs) */
  guint64 rate_bytes;         /* and bytes in it */
  gboolean fast;              /* auto: the last window's rate was above AUTO_MAX_RATE */
  guint fails;                /* chunks in a row that did not shrink */
  guint skip;                 /* chunks still to send as they are */
  guint64 tried, unbound, skipped;  /* chunks compressed, sent raw for either reason */
};

struct _TunnelZstdChannel {
  ZSTD_CCtx *cctx;            /* what we send */
  ZSTD_DCtx *dctx;            /* what the peer sends */
};

gboolean
tunnel_compress_parse (const char *text, TunnelCompress *mode, GError **error)
{
  static const char *const names[] = { "none", "auto", "zstd" };

  for (guint i = 0; i < G_N_ELEMENTS (names); i++)
    if (g_strcmp0 (text, names[i]) == 0)
      return *mode = (TunnelCompress) i, TRUE;
  return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                      "--tunnel-compress: expected auto, zstd or none"), FALSE;
}

TunnelZstd *
tunnel_zstd_new (TunnelCompress mode)
{
  TunnelZstd *z = g_new0 (TunnelZstd, 1);

  z->mode = mode;
  return z;
}

void
tunnel_zstd_free (TunnelZstd *z)
{
  if (z == NULL)
    return;
  blkmig_debug (BLKMIG_DEBUG_TUNNEL, "tunnel: chunks compressed %" G_GUINT64_FORMAT
                ", sent as they were: %" G_GUINT64_FORMAT " with the stream keeping up, %"
                G_GUINT64_FORMAT " after chunks that did not shrink", z->tried, z->unbound,
                z->skipped);
  g_free (z);
}

void
tunnel_zstd_channel_free (TunnelZstdChannel *zc)
{
  if (zc == NULL)
    return;
  ZSTD_freeCCtx (zc->cctx);
  ZSTD_freeDCtx (zc->dctx);
  g_free (zc);
}

static TunnelZstdChannel *
zstd_channel (TunnelZstdChannel **zc)
{
  if (*zc == NULL)
    *zc = g_new0 (TunnelZstdChannel, 1);
  return *zc;
}

/* auto: counts @len more bytes of data into the rate, closing a window when due. */
static void
zstd_rate (TunnelZstd *z, gsize len)
{
  gint64 now = g_get_monotonic_time ();

  z->rate_bytes += len;
  if (z->rate_start == 0)
    z->rate_start = now;
  else if (now - z->rate_start >= AUTO_RATE_US)
    {
      z->fast = z->rate_bytes * G_USEC_PER_SEC / (guint64) (now - z->rate_start) > AUTO_MAX_RATE;
      z->rate_start = now;
      z->rate_bytes = 0;
    }
}

gboolean
tunnel_zstd_want (TunnelZstd *z, gsize len, gsize backlog, gboolean starved)
{
  if (z->mode == TUNNEL_COMPRESS_ZSTD)
    return TRUE;
  if (z->mode != TUNNEL_COMPRESS_AUTO)
    return FALSE;
  zstd_rate (z, len);
  if (z->fast)
    return z->unbound++, FALSE;  /* the CPU, not the stream, would be the limit */
  if (backlog >= AUTO_BACKLOG)
    z->link_bound = TRUE;
  else if (backlog == 0 && !starved)
    z->link_bound = FALSE;  /* the stream takes all we give it: compressing would only cost */
  if (!z->link_bound)
    return z->unbound++, FALSE;
  if (z->skip > 0)
    return z->skipped++, z->skip--, FALSE;
  return TRUE;
}

/* auto's back-off: a chunk of @len bytes went out as @n. */
static void
zstd_learn (TunnelZstd *z, gsize len, gsize n)
{
  if (n <= len * SHRINK_NUM / SHRINK_DEN)
    z->fails = 0;
  else
    {
      z->fails = MIN (z->fails + 1, AUTO_FAILS + 6);
      if (z->fails > AUTO_FAILS)
        z->skip = MIN (1u << (z->fails - AUTO_FAILS), AUTO_SKIP_MAX);
    }
}

static ZSTD_CCtx *
zstd_cctx (TunnelZstdChannel *zc)
{
  if (zc->cctx == NULL)
    {
      zc->cctx = ZSTD_createCCtx ();
      g_assert (zc->cctx != NULL);
      ZSTD_CCtx_setParameter (zc->cctx, ZSTD_c_compressionLevel, ZSTD_LEVEL);
      ZSTD_CCtx_setParameter (zc->cctx, ZSTD_c_windowLog, ZSTD_WINDOW_LOG);
    }
  return zc->cctx;
}

guint8 *
tunnel_zstd_pack (TunnelZstd *z, TunnelZstdChannel **zc, const guint8 *data, guint32 len,
                  gsize header, guint32 *payload_len)
{
  ZSTD_CCtx *cctx = zstd_cctx (zstd_channel (zc));
  gsize bound = ZSTD_compressBound (len) + 64;  /* + block headers of the flush */
  guint8 *frame = g_malloc (header + 4 + bound);
  ZSTD_inBuffer in = { data, len, 0 };
  ZSTD_outBuffer out = { frame + header + 4, bound, 0 };
  guint32 be = GUINT32_TO_BE (len);
  gsize left;

  do
    left = ZSTD_compressStream2 (cctx, &out, &in, ZSTD_e_flush);
  while (!ZSTD_isError (left) && left > 0 && out.pos < out.size);
  g_assert (!ZSTD_isError (left) && left == 0 && in.pos == len);  /* ours: cannot fail */
  zstd_learn (z, len, out.pos);
  z->tried++;
  memcpy (frame + header, &be, 4);
  *payload_len = 4 + out.pos;
  return g_realloc (frame, header + 4 + out.pos);
}

static ZSTD_DCtx *
zstd_dctx (TunnelZstdChannel *zc)
{
  if (zc->dctx == NULL)
    {
      zc->dctx = ZSTD_createDCtx ();
      g_assert (zc->dctx != NULL);
      /* a hostile stream may not ask for more history than we would keep */
      ZSTD_DCtx_setParameter (zc->dctx, ZSTD_d_windowLogMax, ZSTD_WINDOW_LOG);
    }
  return zc->dctx;
}

guint8 *
tunnel_zstd_unpack (TunnelZstdChannel **zc, const guint8 *payload, guint32 len, guint32 limit,
                    guint32 *out_len, const char **why)
{
  guint32 be, n;
  g_autofree guint8 *data = NULL;
  ZSTD_inBuffer in;
  ZSTD_outBuffer out;
  gsize ret;

  if (len < 4)
    return *why = "a ZDATA frame without its length", NULL;
  memcpy (&be, payload, 4);
  n = GUINT32_FROM_BE (be);
  if (n == 0 || n > UNPACK_MAX)
    return *why = "a ZDATA frame of an impossible length", NULL;
  if (n > limit)
    return *why = "ZDATA beyond the credit it was given", NULL;
  data = g_malloc (n);
  in = (ZSTD_inBuffer) { payload + 4, len - 4, 0 };
  out = (ZSTD_outBuffer) { data, n, 0 };
  /* into exactly n bytes: a frame that holds more cannot make us hold more */
  do
    ret = ZSTD_decompressStream (zstd_dctx (zstd_channel (zc)), &out, &in);
  while (!ZSTD_isError (ret) && in.pos < in.size && out.pos < out.size);
  if (ZSTD_isError (ret))
    return *why = "a ZDATA frame that does not decompress", NULL;
  if (out.pos != n || in.pos != in.size)
    return *why = "a ZDATA frame whose zstd data has another size", NULL;
  *out_len = n;
  return g_steal_pointer (&data);
}
