/* The source end of --tunnel: QEMU's NBD clients connect here, one stream carries them. */
#include "src/source-tunnel.h"

#include <signal.h>

#include "common/async.h"
#include "qmp/qmp-client.h"
#include "src/events.h"
#include "src/transport.h"
#include "src/util.h"

#define TUNNEL_COMMAND_EXIT_MS 5000

static void
source_tunnel_closed_cb (Tunnel *tunnel, const GError *why, gpointer user_data)
{
  SourceTunnel *st = user_data;
  g_autofree char *message = g_strdup_printf ("the tunnel to the destination broke: %s",
                                              why != NULL ? why->message : "its stream ended");

  g_free (st->broken);
  st->broken = g_strdup (message);
  job_group_fail_all (st->group, message);
}

gboolean
source_tunnel_open (SourceTunnel *st, const char *addr, const char *const *argv,
                    const char *tls_dir, const char *tls_hostname, JobGroup *group,
                    GCancellable *cancellable, GError **error)
{
  g_autoptr(GIOStream) stream = NULL;

  st->group = group;
  st->dir = util_private_dir_new (error);
  if (st->dir == NULL)
    return FALSE;
  st->path = g_build_filename (st->dir, "tunnel.sock", NULL);
  stream = argv != NULL ? transport_spawn (argv, &st->proc, error)
                           : transport_connect (addr, tls_dir, tls_hostname, cancellable,
                                                error);
  if (stream == NULL)
    return FALSE;
  st->tunnel = tunnel_new_listener (stream, st->path, error);
  if (st->tunnel == NULL)
    return FALSE;
  tunnel_set_closed_func (st->tunnel, source_tunnel_closed_cb, st);
  tunnel_set_compress (st->tunnel, st->compress);
  return TRUE;
}

/* What the stream carried, as an event (compression's effect is visible there). */
static void
source_tunnel_report (SourceTunnel *st)
{
  guint64 data, wire;
  gboolean zstd;

  tunnel_get_stats (st->tunnel, &data, &wire, &zstd);
  events_emit ("tunnel", "data-bytes", qmp_int (data), "wire-bytes", qmp_int (wire),
               "compression", qmp_str (zstd ? "zstd" : "none"), NULL);
}

void
source_tunnel_close (SourceTunnel *st)
{
  g_clear_pointer (&st->broken, g_free);
  if (st->tunnel != NULL)
    {
      source_tunnel_report (st);
      tunnel_shutdown (st->tunnel);
    }
  if (st->proc != NULL)
    {
      /* the far end exits when its stdin ends (at once: tunnel_shutdown waited
       * for our pending operations, so the pipe really closed); then insist */
      for (int i = 0; i < TUNNEL_COMMAND_EXIT_MS / 50 && g_subprocess_get_identifier (st->proc); i++)
        blkmig_sleep (50, NULL);
      if (g_subprocess_get_identifier (st->proc) != NULL)
        g_subprocess_send_signal (st->proc, SIGTERM);
      g_subprocess_wait (st->proc, NULL, NULL);
    }
  g_clear_pointer (&st->tunnel, tunnel_free);
  g_clear_object (&st->proc);
  util_private_dir_remove (st->dir);
  g_clear_pointer (&st->dir, g_free);
  g_clear_pointer (&st->path, g_free);
}
