/* A fake peer for the fuzz harnesses: one end of a socketpair, fed from the fuzz input. */
#pragma once

#include <glib.h>

typedef struct {
  int fd;                   /* the peer's end; -1 when closed */
  GSource *drain;           /* reads and discards what the code under test sends */
  gboolean broken;          /* the other end stopped reading or went away */
} FuzzPeer;

/* Makes the socketpair; returns the other end (for the code under test) or -1. */
int fuzz_peer_open (FuzzPeer *peer);
/* Iterates the default main context until nothing is left to dispatch. */
void fuzz_peer_settle (void);
/* Sends @len bytes (all of them unless the other end stops reading), then settles. */
void fuzz_peer_send (FuzzPeer *peer, const void *data, gsize len);
/* Ends the peer's output: the code under test sees end of stream. */
void fuzz_peer_shutdown (FuzzPeer *peer);
void fuzz_peer_close (FuzzPeer *peer);
