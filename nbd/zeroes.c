/* Whether an NBD export reads as zeroes throughout: libnbd's block status, bounded in time. */
#include "nbd/zeroes.h"

#include <errno.h>
#include <libnbd.h>
#include <poll.h>
#include <string.h>

/* Bytes per block status request: the most a 32-bit NBD request covers, aligned. */
#define ZEROES_SPAN (G_GINT64_CONSTANT (0xfff00000))
/* Data extents read to see whether they hold zeroes, in all. */
#define ZEROES_READ_MAX (1 << 20)

typedef struct {
  struct nbd_handle *nbd;
  gint64 deadline;        /* monotonic µs */
  GCancellable *cancellable;
  char *why;              /* the first reason for "cannot tell" */
  /* the request in flight */
  gint64 pos;             /* everything before reads as zeroes */
  gint64 end;
  gboolean answered;      /* a base:allocation reply came */
  gboolean data;          /* it said something does not read as zeroes */
  gint64 data_len;        /* that data's length from pos, 0: a malformed reply */
  gint64 read;            /* bytes of data read so far */
} Check;

gboolean
nbd_zeroes_walk (gint64 *pos, gint64 end, const uint32_t *entries, size_t nr_entries,
                 gint64 *data_len)
{
  *data_len = 0;
  if (nr_entries == 0 || nr_entries % 2 != 0)
    return FALSE;
  for (size_t i = 0; i < nr_entries && *pos < end; i += 2)
    {
      if (entries[i] == 0)
        return FALSE;
      if (!(entries[i + 1] & LIBNBD_STATE_ZERO))
        return *data_len = MIN ((gint64) entries[i], end - *pos), FALSE;
      *pos = MIN (*pos + (gint64) entries[i], end);  /* more than asked: ours ends there */
    }
  return TRUE;
}

static gboolean
zeroes_fail (Check *c, const char *why)
{
  if (c->why == NULL)
    c->why = g_strdup (why);
  return FALSE;
}

static gboolean
zeroes_nbd_fail (Check *c, const char *what)
{
  g_autofree char *why = g_strdup_printf ("%s: %s", what,
                                          nbd_get_error () != NULL ? nbd_get_error () : "?");
  return zeroes_fail (c, why);
}

