/* Copying one read-only layer of a backing chain into an NBD export, with libnbd. */
#define _GNU_SOURCE  /* O_DIRECT */
#include "nbd/layer-copy.h"

#include <errno.h>
#include <fcntl.h>
#include <libnbd.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#include "common/error.h"
#include "common/escape.h"

#define COPY_CHUNK ((gint64) 64 << 10)    /* the destination's qcow2 cluster size */
#define COPY_REQUEST_MAX ((gint64) 2 << 20) /* bytes per request at most */
#define COPY_STATUS_SPAN ((gint64) 1 << 30) /* bytes per block status request */
#define COPY_DEFAULT_REQUESTS 16
#define COPY_QUIT_USEC (G_USEC_PER_SEC)   /* for replies in flight, after the end */
/* qemu-nbd --allocation-depth: 0 unallocated, 1 this layer, 2+ a backing file. */
#define COPY_CONTEXT_DEPTH "qemu:allocation-depth"

/* What becomes of a chunk (and of a request: a run of chunks of one kind). */
typedef enum {
  KIND_SKIP,   /* nothing of it in this layer, or zeroes with nothing below */
  KIND_ZERO,   /* zeroes that must hide what is below: NBD WRITE_ZEROES */
  KIND_DATA,   /* read through the layer's backing, written whole */
} Kind;

/* A request slot: FREE → READING → READ → WRITING → WRITTEN → FREE for data,
 * FREE → WRITING → WRITTEN → FREE for zeroes.  The completion callbacks end
 * READING and WRITING; the loop makes every other move. */
typedef enum { REQ_FREE, REQ_READING, REQ_READ, REQ_WRITING, REQ_WRITTEN } ReqState;

typedef struct {
  ReqState state;
  Kind kind;
  gint64 offset;
  gsize len;
  guchar *buf;       /* request_size bytes, made on first use */
  int err;           /* errno of the failed command, 0 if none */
} Request;

typedef struct {
  gint64 end;        /* the extent ends here (exclusive) */
  guint32 flags;     /* the context's status flags (or depth) */
} Extent;

/* The extents of one context from the last block status reply. */
typedef struct {
  const char *context;
  GArray *extents;   /* of Extent, in order, from Copier.status_start */
  guint index;       /* the first extent that may still contain the cursor */
} Context;

/* The planner's steps. */
typedef enum {
  STEP_ERROR,        /* with the error set */
  STEP_WAIT,         /* block status is on its way */
  STEP_READY,        /* a chunk classified, or a request filled in */
  STEP_END,          /* the whole layer is planned */
} Step;

/* What a wait looks at: the handles, the cancellable (not once it fired). */
enum { SIDE_SRC = 1 << 0, SIDE_DST = 1 << 1, SIDE_CANCEL = 1 << 2 };
#define SIDE_ALL (SIDE_SRC | SIDE_DST | SIDE_CANCEL)

typedef struct {
  const LayerCopy *copy;
  char *dest;              /* the URI, escaped, for messages */
  struct nbd_handle *nbd[2]; /* [0] qemu-nbd serving the layer, [1] the destination */
  GCancellable *cancellable;
  GPollFD cancel_fd;       /* fd -1 without a cancellable */
  gboolean connected;      /* both handshakes are done */
  gint64 size;
  gint64 request_size;
  gboolean can_zero, can_flush;
  /* block status */
  gint64 status_start;     /* where the last request started, -1 before any */
  gboolean status_pending;
  int status_err;
  Context alloc;           /* base:allocation */
  Context depth;           /* qemu:allocation-depth */
  /* planning: the chunk at pos being classified, the run being gathered */
  gint64 pos;
  gint64 walk;             /* the chunk is classified up to here */
  gboolean any_here, all_zero;
  Kind run_kind;           /* KIND_SKIP: no run */
  gint64 run_start;
  /* requests */
  Request *reqs;
  guint n_reqs;
  guint busy;              /* slots not FREE */
  gboolean flush_pending;
  int flush_err;
  gint64 done, sent;
  gint64 started_us;       /* for the rate limit */
  gint64 submitted;        /* data bytes asked for so far */
} Copier;

#define SRC(c) ((c)->nbd[0])
#define DST(c) ((c)->nbd[1])

/* ---- errors -------------------------------------------------------------- */

