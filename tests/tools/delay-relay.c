/* delay-relay: a TCP/UNIX relay adding a one-way delay, a rate limit and outages (a WAN without netem). */
/*
 * Usage: delay-relay --listen ADDR --connect ADDR [--delay-ms N] [--rate BPS]
 *                    [--buffer BYTES]
 * ADDR is tcp:HOST:PORT or unix:PATH; with port 0 the chosen port (0 for unix:) is
 * the first line on stdout.  Every accepted connection gets its own connection to
 * --connect; each direction has a reader thread, which stamps what it reads with the
 * time it may go out and queues it (at most --buffer bytes: then it stops reading and
 * TCP pushes back), and a writer thread, which writes each chunk once it is due,
 * paced to --rate: the link's, each way, shared by all connections (one token bucket
 * per direction).  EOF is passed on as shutdown (SHUT_WR) once due; an error on
 * either side closes both.  SIGUSR1 starts or ends an outage: nothing is read or
 * written (connections stay open, data waits).  SIGTERM and SIGINT: exit 0.
 */
#include <errno.h>
#include <glib.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define READ_CHUNK (256 * 1024)
/* Writes go out in slices of this size, so pacing and outages act within a chunk. */
#define WRITE_SLICE (64 * 1024)
/* Counted against --buffer for every chunk, so a peer sending single bytes is bounded too. */
#define CHUNK_OVERHEAD 64
#define EXTRA_BUFFER (4 * 1024 * 1024)
#define MIN_BUFFER 4096
/* The pacing may catch up this much after the writer slept too long or was idle. */
#define BURST_NS (2 * 1000 * 1000)
/* How often a thread waiting out an outage, or blocked in poll, looks again. */
#define OUTAGE_POLL_US 10000
#define POLL_MS 100
#define MAX_DELAY_MS (3600 * 1000)
#define MAX_RATE G_GINT64_CONSTANT (1000000000000)

typedef struct
{
  struct sockaddr_storage ss;
  socklen_t len;
} Address;

typedef struct
{
  gint64 due;                 /* monotonic µs: not written before */
  gsize len;                  /* 0: the reader saw EOF */
  guint8 data[];
} Chunk;

typedef struct _Pair Pair;

typedef struct
{
  Pair *pair;
  int in;                     /* read from */
  int out;                    /* written to */
  GMutex lock;
  GCond cond;                 /* the queue changed, or the pair died */
  GQueue chunks;              /* Chunk, oldest first; the head stays while written */
  gsize queued;               /* bytes counted against the buffer */
} Direction;

/* The link's rate, one way: every connection's writer in that direction draws on it. */
typedef struct
{
  GMutex lock;
  gint64 next_ns;             /* monotonic: when the next byte may go */
} Bucket;

struct _Pair
{
  int fds[2];                 /* the accepted connection, the upstream one */
  Direction dirs[2];          /* fds[0] → fds[1], fds[1] → fds[0] */
  gint refs;                  /* one per thread */
  gint dead;                  /* an error on either side: both are shut down */
};

static char *opt_listen;
static char *opt_connect;
static gint opt_delay_ms;
static gint64 opt_rate;
static gint64 opt_buffer = -1;
static gint outage;           /* toggled by SIGUSR1 */
static Bucket buckets[2];     /* to --connect, back to the client */

static const GOptionEntry entries[] = {
  { "listen", 'l', 0, G_OPTION_ARG_STRING, &opt_listen,
    "Accept on tcp:HOST:PORT (port 0: any, printed on stdout) or unix:PATH", "ADDR" },
  { "connect", 'c', 0, G_OPTION_ARG_STRING, &opt_connect,
    "Relay every connection to tcp:HOST:PORT or unix:PATH", "ADDR" },
  { "delay-ms", 'd', 0, G_OPTION_ARG_INT, &opt_delay_ms,
    "One-way delay in milliseconds, each direction (default 0)", "N" },
  { "rate", 'r', 0, G_OPTION_ARG_INT64, &opt_rate,
    "The link's bits per second each way, shared by all connections (default 0: unlimited)",
    "BPS" },
  { "buffer", 'b', 0, G_OPTION_ARG_INT64, &opt_buffer,
    "Bytes in flight per direction (default: rate x delay + 4 MiB)", "BYTES" },
  { NULL }
};

