/* The fake peer and the common set-up shared by the fuzz harnesses. */
#include "fuzz-peer.h"
#include "fuzz.h"

#include <errno.h>
#include <glib-unix.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

void
fuzz_fail (const char *file, int line, const char *what)
{
  fprintf (stderr, "%s:%d: harness check failed: %s\n", file, line, what);
  abort ();
}

/* A critical or warning is a bug found: abort () so libFuzzer keeps the input
 * (GLib's own fatal path raises SIGTRAP, which libFuzzer does not catch). */
static void
fuzz_log_handler (const char *domain, GLogLevelFlags level, const char *message,
                  gpointer user_data)
{
  if ((level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING)) == 0)
    return;  /* debug, info and message: not findings, and slow */
  fprintf (stderr, "%s: %s\n", domain != NULL ? domain : "(no domain)", message);
  abort ();
}

void
fuzz_init_glib (void)
{
  /* GLib < 2.76 caches small blocks in GSlice, which hides leaks and overflows. */
  g_setenv ("G_SLICE", "always-malloc", TRUE);
  g_log_set_default_handler (fuzz_log_handler, NULL);
}

static gboolean
fuzz_peer_drain_cb (int fd, GIOCondition condition, gpointer user_data)
{
  FuzzPeer *peer = user_data;
  char buf[65536];

  for (;;)
    {
      ssize_t n = recv (fd, buf, sizeof buf, MSG_DONTWAIT);

      if (n > 0)
        continue;
      if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return G_SOURCE_CONTINUE;
      g_clear_pointer (&peer->drain, g_source_unref);  /* end of stream: stop watching */
      return G_SOURCE_REMOVE;
    }
}

int
fuzz_peer_open (FuzzPeer *peer)
{
  int sv[2];

  peer->fd = -1;
  peer->drain = NULL;
  peer->broken = FALSE;
  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    return -1;
  peer->fd = sv[0];
  peer->drain = g_unix_fd_source_new (peer->fd, G_IO_IN | G_IO_HUP | G_IO_ERR);
  g_source_set_callback (peer->drain, G_SOURCE_FUNC (fuzz_peer_drain_cb), peer, NULL);
  g_source_attach (peer->drain, NULL);
  return sv[1];
}

void
fuzz_peer_settle (void)
{
  while (g_main_context_iteration (NULL, FALSE))
    ;
}

void
fuzz_peer_send (FuzzPeer *peer, const void *data, gsize len)
{
  const char *p = data;

  while (len > 0 && !peer->broken)
    {
      ssize_t n = send (peer->fd, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);

      if (n > 0)
        {
          p += n;
          len -= n;
        }
      else if (n < 0 && errno == EINTR)
        continue;
      else if (n < 0 && errno == EAGAIN)
        {
          /* full: let the other end read; if it does not, it has stopped reading */
          if (!g_main_context_iteration (NULL, FALSE))
            peer->broken = TRUE;
        }
      else
        peer->broken = TRUE;  /* EPIPE, ECONNRESET: it closed its end */
    }
  fuzz_peer_settle ();
}

void
fuzz_peer_shutdown (FuzzPeer *peer)
{
  if (peer->fd >= 0)
    shutdown (peer->fd, SHUT_WR);
}

void
fuzz_peer_close (FuzzPeer *peer)
{
  if (peer->drain != NULL)
    {
      g_source_destroy (peer->drain);
      g_clear_pointer (&peer->drain, g_source_unref);
    }
  if (peer->fd >= 0)
    close (peer->fd);
  peer->fd = -1;
}