static const char *
copy_nbd_error (void)
{
  return nbd_get_error () != NULL ? nbd_get_error () : "unknown libnbd error";
}

/* "PATH: WHAT: DETAIL" about the source layer. */
static gboolean
copy_src_fail (const Copier *c, const char *what, const char *detail, GError **error)
{
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK, "%s: %s: %s", c->copy->path, what,
               detail);
  return FALSE;
}

/* "PATH: WHAT DEST: DETAIL" about the destination (DETAIL may quote the peer). */
static gboolean
copy_dst_fail (const Copier *c, const char *what, const char *detail, GError **error)
{
  g_autofree char *quoted = blkmig_escape (detail);

  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK, "%s: %s %s: %s", c->copy->path, what,
               c->dest, quoted);
  return FALSE;
}

/* A failed request: what it did, where, and errno's words. */
static gboolean
copy_request_fail (const Copier *c, const Request *req, GError **error)
{
  g_autofree char *what = g_strdup_printf ("%s %zu bytes at offset %" G_GINT64_FORMAT "%s",
                                           req->state == REQ_READ ? "reading" : "writing",
                                           req->len, req->offset,
                                           req->state == REQ_READ ? "" : " to");

  return req->state == REQ_READ ? copy_src_fail (c, what, g_strerror (req->err), error)
                                : copy_dst_fail (c, what, g_strerror (req->err), error);
}

/* ---- waiting ------------------------------------------------------------- */

static short
copy_poll_events (struct nbd_handle *nbd)
{
  unsigned dir = nbd_aio_get_direction (nbd);

  return ((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0)
         | ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0);
}

/* Lets libnbd move on with what handle @i's poll entry says. */
static gboolean
copy_notify (Copier *c, int i, const struct pollfd *pfd, GError **error)
{
  int rc = 0;

  if ((pfd->revents & (POLLIN | POLLHUP | POLLERR)) && (pfd->events & POLLIN))
    rc = nbd_aio_notify_read (c->nbd[i]);
  else if ((pfd->revents & (POLLOUT | POLLHUP | POLLERR)) && (pfd->events & POLLOUT))
    rc = nbd_aio_notify_write (c->nbd[i]);
  if (rc != -1)
    return TRUE;
  if (i == 0)
    return copy_src_fail (c, c->connected ? "qemu-nbd connection"
                                          : "cannot serve the layer with qemu-nbd",
                          copy_nbd_error (), error);
  return copy_dst_fail (c, c->connected ? "connection to" : "cannot connect to",
                        copy_nbd_error (), error);
}

/* Waits up to @timeout_ms (-1: no limit) for what @sides names (the caller checks
 * the cancellable), and lets libnbd move on. */
static gboolean
copy_wait (Copier *c, int sides, int timeout_ms, GError **error)
{
  struct pollfd fds[3];

  for (int i = 0; i < 2; i++)
    {
      gboolean on = (sides & (1 << i)) && c->nbd[i] != NULL;
      /* a closed or dead handle has no fd (-1): poll leaves it alone */
      fds[i] = (struct pollfd) { on ? nbd_aio_get_fd (c->nbd[i]) : -1,
                                 on ? copy_poll_events (c->nbd[i]) : 0, 0 };
    }
  fds[2] = (struct pollfd) { (sides & SIDE_CANCEL) ? c->cancel_fd.fd : -1, POLLIN, 0 };
  if (poll (fds, 3, timeout_ms) == -1)
    {
      int saved = errno;
      if (saved == EINTR)
        return TRUE;
      return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED, "poll: %s",
                          g_strerror (saved)), FALSE;
    }
  for (int i = 0; i < 2; i++)
    if (fds[i].fd >= 0 && !copy_notify (c, i, &fds[i], error))
      return FALSE;
  return TRUE;
}

static gboolean
copy_check_cancelled (const Copier *c, GError **error)
{
  return !g_cancellable_set_error_if_cancelled (c->cancellable, error);
}

/* ---- connecting ---------------------------------------------------------- */

static gboolean
copy_check_args (const LayerCopy *copy, GError **error)
{
  g_autofree char *quoted = NULL;

  if (!g_path_is_absolute (copy->path))
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                        "%s: a layer to copy is named by its absolute path", copy->path), FALSE;
  if (g_strcmp0 (copy->format, "qcow2") == 0 || g_strcmp0 (copy->format, "raw") == 0)
    return TRUE;
  quoted = blkmig_escape (copy->format);
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK, "%s: cannot copy a layer of format '%s'",
               copy->path, quoted);
  return FALSE;
}

