/* The tunnel's compression: zstd for ZDATA frames, and when `auto` tries it. */
#pragma once

#include "nbd/tunnel.h"

typedef struct _TunnelZstd TunnelZstd;

TunnelZstd *tunnel_zstd_new (TunnelCompress mode);
void tunnel_zstd_free (TunnelZstd *z);
/* Whether to try compressing the next chunk, with @backlog bytes waiting for the
 * stream: `zstd` always; `auto` only while a backlog shows the stream is the
 * bottleneck, and not for a while after a chunk did not shrink. */
gboolean tunnel_zstd_want (TunnelZstd *z, gsize backlog);
/* A ZDATA frame for @len bytes at @data: header space, u32 @len, the zstd frame;
 * *payload_len is its payload's length.  NULL when it would not shrink enough. */
guint8 *tunnel_zstd_pack (TunnelZstd *z, const guint8 *data, guint32 len, gsize header,
                          guint32 *payload_len);
/* The bytes of the ZDATA payload @payload (@len bytes), at most @limit of them;
 * NULL with *why (static text) for a malformed or oversized one. */
guint8 *tunnel_zstd_unpack (TunnelZstd *z, const guint8 *payload, guint32 len, guint32 limit,
                            guint32 *out_len, const char **why);
