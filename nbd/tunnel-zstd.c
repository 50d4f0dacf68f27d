/* The tunnel's compression: zstd for ZDATA frames, and when `auto` tries it. */
#include "nbd/tunnel-zstd.h"

#include <string.h>
#include <zstd.h>

#include "common/error.h"

/* Fast: at 100 Mbit/s any level keeps up; on a fast link only a fast one does. */
#define ZSTD_LEVEL 1
/* A chunk is sent compressed only when that saves at least 1/8 of it. */
#define SHRINK_NUM 7
#define SHRINK_DEN 8
/* auto: the stream is the bottleneck while this much waits to be written. */
#define AUTO_BACKLOG (1024 * 1024)
/* auto: chunks sent as they are after one that did not shrink, before trying again. */
#define AUTO_SKIP 16
/* A ZDATA frame never holds more than this many bytes of data (FRAME_MAX). */
#define UNPACK_MAX (2 * 1024 * 1024)

struct _TunnelZstd {
  TunnelCompress mode;
  ZSTD_CCtx *cctx;
  ZSTD_DCtx *dctx;
  guint skip;
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
  z->dctx = ZSTD_createDCtx ();
  z->cctx = ZSTD_createCCtx ();
  g_assert (z->dctx != NULL && z->cctx != NULL);
  /* a hostile frame may not ask for a window beyond what one frame carries */
  ZSTD_DCtx_setParameter (z->dctx, ZSTD_d_windowLogMax, 21);
  ZSTD_CCtx_setParameter (z->cctx, ZSTD_c_compressionLevel, ZSTD_LEVEL);
  ZSTD_CCtx_setParameter (z->cctx, ZSTD_c_contentSizeFlag, 1);
  return z;
}

void
tunnel_zstd_free (TunnelZstd *z)
{
  if (z == NULL)
    return;
  ZSTD_freeCCtx (z->cctx);
  ZSTD_freeDCtx (z->dctx);
  g_free (z);
}

gboolean
tunnel_zstd_want (TunnelZstd *z, gsize backlog)
{
  if (z->mode == TUNNEL_COMPRESS_ZSTD)
    return TRUE;
  if (z->mode != TUNNEL_COMPRESS_AUTO || backlog < AUTO_BACKLOG)
    return FALSE;
  if (z->skip > 0)
    return z->skip--, FALSE;
  return TRUE;
}

guint8 *
tunnel_zstd_pack (TunnelZstd *z, const guint8 *data, guint32 len, gsize header,
                  guint32 *payload_len)
{
  gsize bound = ZSTD_compressBound (len);
  gsize want = (gsize) len * SHRINK_NUM / SHRINK_DEN;
  guint8 *frame = g_malloc (header + 4 + bound);
  gsize n = ZSTD_compress2 (z->cctx, frame + header + 4, bound, data, len);
  guint32 be = GUINT32_TO_BE (len);

  if (ZSTD_isError (n) || n > want)
    {
      g_free (frame);
      if (z->mode == TUNNEL_COMPRESS_AUTO)
        z->skip = AUTO_SKIP;
      return NULL;
    }
  memcpy (frame + header, &be, 4);
  *payload_len = 4 + n;
  return g_realloc (frame, header + 4 + n);
}

guint8 *
tunnel_zstd_unpack (TunnelZstd *z, const guint8 *payload, guint32 len, guint32 limit,
                    guint32 *out_len, const char **why)
{
  guint32 be, n;
  g_autofree guint8 *out = NULL;
  gsize got;

  if (len < 4)
    return *why = "a ZDATA frame without its length", NULL;
  memcpy (&be, payload, 4);
  n = GUINT32_FROM_BE (be);
  if (n == 0 || n > UNPACK_MAX)
    return *why = "a ZDATA frame of an impossible length", NULL;
  if (n > limit)
    return *why = "ZDATA beyond the credit it was given", NULL;
  if (ZSTD_getFrameContentSize (payload + 4, len - 4) != n)
    return *why = "a ZDATA frame whose zstd frame has another size", NULL;
  out = g_malloc (n);
  got = ZSTD_decompressDCtx (z->dctx, out, n, payload + 4, len - 4);
  if (ZSTD_isError (got) || got != n)
    return *why = "a ZDATA frame that does not decompress", NULL;
  *out_len = n;
  return g_steal_pointer (&out);
}
