/* Whether a host name or address from a peer names this machine. */
#pragma once

#include <glib.h>

/* TRUE when @host, resolved as QEMU would resolve it (getaddrinfo: numeric forms
 * such as 127.1, 0x7f000001 or 2130706433 included, and DNS names), gives a
 * loopback, any-address or IPv4-mapped loopback address, or an address of one of
 * this host's interfaces; also "localhost", "*.localhost" and our own name (with or
 * without a trailing dot).  A name that does not resolve is not local. */
gboolean host_is_local (const char *host);