/* Whether the layer's file system takes O_DIRECT (tmpfs does not). */
static gboolean
copy_can_direct (const char *path)
{
  int fd = open (path, O_RDONLY | O_DIRECT | O_CLOEXEC);

  if (fd < 0)
    return FALSE;
  close (fd);
  return TRUE;
}

/* qemu-nbd serves the layer with its backing chain, read-only and shared (a running
 * QEMU has these files open: qemu-nbd has no -U, force-share is a block option,
 * inherited by the backing files), the format given, never probed.  It reads with
 * O_DIRECT where it can: a cold layer read through the page cache's readahead
 * took 1.4x as long (bench P11, 1 GiB). */
static gboolean
copy_start_source (Copier *c, GError **error)
{
  g_auto(GStrv) parts = g_strsplit (c->copy->path, ",", -1);
  g_autofree char *path = g_strjoinv (",,", parts);
  g_autofree char *opts = g_strdup_printf ("driver=%s,force-share=on,file.filename=%s",
                                           c->copy->format, path);
  char *argv[] = { "qemu-nbd", "--read-only", "--allocation-depth", "--image-opts", opts,
                   "--cache=none", NULL };

  if (!copy_can_direct (c->copy->path))
    argv[5] = NULL;

  SRC (c) = nbd_create ();
  if (SRC (c) == NULL)
    return copy_src_fail (c, "cannot create a libnbd handle", copy_nbd_error (), error);
  if (nbd_add_meta_context (SRC (c), LIBNBD_CONTEXT_BASE_ALLOCATION) == -1
      || nbd_add_meta_context (SRC (c), COPY_CONTEXT_DEPTH) == -1)
    return copy_src_fail (c, "cannot request block status", copy_nbd_error (), error);
  if (nbd_aio_connect_systemd_socket_activation (SRC (c), argv) == -1)
    return copy_src_fail (c, "cannot serve the layer with qemu-nbd", copy_nbd_error (), error);
  return TRUE;
}

static gboolean
copy_start_dest (Copier *c, GError **error)
{
  DST (c) = nbd_create ();
  if (DST (c) == NULL)
    return copy_dst_fail (c, "cannot connect to", copy_nbd_error (), error);
  if (nbd_supports_uri (DST (c)) != 1)
    return copy_dst_fail (c, "cannot connect to", "this libnbd cannot parse NBD URIs", error);
  /* The URI is made on this host: it may name a socket or a certificate directory. */
  if (nbd_set_uri_allow_local_file (DST (c), true) == -1
      || nbd_aio_connect_uri (DST (c), c->copy->dest_uri) == -1)
    return copy_dst_fail (c, "cannot connect to", copy_nbd_error (), error);
  return TRUE;
}

/* Both handshakes at once, cancellable. */
static gboolean
copy_connect (Copier *c, GError **error)
{
  if (!copy_start_source (c, error) || !copy_start_dest (c, error))
    return FALSE;
  while (nbd_aio_is_connecting (SRC (c)) == 1 || nbd_aio_is_connecting (DST (c)) == 1)
    if (!copy_check_cancelled (c, error) || !copy_wait (c, SIDE_ALL, -1, error))
      return FALSE;
  if (nbd_aio_is_ready (SRC (c)) != 1)
    return copy_src_fail (c, "cannot serve the layer with qemu-nbd", copy_nbd_error (), error);
  if (nbd_aio_is_ready (DST (c)) != 1)
    return copy_dst_fail (c, "cannot connect to", copy_nbd_error (), error);
  c->connected = TRUE;
  return TRUE;
}

