/* Whether an NBD export reads as zeroes throughout: libnbd's block status, bounded in time. */
#include "nbd/zeroes.h"

#include <errno.h>
#include <libnbd.h>
#include <string.h>

/* Bytes per block status request: the most a 32-bit NBD request covers, aligned. */
#define ZEROES_SPAN (G_GINT64_CONSTANT (0xfff00000))
/* Data extents read to see whether they hold zeroes, in all. */
#define ZEROES_READ_MAX (1 << 20)
/* Entries of one reply kept (pairs); the rest is asked about again. */
#define ZEROES_MAX_ENTRIES 2048

typedef struct {
  struct nbd_handle *nbd;
  gint64 deadline;        /* monotonic µs */
  GCancellable *cancellable;
  char *why;              /* the first reason for "cannot tell" */
  gint64 size;
  gint64 pos;             /* everything before reads as zeroes */
  gint64 read;            /* bytes of data read so far */
  /* the block status request in flight */
  gint64 end;
  gboolean answered;      /* a base:allocation reply came for it */
  gboolean misplaced;     /* it described another offset */
  GArray *entries;        /* uint32 length/flags pairs of that reply */
} Check;

gboolean
nbd_zeroes_walk (gint64 *pos, gint64 end, const uint32_t *entries, size_t nr_entries,
                 size_t *next, gint64 *data_len)
{
  *next = 0;
  *data_len = 0;
  if (nr_entries == 0 || nr_entries % 2 != 0)
    return FALSE;
  for (; *next < nr_entries && *pos < end; *next += 2)
    {
      if (entries[*next] == 0)
        return FALSE;
      if (!(entries[*next + 1] & LIBNBD_STATE_ZERO))
        return *data_len = MIN ((gint64) entries[*next], end - *pos), TRUE;
      *pos = MIN (*pos + (gint64) entries[*next], end);  /* more than asked: ours ends there */
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
  c->misplaced = (gint64) offset != c->pos;
  g_array_append_vals (c->entries, entries, MIN (nr_entries, ZEROES_MAX_ENTRIES * 2));
  return 0;
}

/* One round of libnbd's state machine (nbd_poll: ≤ 50 ms, so that a cancel is seen
 * soon).  Runs in a thread of its own: through --tunnel the server's end is this
 * process's main loop, which must go on meanwhile. */
static gboolean
zeroes_step (Check *c)
{
  gint64 left = c->deadline - g_get_monotonic_time ();

  if (g_cancellable_is_cancelled (c->cancellable))
    return zeroes_fail (c, "cancelled");
  if (left <= 0)
    return zeroes_fail (c, "no answer in time");
  return nbd_poll (c->nbd, (int) MIN (left / 1000 + 1, 50)) != -1 || errno == EINTR
         || zeroes_nbd_fail (c, "connection");
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

static gboolean
zeroes_connect (Check *c, const char *uri)
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
  if (nbd_get_size (c->nbd) != c->size)
    return zeroes_fail (c, "the export has another size");
  if (nbd_can_meta_context (c->nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) != 1)
    return zeroes_fail (c, "the server reports no block status");
  return TRUE;
}

static gboolean
zeroes_all_zero (const guchar *buf, gint64 len)
{
  return len == 0 || (buf[0] == 0 && memcmp (buf, buf + 1, len - 1) == 0);
}

/* @len bytes of data at c->pos (QEMU writes the first 4 KiB of every raw image it
 * creates, zeroes, to learn the alignment): read, within the budget, and looked at.
 * One request at a time: QEMU's server sends a second small reply only after the
 * first is acknowledged, which a receiver delays up to 40 ms. */
static gboolean
zeroes_data (Check *c, gint64 len)
{
  g_autofree guchar *buf = NULL;

  if (c->read + len > ZEROES_READ_MAX)
    return zeroes_fail (c, "not everything reads as zeroes");
  buf = g_malloc (len);
  c->read += len;
  if (!zeroes_wait (c, nbd_aio_pread (c->nbd, buf, len, c->pos, NBD_NULL_COMPLETION, 0), "read"))
    return FALSE;
  return zeroes_all_zero (buf, len) || zeroes_fail (c, "not everything reads as zeroes");
}

/* Walks the reply's entries from c->pos, looking into its data extents. */
static gboolean
zeroes_follow (Check *c)
{
  const uint32_t *e = (const uint32_t *) (gpointer) c->entries->data;
  size_t n = c->entries->len, i = 0, next;
  gint64 len;

  while (c->pos < c->end)
    {
      if (!nbd_zeroes_walk (&c->pos, c->end, e + i, n - i, &next, &len))
        return zeroes_fail (c, "a malformed block status reply");
      i += next;
      if (len == 0)
        return TRUE;  /* what the reply described reads as zeroes */
      if (!zeroes_data (c, len))
        return FALSE;
      c->pos += len;
      i += 2;
      if (i >= n)
        return TRUE;
    }
  return TRUE;
}

/* Asks about the range from c->pos; TRUE when all the answer covered reads as zeroes. */
static gboolean
zeroes_ask (Check *c)
{
  nbd_extent_callback cb = { .callback = zeroes_extent_cb, .user_data = c };
  gint64 start = c->pos;

  c->end = MIN (c->size, c->pos + ZEROES_SPAN);
  c->answered = c->misplaced = FALSE;
  g_array_set_size (c->entries, 0);
  if (!zeroes_wait (c, nbd_aio_block_status (c->nbd, c->end - c->pos, c->pos, cb,
                                             NBD_NULL_COMPLETION, 0), "block status"))
    return FALSE;
  if (!c->answered || c->misplaced)
    return zeroes_fail (c, "no block status for the range asked about");
  return zeroes_follow (c) && (c->pos > start || zeroes_fail (c, "no progress"));
}

static void
zeroes_check_free (Check *c)
{
  if (c->nbd != NULL)
    nbd_close (c->nbd);
  g_free (c->why);
  g_array_unref (c->entries);
  g_clear_object (&c->cancellable);
  g_free (c);
}

/* NBD_CMD_DISC, so the server sees a goodbye; never blocking, at most a second.
 * In a thread of its own: the answer does not wait for it (a round trip). */
static gpointer
zeroes_goodbye_thread (gpointer data)
{
  Check *c = data;

  if (nbd_aio_is_ready (c->nbd) && nbd_aio_disconnect (c->nbd, 0) != -1)
    {
      c->deadline = MIN (c->deadline, g_get_monotonic_time () + G_USEC_PER_SEC);
      while (!nbd_aio_is_closed (c->nbd) && !nbd_aio_is_dead (c->nbd) && zeroes_step (c))
        ;
    }
  zeroes_check_free (c);
  return NULL;
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
zeroes_check (Check *c, const char *uri)
{
  if (c->nbd == NULL)
    return zeroes_nbd_fail (c, "cannot create a libnbd handle");
  if (!zeroes_connect (c, uri))
    return FALSE;
  while (c->pos < c->size)
    if (!zeroes_ask (c))
      return FALSE;
  return TRUE;
}

static void
zeroes_thread (GTask *task, gpointer source, gpointer task_data, GCancellable *cancellable)
{
  Question *q = task_data;
  Check *c = g_new0 (Check, 1);
  gboolean zero;

  c->nbd = nbd_create ();
  c->deadline = g_get_monotonic_time () + (gint64) q->timeout_ms * 1000;
  c->cancellable = cancellable != NULL ? g_object_ref (cancellable) : NULL;
  c->size = q->size;
  c->entries = g_array_new (FALSE, FALSE, sizeof (uint32_t));
  zero = zeroes_check (c, q->uri);
  q->why = g_steal_pointer (&c->why);
  g_task_return_boolean (task, zero);
  if (c->nbd != NULL && nbd_aio_is_ready (c->nbd))
    g_thread_unref (g_thread_new ("blkmig-nbd-bye", zeroes_goodbye_thread, c));
  else
    zeroes_check_free (c);
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
