/* Whether a host name or address from a peer names this machine. */
#include "src/host-local.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <string.h>
#include <sys/socket.h>

static gboolean
ipv4_is_special (const struct in_addr *in)
{
  guint32 a = ntohl (in->s_addr);

  return (a >> 24) == 127 || a == 0;
}

/* Whether @sa is the address of one of this host's interfaces. */
static gboolean
addr_is_interface (const struct sockaddr *sa)
{
  struct ifaddrs *list = NULL;
  gboolean found = FALSE;

  if (getifaddrs (&list) != 0)
    return FALSE;
  for (struct ifaddrs *i = list; i != NULL && !found; i = i->ifa_next)
    {
      const struct sockaddr *ia = i->ifa_addr;

      if (ia == NULL || ia->sa_family != sa->sa_family)
        continue;
      if (sa->sa_family == AF_INET)
        found = memcmp (&((const struct sockaddr_in *) ia)->sin_addr,
                        &((const struct sockaddr_in *) sa)->sin_addr, sizeof (struct in_addr)) == 0;
      else if (sa->sa_family == AF_INET6)
        found = memcmp (&((const struct sockaddr_in6 *) ia)->sin6_addr,
                        &((const struct sockaddr_in6 *) sa)->sin6_addr,
                        sizeof (struct in6_addr)) == 0;
    }
  freeifaddrs (list);
  return found;
}

static gboolean
addr_is_local (const struct sockaddr *sa)
{
  if (sa->sa_family == AF_INET)
    {
      const struct sockaddr_in *in = (const struct sockaddr_in *) sa;
      return ipv4_is_special (&in->sin_addr) || addr_is_interface (sa);
    }
  if (sa->sa_family == AF_INET6)
    {
      const struct in6_addr *a = &((const struct sockaddr_in6 *) sa)->sin6_addr;
      struct in_addr mapped;

      if (IN6_IS_ADDR_LOOPBACK (a) || IN6_IS_ADDR_UNSPECIFIED (a))
        return TRUE;
      memcpy (&mapped, a->s6_addr + 12, sizeof mapped);
      return (IN6_IS_ADDR_V4MAPPED (a) && ipv4_is_special (&mapped)) || addr_is_interface (sa);
    }
  return FALSE;
}

gboolean
host_is_local (const char *host)
{
  g_autofree char *name = g_ascii_strdown (host, -1);
  gsize len = strlen (name);
  const struct addrinfo hints = { .ai_socktype = SOCK_STREAM };
  struct addrinfo *res = NULL;
  gboolean local = FALSE;

  if (len > 1 && name[len - 1] == '.')
    name[--len] = '\0';
  if (g_str_equal (name, "localhost") || g_str_has_suffix (name, ".localhost")
      || g_ascii_strcasecmp (name, g_get_host_name ()) == 0)
    return TRUE;
  if (getaddrinfo (name, NULL, &hints, &res) != 0)
    return FALSE;
  for (struct addrinfo *ai = res; ai != NULL && !local; ai = ai->ai_next)
    local = addr_is_local (ai->ai_addr);
  freeaddrinfo (res);
  return local;
}