static int
zeroes_extent_cb (void *user_data, const char *metacontext, uint64_t offset,
                  uint32_t *entries, size_t nr_entries, int *error)
{
  Check *c = user_data;

  if (strcmp (metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0 || c->answered)
    return 0;  /* another context, or a second reply for the same request */
  c->answered = TRUE;
  if ((gint64) offset != c->pos)
    c->data = TRUE;  /* c->data_len 0: not an answer to our question */
  else
    c->data = !nbd_zeroes_walk (&c->pos, c->end, entries, nr_entries, &c->data_len);
  return 0;
}

/* One round of libnbd's state machine: waits for its socket (≤ 50 ms, so that a
 * cancel is seen soon).  Runs in a thread of its own: through --tunnel the
 * server's end is this process's main loop, which must go on meanwhile. */
static gboolean
zeroes_step (Check *c)
{
  unsigned dir = nbd_aio_get_direction (c->nbd);
  struct pollfd fd = { nbd_aio_get_fd (c->nbd),
                       ((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0)
                       | ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0), 0 };
  gint64 left = c->deadline - g_get_monotonic_time ();
  int rc = 0;

  if (g_cancellable_is_cancelled (c->cancellable))
    return zeroes_fail (c, "cancelled");
  if (left <= 0)
    return zeroes_fail (c, "no answer in time");
  if (fd.fd < 0 || (poll (&fd, 1, (int) MIN (left / 1000 + 1, 50)) < 0 && errno != EINTR))
    return zeroes_fail (c, "poll failed");
  if (fd.revents & (POLLIN | POLLHUP | POLLERR) && (fd.events & POLLIN))
    rc = nbd_aio_notify_read (c->nbd);
  else if (fd.revents & (POLLOUT | POLLHUP | POLLERR) && (fd.events & POLLOUT))
    rc = nbd_aio_notify_write (c->nbd);
  return rc != -1 || zeroes_nbd_fail (c, "connection");
}

static gboolean
zeroes_connect (Check *c, const char *uri, gint64 size)
{
  if (nbd_supports_uri (c->nbd) != 1)
    return zeroes_fail (c, "this libnbd cannot parse NBD URIs");
  if (nbd_add_meta_context (c->nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1
      || nbd_aio_connect_uri (c->nbd, uri) == -1)
    return zeroes_nbd_fail (c, "cannot connect");
  while (nbd_aio_is_connecting (c->nbd))
    if (!zeroes_step (c))
      return FALSE;
  if (!nbd_aio_is_ready (c->nbd))
    return zeroes_nbd_fail (c, "cannot connect");
  if (nbd_get_size (c->nbd) != size)
    return zeroes_fail (c, "the export has another size");
  if (nbd_can_meta_context (c->nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) != 1)
    return zeroes_fail (c, "the server reports no block status");
  return TRUE;
}

/* Waits for request @cookie; FALSE when it failed or no answer came in time. */
static gboolean
zeroes_wait (Check *c, int64_t cookie, const char *what)
{
  int done = 0;

  if (cookie == -1)
    return zeroes_nbd_fail (c, what);
  while ((done = nbd_aio_command_completed (c->nbd, cookie)) == 0)
    if (!zeroes_step (c))
      return FALSE;
  return done == 1 || zeroes_nbd_fail (c, what);
}

/* Reads the c->data_len bytes at c->pos; TRUE (and past them) when all are zero. */
static gboolean
zeroes_read (Check *c)
{
  g_autofree guchar *buf = NULL;
  gint64 len = c->data_len;

  if (len == 0 || c->read + len > ZEROES_READ_MAX)
    return zeroes_fail (c, "not everything reads as zeroes");
  buf = g_malloc (len);
  c->read += len;
  if (!zeroes_wait (c, nbd_aio_pread (c->nbd, buf, len, c->pos, NBD_NULL_COMPLETION, 0), "read"))
    return FALSE;
  if (buf[0] != 0 || memcmp (buf, buf + 1, len - 1) != 0)
    return zeroes_fail (c, "not everything reads as zeroes");
  c->pos += len;
  return TRUE;
}

/* Asks about the range from c->pos; TRUE when all that the answer covered (and
 * any small data in it, read) reads as zeroes. */
static gboolean
zeroes_ask (Check *c, gint64 size)
{
  nbd_extent_callback cb = { .callback = zeroes_extent_cb, .user_data = c };

  c->end = MIN (size, c->pos + ZEROES_SPAN);
  c->answered = c->data = FALSE;
  if (!zeroes_wait (c, nbd_aio_block_status (c->nbd, c->end - c->pos, c->pos, cb,
                                             NBD_NULL_COMPLETION, 0), "block status"))
    return FALSE;
  if (!c->answered)
    return zeroes_fail (c, "no block status in the reply");
  return !c->data || zeroes_read (c);
}

/* NBD_CMD_DISC, so the server sees a goodbye; never blocking (through --tunnel
 * the server's end is this process's own main loop), at most a second. */
static void
zeroes_disconnect (Check *c)
{
  if (!nbd_aio_is_ready (c->nbd) || nbd_aio_disconnect (c->nbd, 0) == -1)
    return;
  c->deadline = MIN (c->deadline, g_get_monotonic_time () + G_USEC_PER_SEC);
  while (!nbd_aio_is_closed (c->nbd) && !nbd_aio_is_dead (c->nbd) && zeroes_step (c))
    ;
}

typedef struct {
  char *uri;
  gint64 size;
  int timeout_ms;
  char *why;
} Question;

static void
question_free (Question *q)
{
  g_free (q->uri);
  g_free (q->why);
  g_free (q);
}

static gboolean
zeroes_check (Question *q, GCancellable *cancellable)
{
  Check c = {
    .nbd = nbd_create (),
    .deadline = g_get_monotonic_time () + (gint64) q->timeout_ms * 1000,
    .cancellable = cancellable,
  };
  gboolean zero = c.nbd != NULL && zeroes_connect (&c, q->uri, q->size);

  if (c.nbd == NULL)
    zeroes_nbd_fail (&c, "cannot create a libnbd handle");
  while (zero && c.pos < q->size)
    zero = zeroes_ask (&c, q->size);
  if (c.nbd != NULL)
    {
      zeroes_disconnect (&c);
      nbd_close (c.nbd);
    }
  q->why = g_steal_pointer (&c.why);
  return zero;
}

static void
zeroes_thread (GTask *task, gpointer source, gpointer task_data, GCancellable *cancellable)
{
  g_task_return_boolean (task, zeroes_check (task_data, cancellable));
}

void
nbd_export_reads_zeroes_async (const char *uri, gint64 size, int timeout_ms,
                               GCancellable *cancellable, GAsyncReadyCallback callback,
                               gpointer user_data)
{
  g_autoptr(GTask) task = g_task_new (NULL, cancellable, callback, user_data);
  Question *q = g_new0 (Question, 1);

  q->uri = g_strdup (uri);
  q->size = size;
  q->timeout_ms = timeout_ms;
  g_task_set_task_data (task, q, (GDestroyNotify) question_free);
  g_task_set_return_on_cancel (task, FALSE);
  g_task_run_in_thread (task, zeroes_thread);
}

gboolean
nbd_export_reads_zeroes_finish (GAsyncResult *result, char **why)
{
  Question *q = g_task_get_task_data (G_TASK (result));
  gboolean zero = g_task_propagate_boolean (G_TASK (result), NULL);

  if (why != NULL)
    *why = zero ? NULL : g_strdup (q->why);
  return zero;
}