/* ---- addresses ------------------------------------------------------------ */

static gboolean
parse_tcp (const char *spec, Address *addr, GError **error)
{
  const struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
  const char *colon = strrchr (spec, ':');
  g_autofree char *host = NULL;
  struct addrinfo *res = NULL;
  int rc;

  if (colon == NULL || colon == spec || colon[1] == '\0')
    return g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "tcp:%s: not HOST:PORT", spec), FALSE;
  host = g_strndup (spec, colon - spec);
  if (host[0] == '[' && host[strlen (host) - 1] == ']')
    {
      memmove (host, host + 1, strlen (host));
      host[strlen (host) - 1] = '\0';
    }
  rc = getaddrinfo (host, colon + 1, &hints, &res);
  if (rc != 0)
    return g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "tcp:%s: %s",
                        spec, gai_strerror (rc)), FALSE;
  memcpy (&addr->ss, res->ai_addr, res->ai_addrlen);
  addr->len = res->ai_addrlen;
  freeaddrinfo (res);
  return TRUE;
}

static gboolean
parse_unix (const char *path, Address *addr, GError **error)
{
  struct sockaddr_un *sa = (struct sockaddr_un *) &addr->ss;

  if (*path == '\0' || strlen (path) >= sizeof sa->sun_path)
    return g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "unix:%s: empty or too long", path), FALSE;
  sa->sun_family = AF_UNIX;
  strcpy (sa->sun_path, path);
  addr->len = sizeof *sa;
  return TRUE;
}

static gboolean
parse_address (const char *option, const char *text, Address *addr, GError **error)
{
  memset (addr, 0, sizeof *addr);
  if (text == NULL)
    return g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "--%s ADDR is required", option), FALSE;
  if (g_str_has_prefix (text, "tcp:"))
    return parse_tcp (text + 4, addr, error);
  if (g_str_has_prefix (text, "unix:"))
    return parse_unix (text + 5, addr, error);
  return g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                      "--%s %s: not tcp:HOST:PORT or unix:PATH", option, text), FALSE;
}

static gboolean
set_error_errno (GError **error, const char *what)
{
  int saved = errno;

  g_set_error (error, G_FILE_ERROR, g_file_error_from_errno (saved), "%s: %s", what,
               g_strerror (saved));
  return FALSE;
}

