/* The frozen pre-compression tunnel (tunnel-v1.c): the API of nbd/tunnel.h as it was, renamed. */
#pragma once

#include <gio/gio.h>

#define TUNNEL_WINDOW (16 * 1024 * 1024)
#define TUNNEL_MAX_CHANNELS 64

typedef struct _TunnelV1 TunnelV1;
typedef void (*TunnelV1ClosedFunc) (TunnelV1 *tunnel, const GError *why, gpointer user_data);

TunnelV1 *tunnel_v1_new_listener (GIOStream *stream, const char *listen_path, GError **error);
TunnelV1 *tunnel_v1_new_connector (GIOStream *stream, const char *nbd_path);
void tunnel_v1_set_closed_func (TunnelV1 *tunnel, TunnelV1ClosedFunc func, gpointer user_data);
gboolean tunnel_v1_run (TunnelV1 *tunnel, GCancellable *cancellable, GError **error);
void tunnel_v1_free (TunnelV1 *tunnel);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (TunnelV1, tunnel_v1_free)
