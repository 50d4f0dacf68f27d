/* The tunnel's compression: a zstd stream per channel for ZDATA frames, and when to try it. */
#pragma once

#include "nbd/tunnel.h"

typedef struct _TunnelZstd TunnelZstd;
/* One channel's compression state, each way: created with its first ZDATA. */
typedef struct _TunnelZstdChannel TunnelZstdChannel;

TunnelZstd *tunnel_zstd_new (TunnelCompress mode);
void tunnel_zstd_free (TunnelZstd *z);
void tunnel_zstd_channel_free (TunnelZstdChannel *zc);
/* Whether to try compressing the next chunk (@len bytes), with @backlog bytes
 * waiting for the stream and the channel short of credit (@starved: its data
 * waits on the far side, the queue may be empty for that): `zstd` always;
 * `auto` only while a backlog shows the stream is the bottleneck and it takes
 * data slower than zstd compresses, and after chunks that did not shrink only
 * now and then. */
gboolean tunnel_zstd_want (TunnelZstd *z, gsize len, gsize backlog, gboolean starved);
/* A ZDATA frame for @len bytes at @data: @header bytes of space, u32 @len, then
 * the channel's zstd stream flushed up to the end of @data (decodable at once,
 * and with the history of the channel's earlier ZDATA: better ratios than one
 * frame per chunk); *payload_len is the payload's length.  Never NULL. */
guint8 *tunnel_zstd_pack (TunnelZstd *z, TunnelZstdChannel **zc, const guint8 *data,
                          guint32 len, gsize header, guint32 *payload_len);
/* The bytes of the ZDATA payload @payload (@len bytes) from the channel's
 * stream, at most @limit of them; NULL with *why (static text) for a malformed
 * or oversized one. */
guint8 *tunnel_zstd_unpack (TunnelZstdChannel **zc, const guint8 *payload, guint32 len,
                            guint32 limit, guint32 *out_len, const char **why);
