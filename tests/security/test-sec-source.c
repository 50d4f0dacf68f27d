/* Unit tests of what perform accepts from a destination cookie (src/source-trust.c), no QEMU. */
#include <arpa/inet.h>
#include <ifaddrs.h>

#include "common/error.h"
#include "src/source-trust.h"

/* A live destination cookie with the NBD endpoint @unix_path or @host (port 10809)
 * and @uri as its migrate-uri. */
static Cookie *
dest_new (const char *unix_path, const char *host, const char *uri)
{
  Cookie *cookie = cookie_new (COOKIE_MODE_LIVE);

  cookie->kind = COOKIE_KIND_DESTINATION;
  cookie->nbd_unix = g_strdup (unix_path);
  cookie->nbd_host = g_strdup (host);
  cookie->nbd_port = 10809;
  cookie->migrate_uri = g_strdup (uri);
  return cookie;
}

/* Runs the check; returns the error message (NULL when accepted) and its code. */
static char *
trust (const Cookie *dest, const SourceOptions *opts, const char *migrate_uri, int *code,
       SourcePlan *plan)
{
  g_auto(SourcePlan) local_plan = { 0 };
  g_autoptr(GError) error = NULL;

  if (source_trust_check (dest, opts, migrate_uri, FALSE, plan != NULL ? plan : &local_plan,
                          &error))
    return NULL;
  g_assert_true (error->domain == BLKMIG_ERROR);
  *code = error->code;
  return g_strdup (error->message);
}

static void
assert_refused (const Cookie *dest, const SourceOptions *opts, const char *migrate_uri,
                int want_code, const char *want_message)
{
  int code = 0;
  g_autofree char *message = trust (dest, opts, migrate_uri, &code, NULL);

  g_assert_cmpstr (message, ==, want_message);
  g_assert_cmpint (code, ==, want_code);
}

static void
assert_accepted (const Cookie *dest, const SourceOptions *opts, const char *migrate_uri)
{
  int code = 0;
  g_autofree char *message = trust (dest, opts, migrate_uri, &code, NULL);

  g_assert_cmpstr (message, ==, NULL);
}

/* Item 1: the socket path reaches a command line only as a plain absolute path. */
static void
test_socket_path (void)
{
  SourceOptions opts = { .tunnel_command = "ssh dst blkmig tunnel-endpoint --nbd-socket "
                                           "'{nbd-socket}'" };
  static const char *const bad[] = { "$(id)/nbd.sock", "/run/$(id)/nbd.sock",
                                     "/run/x'; id; '", "/run/../etc/nbd.sock", "/run/a b",
                                     "/run/`id`", "/run/x;id", "relative/nbd.sock", NULL };

  for (gsize i = 0; bad[i] != NULL; i++)
    {
      g_autoptr(Cookie) dest = dest_new (bad[i], NULL, "tcp:192.0.2.5:4444");
      g_autofree char *want = g_strdup_printf ("cookie: destination.nbd.unix is not a plain "
                                               "absolute path: %s", bad[i]);
      assert_refused (dest, &opts, "tcp:127.0.0.1:4444", BLKMIG_ERROR_COOKIE, want);
    }
  {
    g_autoptr(Cookie) dest = dest_new ("/run/\x1b[31mred/nbd.sock", NULL, NULL);
    assert_refused (dest, &opts, "tcp:127.0.0.1:4444", BLKMIG_ERROR_COOKIE,
                    "cookie: destination.nbd.unix is not a plain absolute path: "
                    "/run/\\x1b[31mred/nbd.sock");
  }
}

/* Item 1: {nbd-socket} becomes one argv word; no shell, no partial substitution. */
static void
test_tunnel_argv (void)
{
  g_autoptr(Cookie) dest = dest_new ("/run/blkmig/nbd.sock", NULL, NULL);
  SourceOptions opts = { .tunnel_command = "ssh -o 'BatchMode yes' dst blkmig tunnel-endpoint "
                                           "--nbd-socket '{nbd-socket}'" };
  g_auto(SourcePlan) plan = { 0 };
  int code = 0;
  g_autofree char *message = trust (dest, &opts, "tcp:127.0.0.1:1", &code, &plan);
  const char *const want[] = { "ssh", "-o", "BatchMode yes", "dst", "blkmig", "tunnel-endpoint",
                               "--nbd-socket", "/run/blkmig/nbd.sock", NULL };

  g_assert_cmpstr (message, ==, NULL);
  g_assert_true (g_strv_equal ((const char *const *) plan.tunnel_argv, want));
  opts.tunnel_command = "ssh dst blkmig tunnel-endpoint --nbd-socket=/x{nbd-socket}";
  assert_refused (dest, &opts, "tcp:127.0.0.1:1", BLKMIG_ERROR_USAGE,
                  "--tunnel-command: {nbd-socket} must be a word of its own");
  opts.tunnel_command = "ssh 'dst";
  g_clear_pointer (&message, g_free);
  message = trust (dest, &opts, "tcp:127.0.0.1:1", &code, NULL);
  g_assert_true (g_str_has_prefix (message, "--tunnel-command: "));
  g_assert_cmpint (code, ==, BLKMIG_ERROR_USAGE);
}