/* A destination of the layer's size, writable; the source reports allocation. */
static gboolean
copy_check_dest (Copier *c, GError **error)
{
  char *name = nbd_get_export_name (DST (c));
  g_autofree char *quoted = blkmig_escape (name);
  gint64 size = nbd_get_size (DST (c));
  gint64 max = nbd_get_block_size (DST (c), LIBNBD_SIZE_MAXIMUM);

  free (name);
  if (size < 0)
    return copy_dst_fail (c, "cannot get the size of", copy_nbd_error (), error);
  if (size != c->size)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                        "%s: the destination export '%s' is %" G_GINT64_FORMAT " bytes, "
                        "the layer %" G_GINT64_FORMAT " bytes", c->copy->path, quoted, size,
                        c->size), FALSE;
  if (nbd_is_read_only (DST (c)) != 0)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                        "%s: the destination export '%s' is read-only", c->copy->path,
                        quoted), FALSE;
  c->request_size = max > 0 ? CLAMP (max, COPY_CHUNK, COPY_REQUEST_MAX) : COPY_REQUEST_MAX;
  c->can_zero = nbd_can_zero (DST (c)) == 1;
  c->can_flush = nbd_can_flush (DST (c)) == 1;
  return TRUE;
}

static gboolean
copy_check (Copier *c, GError **error)
{
  c->size = nbd_get_size (SRC (c));
  if (c->size < 0)
    return copy_src_fail (c, "cannot get the size", copy_nbd_error (), error);
  /* Without them every chunk would count as this layer's data: refuse rather than
   * bloat the copy and hide the layers below. */
  if (nbd_can_meta_context (SRC (c), LIBNBD_CONTEXT_BASE_ALLOCATION) != 1
      || nbd_can_meta_context (SRC (c), COPY_CONTEXT_DEPTH) != 1)
    return copy_src_fail (c, "qemu-nbd", "it does not report the allocation", error);
  return copy_check_dest (c, error);
}

/* ---- block status -------------------------------------------------------- */

static int
copy_extent_cb (void *user_data, const char *metacontext, uint64_t offset,
                uint32_t *entries, size_t nr_entries, int *error)
{
  Copier *c = user_data;
  Context *ctx = g_str_equal (metacontext, c->alloc.context) ? &c->alloc
                 : g_str_equal (metacontext, c->depth.context) ? &c->depth : NULL;
  gint64 end = offset;

  if (ctx == NULL || ctx->extents->len > 0 || (gint64) offset != c->status_start)
    return 0;  /* another context, a second reply, or one for somewhere else */
  for (size_t i = 0; i + 1 < nr_entries; i += 2)
    {
      Extent ext = { MIN (end + (gint64) entries[i], c->size), entries[i + 1] };
      if (ext.end <= end)
        continue;
      g_array_append_val (ctx->extents, ext);
      end = ext.end;
    }
  return 0;
}

static int
copy_status_done_cb (void *user_data, int *error)
{
  Copier *c = user_data;

  c->status_err = *error;
  c->status_pending = FALSE;
  return 1;  /* retire the command */
}

/* Asks for the allocation from c->walk on (STEP_WAIT), unless the reply for
 * exactly there said nothing. */
static Step
copy_fetch_status (Copier *c, GError **error)
{
  gint64 count = MIN (COPY_STATUS_SPAN, c->size - c->walk);
  nbd_extent_callback extent = { .callback = copy_extent_cb, .user_data = c };
  nbd_completion_callback done = { .callback = copy_status_done_cb, .user_data = c };
  g_autofree char *where = NULL;

  if (c->status_start == c->walk)
    {
      where = g_strdup_printf ("it reported no allocation at offset %" G_GINT64_FORMAT, c->walk);
      return copy_src_fail (c, "qemu-nbd", where, error), STEP_ERROR;
    }
  c->status_start = c->walk;
  g_array_set_size (c->alloc.extents, 0);
  g_array_set_size (c->depth.extents, 0);
  c->alloc.index = c->depth.index = 0;
  c->status_pending = TRUE;  /* before: the reply may come while it is sent */
  if (nbd_aio_block_status (SRC (c), count, c->walk, extent, done, 0) == -1)
    return copy_src_fail (c, "block status", copy_nbd_error (), error), STEP_ERROR;
  return STEP_WAIT;
}

static gboolean
copy_covered (const Context *ctx, gint64 pos)
{
  return ctx->extents->len > 0
         && pos < g_array_index (ctx->extents, Extent, ctx->extents->len - 1).end;
}

/* The extent of @ctx containing @pos, which the last reply covers. */
static const Extent *
copy_context_at (Context *ctx, gint64 pos)
{
  while (g_array_index (ctx->extents, Extent, ctx->index).end <= pos)
    ctx->index++;
  return &g_array_index (ctx->extents, Extent, ctx->index);
}