/* No Nagle: a link delays nothing by itself, and small NBD replies must not wait. */
static void
set_nodelay (int fd, const Address *addr)
{
  int one = 1;

  if (addr->ss.ss_family != AF_UNIX)
    (void) setsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* A stale socket file from an earlier run is replaced; any other file is not. */
static void
remove_stale_socket (const Address *addr)
{
  const struct sockaddr_un *sa = (const struct sockaddr_un *) &addr->ss;
  struct stat st;

  if (addr->ss.ss_family == AF_UNIX && lstat (sa->sun_path, &st) == 0 && S_ISSOCK (st.st_mode))
    (void) unlink (sa->sun_path);
}

static int
listen_on (const Address *addr, GError **error)
{
  int one = 1;
  int fd = socket (addr->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

  if (fd < 0)
    return set_error_errno (error, "socket"), -1;
  if (addr->ss.ss_family != AF_UNIX)
    (void) setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  remove_stale_socket (addr);
  if (bind (fd, (const struct sockaddr *) &addr->ss, addr->len) < 0
      || listen (fd, 64) < 0)
    {
      set_error_errno (error, "--listen");
      close (fd);
      return -1;
    }
  return fd;
}

/* The listening port, 0 for a UNIX socket. */
static int
local_port (int fd)
{
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;

  if (getsockname (fd, (struct sockaddr *) &ss, &len) < 0)
    return 0;
  if (ss.ss_family == AF_INET)
    return ntohs (((struct sockaddr_in *) &ss)->sin_port);
  if (ss.ss_family == AF_INET6)
    return ntohs (((struct sockaddr_in6 *) &ss)->sin6_port);
  return 0;
}

static int
connect_to (const Address *addr)
{
  int fd = socket (addr->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

  if (fd < 0)
    return -1;
  while (connect (fd, (const struct sockaddr *) &addr->ss, addr->len) < 0)
    if (errno != EINTR)
      {
        int saved = errno;

        close (fd);
        errno = saved;
        return -1;
      }
  set_nodelay (fd, addr);
  return fd;
}

/* ---- the pair of connections ---------------------------------------------- */

static gboolean
pair_dead (Pair *pair)
{
  return g_atomic_int_get (&pair->dead);
}

/* An error on either side: shut both down (wakes threads blocked in poll or send). */
static void
pair_kill (Pair *pair)
{
  if (!g_atomic_int_compare_and_exchange (&pair->dead, 0, 1))
    return;
  for (int i = 0; i < 2; i++)
    (void) shutdown (pair->fds[i], SHUT_RDWR);
  for (int i = 0; i < 2; i++)
    {
      g_mutex_lock (&pair->dirs[i].lock);
      g_cond_broadcast (&pair->dirs[i].cond);
      g_mutex_unlock (&pair->dirs[i].lock);
    }
}

static void
pair_unref (Pair *pair)
{
  if (!g_atomic_int_dec_and_test (&pair->refs))
    return;
  for (int i = 0; i < 2; i++)
    {
      close (pair->fds[i]);
      g_queue_clear_full (&pair->dirs[i].chunks, g_free);
      g_mutex_clear (&pair->dirs[i].lock);
      g_cond_clear (&pair->dirs[i].cond);
    }
  g_free (pair);
}

/* Sleeps while an outage lasts; FALSE once the pair is dead. */
static gboolean
wait_outage (Pair *pair)
{
  while (g_atomic_int_get (&outage) && !pair_dead (pair))
    g_usleep (OUTAGE_POLL_US);
  return !pair_dead (pair);
}

/* ---- reading: stamp and queue ---------------------------------------------- */

/* Waits for room in the queue; how much may be read, 0 once the pair is dead. */
static gsize
wait_room (Direction *dir, gsize buffer)
{
  gsize room = 0;

  g_mutex_lock (&dir->lock);
  while (dir->queued >= buffer && !pair_dead (dir->pair))
    g_cond_wait (&dir->cond, &dir->lock);
  if (!pair_dead (dir->pair))
    room = MIN (buffer - dir->queued, READ_CHUNK);
  g_mutex_unlock (&dir->lock);
  return room;
}

/* Waits until @dir->in has data (or EOF or an error) and no outage holds it. */
static gboolean
wait_readable (Direction *dir)
{
  struct pollfd pfd = { .fd = dir->in, .events = POLLIN };

  for (;;)
    {
      if (!wait_outage (dir->pair))
        return FALSE;
      if (poll (&pfd, 1, POLL_MS) > 0 && !g_atomic_int_get (&outage))
        return !pair_dead (dir->pair);
    }
}

static void
queue_chunk (Direction *dir, const guint8 *data, gsize len)
{
  Chunk *chunk = g_malloc (sizeof *chunk + len);

  chunk->due = g_get_monotonic_time () + (gint64) opt_delay_ms * 1000;
  chunk->len = len;
  memcpy (chunk->data, data, len);
  g_mutex_lock (&dir->lock);
  g_queue_push_tail (&dir->chunks, chunk);
  dir->queued += len + CHUNK_OVERHEAD;
  g_cond_broadcast (&dir->cond);
  g_mutex_unlock (&dir->lock);
}

static gpointer
reader_main (gpointer data)
{
  Direction *dir = data;
  g_autofree guint8 *buf = g_malloc (READ_CHUNK);
  gsize room;
  ssize_t n;

  while ((room = wait_room (dir, (gsize) opt_buffer)) > 0 && wait_readable (dir))
    {
      n = recv (dir->in, buf, room, 0);
      if (n < 0 && (errno == EINTR || errno == EAGAIN))
        continue;
      if (n < 0)
        {
          pair_kill (dir->pair);
          break;
        }
      queue_chunk (dir, buf, n);
      if (n == 0)
        break;                  /* EOF: the writer passes it on when it is due */
    }
  pair_unref (dir->pair);
  return NULL;
}

/* ---- writing: wait until due, pace ----------------------------------------- */

/* The oldest chunk once it is due (it stays queued), NULL once the pair is dead. */
static Chunk *
next_due (Direction *dir)
{
  Chunk *chunk = NULL;

  g_mutex_lock (&dir->lock);
  while (!pair_dead (dir->pair))
    {
      chunk = g_queue_peek_head (&dir->chunks);
      if (chunk != NULL && g_get_monotonic_time () >= chunk->due)
        break;
      if (chunk == NULL)
        g_cond_wait (&dir->cond, &dir->lock);
      else
        g_cond_wait_until (&dir->cond, &dir->lock, chunk->due);
      chunk = NULL;
    }
  g_mutex_unlock (&dir->lock);
  return chunk;
}

static void
drop_head (Direction *dir)
{
  Chunk *chunk;

  g_mutex_lock (&dir->lock);
  chunk = g_queue_pop_head (&dir->chunks);
  dir->queued -= chunk->len + CHUNK_OVERHEAD;
  g_cond_broadcast (&dir->cond);
  g_mutex_unlock (&dir->lock);
  g_free (chunk);
}

static gint64
cost_ns (gsize bytes)
{
  return (gint64) (bytes * G_GUINT64_CONSTANT (8000000000) / (guint64) opt_rate);
}

/* Token bucket (it holds BURST_NS): reserves @bytes of the link and sleeps until
 * they may go. */
static void
pace (Bucket *bucket, gsize bytes)
{
  gint64 now = g_get_monotonic_time () * 1000;
  gint64 start;

  if (opt_rate == 0)
    return;
  g_mutex_lock (&bucket->lock);
  bucket->next_ns = MAX (bucket->next_ns, now - BURST_NS);
  start = bucket->next_ns;
  bucket->next_ns += cost_ns (bytes);
  g_mutex_unlock (&bucket->lock);
  if (start > now + 1000)
    g_usleep ((start - now) / 1000);
}

/* Gives back what was reserved but not sent. */
static void
refund (Bucket *bucket, gsize bytes)
{
  if (opt_rate == 0 || bytes == 0)
    return;
  g_mutex_lock (&bucket->lock);
  bucket->next_ns -= cost_ns (bytes);
  g_mutex_unlock (&bucket->lock);
}

static gboolean
write_paced (Direction *dir, const guint8 *data, gsize len)
{
  Bucket *bucket = &buckets[dir == &dir->pair->dirs[0] ? 0 : 1];
  gsize done = 0;
  gsize slice;
  ssize_t n;

  while (done < len)
    {
      if (!wait_outage (dir->pair))
        return FALSE;
      slice = MIN (len - done, WRITE_SLICE);
      pace (bucket, slice);
      n = send (dir->out, data + done, slice, MSG_NOSIGNAL);
      refund (bucket, n > 0 ? slice - n : slice);
      if (n < 0 && (errno == EINTR || errno == EAGAIN))
        continue;
      if (n <= 0)
        return FALSE;
      done += n;
    }
  return TRUE;
}

static gpointer
writer_main (gpointer data)
{
  Direction *dir = data;
  Chunk *chunk;

  while ((chunk = next_due (dir)) != NULL)
    {
      if (chunk->len == 0)
        {
          if (wait_outage (dir->pair) && shutdown (dir->out, SHUT_WR) < 0)
            pair_kill (dir->pair);
          drop_head (dir);
          break;
        }
      if (!write_paced (dir, chunk->data, chunk->len))
        {
          pair_kill (dir->pair);
          break;
        }
      drop_head (dir);
    }
  pair_unref (dir->pair);
  return NULL;
}

/* ---- accepting ------------------------------------------------------------- */

static void
start_thread (Pair *pair, const char *name, GThreadFunc func, Direction *dir)
{
  g_autoptr(GError) error = NULL;
  GThread *thread = g_thread_try_new (name, func, dir, &error);

  if (thread != NULL)
    {
      g_thread_unref (thread);
      return;
    }
  g_printerr ("delay-relay: %s\n", error->message);
  pair_kill (pair);
  pair_unref (pair);
}

static void
start_pair (int client, int upstream)
{
  Pair *pair = g_new0 (Pair, 1);

  pair->fds[0] = client;
  pair->fds[1] = upstream;
  pair->refs = 4;
  for (int i = 0; i < 2; i++)
    {
      Direction *dir = &pair->dirs[i];

      dir->pair = pair;
      dir->in = pair->fds[i];
      dir->out = pair->fds[1 - i];
      g_mutex_init (&dir->lock);
      g_cond_init (&dir->cond);
      g_queue_init (&dir->chunks);
    }
  for (int i = 0; i < 2; i++)
    {
      start_thread (pair, "relay-read", reader_main, &pair->dirs[i]);
      start_thread (pair, "relay-write", writer_main, &pair->dirs[i]);
    }
}

static void
accept_loop (int lfd, const Address *listen_addr, const Address *upstream)
{
  for (;;)
    {
      int client = accept (lfd, NULL, NULL);
      int up;

      if (client < 0)
        {
          if (errno != EINTR && errno != ECONNABORTED)
            {
              g_printerr ("delay-relay: accept: %s\n", g_strerror (errno));
              g_usleep (100000);  /* out of descriptors: let connections end */
            }
          continue;
        }
      while (g_atomic_int_get (&outage))
        g_usleep (OUTAGE_POLL_US);
      up = connect_to (upstream);
      if (up < 0)
        {
          g_printerr ("delay-relay: --connect %s: %s\n", opt_connect, g_strerror (errno));
          close (client);
          continue;
        }
      set_nodelay (client, listen_addr);
      start_pair (client, up);
    }
}

/* ---- signals and options ----------------------------------------------------- */

static void
signal_set (sigset_t *set)
{
  sigemptyset (set);
  sigaddset (set, SIGTERM);
  sigaddset (set, SIGINT);
  sigaddset (set, SIGUSR1);
}

static gpointer
signal_main (gpointer data)
{
  sigset_t set;
  int sig;

  signal_set (&set);
  for (;;)
    {
      if (sigwait (&set, &sig) != 0)
        continue;
      if (sig != SIGUSR1)
        _exit (0);
      g_printerr ("delay-relay: outage %s\n",
                  g_atomic_int_get (&outage) ? "ends" : "begins");
      g_atomic_int_set (&outage, !g_atomic_int_get (&outage));
    }
  return NULL;
}

static gboolean
check_options (GError **error)
{
  if (opt_delay_ms < 0 || opt_delay_ms > MAX_DELAY_MS)
    return g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "--delay-ms must be 0 to %d", MAX_DELAY_MS), FALSE;
  if (opt_rate < 0 || opt_rate > MAX_RATE)
    return g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "--rate must be 0 to %" G_GINT64_FORMAT, MAX_RATE), FALSE;
  if (opt_buffer < 0)
    opt_buffer = opt_rate / 8 * opt_delay_ms / 1000 + EXTRA_BUFFER;
  if (opt_buffer < MIN_BUFFER)
    return g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "--buffer must be at least %d", MIN_BUFFER), FALSE;
  return TRUE;
}