/* Item 2: the memory stream is tcp: to the disks' host, or unix: when local. */
static void
test_migrate_uri (void)
{
  SourceOptions opts = { .insecure = TRUE };
  static const char *const bad[] = { "exec:id >/tmp/x; cat >/dev/null", "fd:3", "rdma:192.0.2.5:1",
                                     "file:/tmp/x", "tcp:192.0.2.5:0", "tcp:192.0.2.5",
                                     "tcp:192.0.2.5:x", "tcp:$(id):1", "unix", NULL };
  g_autoptr(Cookie) good = dest_new (NULL, "192.0.2.5", "tcp:192.0.2.5:4444");
  g_autoptr(Cookie) other = dest_new (NULL, "192.0.2.5", "tcp:192.0.2.6:4444");
  g_autoptr(Cookie) sock = dest_new (NULL, "192.0.2.5", "unix:/run/m.sock");

  for (gsize i = 0; bad[i] != NULL; i++)
    {
      g_autoptr(Cookie) dest = dest_new (NULL, "192.0.2.5", bad[i]);
      g_autofree char *want = g_strdup_printf ("cookie: destination.migrate-uri is not "
                                               "tcp:HOST:PORT or unix:PATH (choose the memory "
                                               "stream with --migrate-uri): %s", bad[i]);
      assert_refused (dest, &opts, NULL, BLKMIG_ERROR_COOKIE, want);
      assert_accepted (dest, &opts, "tcp:192.0.2.5:4444");  /* the operator's overrides */
    }
  assert_accepted (good, &opts, NULL);
  assert_refused (other, &opts, NULL, BLKMIG_ERROR_COOKIE,
                  "cookie: destination.migrate-uri is not on the host the disks go to (choose "
                  "the memory stream with --migrate-uri): tcp:192.0.2.6:4444");
  assert_refused (sock, &opts, NULL, BLKMIG_ERROR_COOKIE,
                  "cookie: destination.migrate-uri is a UNIX socket on this host (pass "
                  "--local-destination if the destination runs here, or --migrate-uri): "
                  "unix:/run/m.sock");
  opts.local_destination = TRUE;
  assert_accepted (sock, &opts, NULL);
  opts.tunnel_addr = "tcp:192.0.2.6:7000";  /* the tunnel's host is the disks' host then */
  assert_accepted (other, &opts, NULL);
}

/* Item 2: plaintext TCP for the memory stream follows the NBD rule. */
static void
test_memory_plaintext (void)
{
  g_autoptr(Cookie) dest = dest_new (NULL, "192.0.2.5", "tcp:192.0.2.5:4444");
  g_autoptr(Cookie) local = dest_new ("/run/nbd.sock", NULL, "tcp:127.0.0.1:4444");
  SourceOptions opts = { .tunnel_addr = "tcp:192.0.2.5:7000", .tls_dir = "/etc/tls" };
  g_auto(SourcePlan) plan = { 0 };
  int code = 0;
  g_autofree char *message = NULL;

  assert_refused (dest, &opts, NULL, BLKMIG_ERROR_USAGE,
                  "refusing a plaintext memory stream over TCP to 192.0.2.5: give --tls-creds "
                  "DIR without a tunnel, or --insecure if the network is trusted");
  opts.tunnel_addr = NULL;
  opts.tls_hostname = "dst.example.org";
  message = trust (dest, &opts, NULL, &code, &plan);
  g_assert_cmpstr (message, ==, NULL);
  g_assert_true (plan.migration_tls);
  g_assert_cmpstr (plan.tls_hostname, ==, "dst.example.org");
  opts = (SourceOptions) { .local_destination = TRUE };
  assert_accepted (local, &opts, NULL);  /* loopback */
}

/* Item 8: a local socket or a loopback address only with --local-destination. */
static void
test_local_target (void)
{
  static const char *const local[] = { "127.0.0.1", "127.1.2.3", "::1", "0.0.0.0", "::",
                                       "localhost", "db.localhost", "LocalHost.", "127.1",
                                       "0", "2130706433", "0x7f000001", "::ffff:127.0.0.1",
                                       NULL };
  SourceOptions opts = { .insecure = TRUE };
  g_autoptr(Cookie) sock = dest_new ("/run/nbd.sock", NULL, NULL);
  g_autoptr(Cookie) mine = dest_new (NULL, g_get_host_name (), NULL);
  g_autofree char *want = g_strdup_printf ("cookie: destination.nbd.host is this host (pass "
                                           "--local-destination if the destination runs "
                                           "here): %s", g_get_host_name ());

  for (gsize i = 0; local[i] != NULL; i++)
    {
      g_autoptr(Cookie) dest = dest_new (NULL, local[i], NULL);
      g_autofree char *msg = g_strdup_printf ("cookie: destination.nbd.host is this host (pass "
                                              "--local-destination if the destination runs "
                                              "here): %s", local[i]);
      dest->mode = COOKIE_MODE_COPY;
      assert_refused (dest, &opts, NULL, BLKMIG_ERROR_COOKIE, msg);
    }
  sock->mode = mine->mode = COOKIE_MODE_COPY;
  assert_refused (mine, &opts, NULL, BLKMIG_ERROR_COOKIE, want);
  assert_refused (sock, &opts, NULL, BLKMIG_ERROR_COOKIE,
                  "cookie: destination.nbd.unix is a UNIX socket on this host (pass "
                  "--local-destination if the destination runs here): /run/nbd.sock");
  opts.local_destination = TRUE;
  assert_accepted (sock, &opts, NULL);
  assert_accepted (mine, &opts, NULL);
}