/* ---- planning ------------------------------------------------------------ */

/* What the chunk [c->pos, @end) is, looking on from c->walk (STEP_READY), or
 * STEP_WAIT until the allocation there is known. */
static Step
copy_classify (Copier *c, gint64 end, Kind *kind, GError **error)
{
  while (c->walk < end)
    {
      const Extent *alloc, *depth;

      if (c->status_pending)
        return STEP_WAIT;
      if (c->status_err != 0)
        return copy_src_fail (c, "block status", g_strerror (c->status_err), error), STEP_ERROR;
      if (c->walk < c->status_start || !copy_covered (&c->alloc, c->walk)
          || !copy_covered (&c->depth, c->walk))
        return copy_fetch_status (c, error);
      alloc = copy_context_at (&c->alloc, c->walk);
      depth = copy_context_at (&c->depth, c->walk);
      c->any_here |= depth->flags == 1;
      c->all_zero &= (alloc->flags & LIBNBD_STATE_ZERO) != 0;
      c->walk = MIN (end, MIN (alloc->end, depth->end));
    }
  /* Zeroes read through the backing where only part of the chunk is here are
   * still the chunk's content: a zero cluster says the same as written zeroes. */
  *kind = !c->any_here ? KIND_SKIP
          : !c->all_zero ? KIND_DATA
          : c->copy->bottom ? KIND_SKIP : KIND_ZERO;
  return STEP_READY;
}

static void
copy_count (gint64 *counter, gint64 *shared, gint64 bytes)
{
  *counter += bytes;
  if (shared != NULL)
    __atomic_store_n (shared, *counter, __ATOMIC_RELAXED);
}

/* Hands the gathered run to @req. */
static Step
copy_emit (Copier *c, Request *req)
{
  req->kind = c->run_kind;
  req->offset = c->run_start;
  req->len = c->pos - c->run_start;
  c->run_kind = KIND_SKIP;
  return STEP_READY;
}

/* Fills @req with the next run of chunks of one kind (STEP_READY), skipping what
 * needs no request. */
static Step
copy_plan (Copier *c, Request *req, GError **error)
{
  while (c->pos < c->size)
    {
      gint64 end = MIN (c->pos + COPY_CHUNK, c->size);
      Kind kind = KIND_SKIP;
      Step step = copy_classify (c, end, &kind, error);

      if (step == STEP_ERROR)
        return STEP_ERROR;
      if (step == STEP_WAIT)
        return c->run_kind == KIND_SKIP ? STEP_WAIT : copy_emit (c, req);
      if (c->run_kind != KIND_SKIP
          && (kind != c->run_kind || end - c->run_start > c->request_size))
        return copy_emit (c, req);  /* this chunk stays classified for the next run */
      if (kind == KIND_SKIP)
        copy_count (&c->done, c->copy->done, end - c->pos);
      else if (c->run_kind == KIND_SKIP)
        {
          c->run_kind = kind;
          c->run_start = c->pos;
        }
      c->pos = c->walk = end;
      c->any_here = FALSE;
      c->all_zero = TRUE;
    }
  return c->run_kind == KIND_SKIP ? STEP_END : copy_emit (c, req);
}

/* ---- requests ------------------------------------------------------------ */

static int
copy_read_done_cb (void *user_data, int *error)
{
  Request *req = user_data;

  req->err = *error;
  req->state = REQ_READ;
  return 1;
}

static int
copy_write_done_cb (void *user_data, int *error)
{
  Request *req = user_data;

  req->err = *error;
  req->state = REQ_WRITTEN;
  return 1;
}

/* Zeroes are a WRITE_ZEROES (without NO_HOLE: QEMU's qcow2 records a zero cluster
 * either way, test-layercopy), or written out when the export cannot zero. */
static gboolean
copy_write (Copier *c, Request *req, GError **error)
{
  nbd_completion_callback done = { .callback = copy_write_done_cb, .user_data = req };
  int64_t cookie;

  if (req->kind == KIND_ZERO && !c->can_zero)
    {
      if (req->buf == NULL)
        req->buf = g_malloc (c->request_size);
      memset (req->buf, 0, req->len);
    }
  req->state = REQ_WRITING;
  if (req->kind == KIND_ZERO && c->can_zero)
    cookie = nbd_aio_zero (DST (c), req->len, req->offset, done, 0);
  else
    cookie = nbd_aio_pwrite (DST (c), req->buf, req->len, req->offset, done, 0);
  return cookie != -1 || copy_dst_fail (c, "writing to", copy_nbd_error (), error);
}