static gboolean
parse_options (int *argc, char ***argv, Address *listen_addr, Address *upstream,
               GError **error)
{
  g_autoptr(GOptionContext) context = g_option_context_new ("- relay with delay and rate limit");

  g_option_context_add_main_entries (context, entries, NULL);
  return g_option_context_parse (context, argc, argv, error)
         && check_options (error)
         && parse_address ("listen", opt_listen, listen_addr, error)
         && parse_address ("connect", opt_connect, upstream, error);
}

int
main (int argc, char **argv)
{
  g_autoptr(GError) error = NULL;
  Address listen_addr, upstream;
  sigset_t set;
  int lfd;

  if (!parse_options (&argc, &argv, &listen_addr, &upstream, &error))
    {
      g_printerr ("delay-relay: %s\n", error->message);
      return 2;
    }
  signal (SIGPIPE, SIG_IGN);
  signal_set (&set);
  pthread_sigmask (SIG_BLOCK, &set, NULL);  /* every thread inherits it */
  lfd = listen_on (&listen_addr, &error);
  if (lfd < 0)
    {
      g_printerr ("delay-relay: %s\n", error->message);
      return 1;
    }
  printf ("%d\n", local_port (lfd));
  fflush (stdout);
  g_thread_unref (g_thread_new ("relay-signals", signal_main, NULL));
  accept_loop (lfd, &listen_addr, &upstream);
  return 0;
}