/* The first IPv4 address of a non-loopback interface, or NULL. */
static char *
first_interface_address (void)
{
  struct ifaddrs *list = NULL;
  char *found = NULL;

  if (getifaddrs (&list) != 0)
    return NULL;
  for (struct ifaddrs *i = list; i != NULL && found == NULL; i = i->ifa_next)
    {
      char text[INET_ADDRSTRLEN];
      const struct sockaddr_in *in = (const struct sockaddr_in *) i->ifa_addr;

      if (in != NULL && in->sin_family == AF_INET && (ntohl (in->sin_addr.s_addr) >> 24) != 127
          && inet_ntop (AF_INET, &in->sin_addr, text, sizeof text) != NULL)
        found = g_strdup (text);
    }
  freeifaddrs (list);
  return found;
}

/* An address of one of this host's own interfaces is this host too. */
static void
test_local_interface (void)
{
  g_autofree char *own = first_interface_address ();
  SourceOptions opts = { .insecure = TRUE };
  g_autoptr(Cookie) dest = NULL;
  g_autofree char *msg = NULL;

  if (own == NULL)
    {
      g_test_skip ("this host has no non-loopback IPv4 address");
      return;
    }
  dest = dest_new (NULL, own, NULL);
  dest->mode = COOKIE_MODE_COPY;
  msg = g_strdup_printf ("cookie: destination.nbd.host is this host (pass --local-destination "
                         "if the destination runs here): %s", own);
  assert_refused (dest, &opts, NULL, BLKMIG_ERROR_COOKIE, msg);
}

/* Item 8: the certificate's name is not the peer's word for a remote destination. */
static void
test_tls_hostname (void)
{
  g_autoptr(Cookie) remote = dest_new (NULL, "192.0.2.5", NULL);
  g_autoptr(Cookie) loop = dest_new (NULL, "127.0.0.1", NULL);
  SourceOptions opts = { .tls_dir = "/etc/tls" };
  g_auto(SourcePlan) plan = { 0 };
  int code = 0;
  g_autofree char *message = NULL;

  remote->mode = loop->mode = COOKIE_MODE_COPY;
  assert_refused (remote, &opts, NULL, BLKMIG_ERROR_USAGE,
                  "--tls-creds needs --tls-hostname NAME, the name the destination's "
                  "certificate carries (it is not taken from the destination's cookie)");
  opts.local_destination = TRUE;
  assert_refused (remote, &opts, NULL, BLKMIG_ERROR_USAGE,
                  "--tls-creds needs --tls-hostname NAME, the name the destination's "
                  "certificate carries (it is not taken from the destination's cookie)");
  message = trust (loop, &opts, NULL, &code, &plan);
  g_assert_cmpstr (message, ==, NULL);
  g_assert_cmpstr (plan.tls_hostname, ==, "127.0.0.1");
}

/* Hosts reach messages and QMP: only host-name characters. */
static void
test_peer_host (void)
{
  g_autoptr(Cookie) dest = dest_new (NULL, "dst\x1b]0;x\x07", NULL);
  SourceOptions opts = { .insecure = TRUE };

  dest->mode = COOKIE_MODE_COPY;
  assert_refused (dest, &opts, NULL, BLKMIG_ERROR_COOKIE,
                  "cookie: destination.nbd.host is not a host name or address: "
                  "dst\\x1b]0;x\\x07");
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/sec-source/socket-path", test_socket_path);
  g_test_add_func ("/sec-source/tunnel-argv", test_tunnel_argv);
  g_test_add_func ("/sec-source/migrate-uri", test_migrate_uri);
  g_test_add_func ("/sec-source/memory-plaintext", test_memory_plaintext);
  g_test_add_func ("/sec-source/local-target", test_local_target);
  g_test_add_func ("/sec-source/local-interface", test_local_interface);
  g_test_add_func ("/sec-source/tls-hostname", test_tls_hostname);
  g_test_add_func ("/sec-source/peer-host", test_peer_host);
  return g_test_run ();
}