static gboolean
copy_submit (Copier *c, Request *req, GError **error)
{
  nbd_completion_callback done = { .callback = copy_read_done_cb, .user_data = req };

  req->err = 0;
  c->busy++;
  if (req->kind == KIND_ZERO)
    return copy_write (c, req, error);
  if (req->buf == NULL)
    req->buf = g_malloc (c->request_size);
  req->state = REQ_READING;
  return nbd_aio_pread (SRC (c), req->buf, req->len, req->offset, done, 0) != -1
         || copy_src_fail (c, "reading", copy_nbd_error (), error);
}

/* With a speed limit: how many ms until more data may be asked for (0: now). */
static int
copy_throttle_ms (const Copier *c)
{
  gint64 allowed_us;

  if (c->copy->speed <= 0)
    return 0;
  allowed_us = c->started_us + c->submitted * G_USEC_PER_SEC / c->copy->speed;
  return (int) MAX (0, (allowed_us - g_get_monotonic_time () + 999) / 1000);
}

/* Puts every free slot to work, as far as the allocation and the speed allow. */
static gboolean
copy_fill (Copier *c, GError **error)
{
  for (guint i = 0; i < c->n_reqs; i++)
    {
      Request *req = &c->reqs[i];
      Step step;

      if (req->state != REQ_FREE)
        continue;
      if (copy_throttle_ms (c) > 0)
        return TRUE;
      step = copy_plan (c, req, error);
      if (step != STEP_READY)
        return step != STEP_ERROR;
      if (req->kind == KIND_DATA)
        c->submitted += req->len;
      if (!copy_submit (c, req, error))
        return FALSE;
    }
  return TRUE;
}

/* Writes what was read, and frees the slots whose write is done. */
static gboolean
copy_harvest (Copier *c, GError **error)
{
  for (guint i = 0; i < c->n_reqs; i++)
    {
      Request *req = &c->reqs[i];

      if ((req->state == REQ_READ || req->state == REQ_WRITTEN) && req->err != 0)
        return copy_request_fail (c, req, error);
      if (req->state == REQ_READ && !copy_write (c, req, error))
        return FALSE;
      if (req->state != REQ_WRITTEN)
        continue;
      copy_count (&c->done, c->copy->done, req->len);
      if (req->kind == KIND_DATA)
        copy_count (&c->sent, c->copy->sent, req->len);
      req->state = REQ_FREE;
      c->busy--;
    }
  return TRUE;
}

/* ---- the copy ------------------------------------------------------------ */

static gboolean
copy_run (Copier *c, GError **error)
{
  for (;;)
    {
      int throttle;

      if (!copy_check_cancelled (c, error) || !copy_harvest (c, error) || !copy_fill (c, error))
        return FALSE;
      if (c->busy == 0 && c->pos >= c->size)
        return TRUE;
      /* held back by the speed limit with nothing in flight: sleep it off */
      throttle = c->busy == 0 ? copy_throttle_ms (c) : 0;
      if (!copy_wait (c, SIDE_ALL, throttle > 0 ? throttle : -1, error))
        return FALSE;
    }
}

static int
copy_flush_done_cb (void *user_data, int *error)
{
  Copier *c = user_data;

  c->flush_err = *error;
  c->flush_pending = FALSE;
  return 1;
}

static gboolean
copy_flush (Copier *c, GError **error)
{
  nbd_completion_callback done = { .callback = copy_flush_done_cb, .user_data = c };

  if (!c->can_flush)
    return TRUE;
  c->flush_pending = TRUE;
  if (nbd_aio_flush (DST (c), done, 0) == -1)
    return copy_dst_fail (c, "flushing", copy_nbd_error (), error);
  while (c->flush_pending)
    if (!copy_check_cancelled (c, error) || !copy_wait (c, SIDE_DST | SIDE_CANCEL, -1, error))
      return FALSE;
  return c->flush_err == 0 || copy_dst_fail (c, "flushing", g_strerror (c->flush_err), error);
}

/* ---- the end ------------------------------------------------------------- */

/* After a failure: the layer's reads in flight finish (for a while) so that
 * qemu-nbd sees a quiet disconnect; the destination's writes are left. */
static void
copy_drain (Copier *c)
{
  gint64 deadline = g_get_monotonic_time () + COPY_QUIT_USEC;

  while (SRC (c) != NULL && nbd_aio_in_flight (SRC (c)) > 0
         && g_get_monotonic_time () < deadline && copy_wait (c, SIDE_SRC, 100, NULL))
    ;
}

/* A handshake still going on finishes first (for a while): qemu-nbd exits when
 * its client leaves, but only a client that had negotiated. */
static void
copy_settle (Copier *c, gint64 deadline)
{
  while (SRC (c) != NULL && nbd_aio_is_connecting (SRC (c)) == 1
         && g_get_monotonic_time () < deadline && copy_wait (c, SIDE_SRC, 100, NULL))
    ;
  if (SRC (c) != NULL && nbd_aio_is_connecting (SRC (c)) == 1)
    nbd_kill_subprocess (SRC (c), 0);  /* else nbd_close would wait for it forever */
}

/* Says goodbye on each connection with nothing in flight, waiting a little for
 * the servers to close; nbd_close then reaps qemu-nbd. */
static void
copy_disconnect (Copier *c)
{
  gint64 deadline = g_get_monotonic_time () + COPY_QUIT_USEC;
  int sides = 0;

  copy_settle (c, deadline);
  for (int i = 0; i < 2; i++)
    if (c->nbd[i] != NULL && nbd_aio_is_ready (c->nbd[i]) == 1
        && nbd_aio_in_flight (c->nbd[i]) == 0 && nbd_aio_disconnect (c->nbd[i], 0) == 0)
      sides |= 1 << i;
  while (sides != 0 && g_get_monotonic_time () < deadline && copy_wait (c, sides, 100, NULL))
    for (int i = 0; i < 2; i++)
      if ((sides & (1 << i))
          && (nbd_aio_is_closed (c->nbd[i]) == 1 || nbd_aio_is_dead (c->nbd[i]) == 1))
        sides &= ~(1 << i);
}

static void
copy_clear (Copier *c, gboolean ok)
{
  if (!ok)
    copy_drain (c);
  copy_disconnect (c);
  /* Before the buffers: a handle may still hold requests that point at them. */
  g_clear_pointer (&SRC (c), nbd_close);
  g_clear_pointer (&DST (c), nbd_close);
  if (c->cancel_fd.fd >= 0)
    g_cancellable_release_fd (c->cancellable);
  for (guint i = 0; i < c->n_reqs; i++)
    g_free (c->reqs[i].buf);
  g_free (c->reqs);
  g_array_unref (c->alloc.extents);
  g_array_unref (c->depth.extents);
  g_free (c->dest);
}

gboolean
nbd_copy_layer (const LayerCopy *copy, GCancellable *cancellable, GError **error)
{
  Copier c = {
    .copy = copy,
    .dest = blkmig_escape (copy->dest_uri),
    .cancellable = cancellable,
    .cancel_fd = { .fd = -1 },
    .status_start = -1,
    .alloc = { LIBNBD_CONTEXT_BASE_ALLOCATION, g_array_new (FALSE, FALSE, sizeof (Extent)) },
    .depth = { COPY_CONTEXT_DEPTH, g_array_new (FALSE, FALSE, sizeof (Extent)) },
    .all_zero = TRUE,
    .run_kind = KIND_SKIP,
    .n_reqs = copy->max_requests > 0 ? copy->max_requests : COPY_DEFAULT_REQUESTS,
  };
  gboolean ok;

  c.reqs = g_new0 (Request, c.n_reqs);
  c.started_us = g_get_monotonic_time ();
  if (cancellable == NULL || !g_cancellable_make_pollfd (cancellable, &c.cancel_fd))
    c.cancel_fd.fd = -1;
  copy_count (&c.done, copy->done, 0);
  copy_count (&c.sent, copy->sent, 0);
  ok = copy_check_args (copy, error) && copy_check_cancelled (&c, error)
       && copy_connect (&c, error) && copy_check (&c, error) && copy_run (&c, error)
       && copy_flush (&c, error);
  copy_clear (&c, ok);
  return ok;
}
