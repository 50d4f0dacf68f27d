/* Comparing two disks through libnbd: local images or NBD URIs, holes skipped. */
#include "nbd/verify.h"

#include <errno.h>
#include <libnbd.h>
#include <poll.h>
#include <string.h>

#include <json-glib/json-glib.h>

#include "common/error.h"
#include "qmp/qmp-json.h"

#define VERIFY_READ_SIZE (4 << 20)     /* bytes per read request */
#define VERIFY_STATUS_SPAN (1 << 30)   /* bytes per block status request */
#define VERIFY_IN_FLIGHT 8             /* read pairs in flight at once */
#define VERIFY_DRAIN_USEC (2 * G_USEC_PER_SEC)

typedef struct {
  gint64 end;        /* the extent ends here (exclusive) */
  gboolean zero;     /* NBD_STATE_ZERO: reads as zeroes */
} Extent;

/* One disk: its connection and the extents of the last block status reply. */
typedef struct {
  const char *name;  /* as the user gave it */
  struct nbd_handle *nbd;
  gboolean has_status;
  gint64 size;
  GArray *extents;   /* of Extent, in order, covering [ext_start, last end) */
  gint64 ext_start;
  guint ext_index;   /* the first extent that may still contain the cursor */
} Side;

/* One range read from both sides; a slot is free when len == 0. */
typedef struct {
  gint64 offset;
  gsize len;
  guchar *buf[2];
  int pending;       /* reads not completed yet */
  int err;           /* errno of a failed read, 0 if none */
} Piece;

typedef struct {
  Side side[2];
  Piece pieces[VERIFY_IN_FLIGHT];
  guint busy;        /* pieces with len > 0 */
  gint64 pos;        /* the next offset not yet planned */
  VerifyResult *result;
} Verify;

/* ---- opening a side ------------------------------------------------------ */

static gboolean
verify_is_uri (const char *name)
{
  const char *scheme = g_uri_peek_scheme (name);

  return scheme != NULL && g_str_has_prefix (scheme, "nbd");
}

/* The format qemu-img detects for @path ("qcow2", "raw", ...). */
static char *
verify_image_format (const char *path, GError **error)
{
  g_autoptr(GSubprocess) proc = NULL;
  g_autofree char *out = NULL;
  g_autofree char *err_text = NULL;
  g_autoptr(JsonNode) info = NULL;
  const char *format = NULL;

  proc = g_subprocess_new (G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_PIPE,
                           error, "qemu-img", "info", "-U", "--output=json", path, NULL);
  if (proc == NULL || !g_subprocess_communicate_utf8 (proc, NULL, NULL, &out, &err_text, error))
    return NULL;
  info = g_subprocess_get_successful (proc) ? json_from_string (out, NULL) : NULL;
  format = qmp_member_string (qmp_node_object (info), "format");
  if (format == NULL)
    {
      g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK, "cannot read %s: %s", path,
                   err_text != NULL && *g_strstrip (err_text) != '\0' ? err_text
                                                                       : "unknown format");
      return NULL;
    }
  return g_strdup (format);
}

/* --image-opts for qemu-nbd: force-share lets it read an image a QEMU has open. */
static char *
verify_image_opts (const char *path, const char *format)
{
  g_auto(GStrv) parts = g_strsplit (path, ",", -1);
  g_autofree char *escaped = g_strjoinv (",,", parts);

  return g_strdup_printf ("driver=%s,file.filename=%s,force-share=on", format, escaped);
}

static gboolean
verify_nbd_error (const Side *side, const char *what, GError **error)
{
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK, "%s: %s: %s", side->name, what,
               nbd_get_error () != NULL ? nbd_get_error () : "unknown libnbd error");
  return FALSE;
}

static gboolean
verify_connect_uri (Side *side, GError **error)
{
  if (nbd_supports_uri (side->nbd) != 1)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                        "%s: this libnbd cannot parse NBD URIs", side->name), FALSE;
  return nbd_connect_uri (side->nbd, side->name) == 0
         || verify_nbd_error (side, "cannot connect", error);
}

/* A local image: qemu-nbd serves it read-only on a socket libnbd hands it. */
static gboolean
verify_connect_image (Side *side, GError **error)
{
  g_autofree char *format = verify_image_format (side->name, error);
  g_autofree char *opts = NULL;
  char *argv[] = { "qemu-nbd", "--read-only", "--image-opts", NULL, NULL };

  if (format == NULL)
    return FALSE;
  opts = verify_image_opts (side->name, format);
  argv[3] = opts;
  return nbd_connect_systemd_socket_activation (side->nbd, argv) == 0
         || verify_nbd_error (side, "cannot serve the image with qemu-nbd", error);
}

static gboolean
verify_open (Side *side, const char *name, GError **error)
{
  side->name = name;
  side->extents = g_array_new (FALSE, FALSE, sizeof (Extent));
  side->nbd = nbd_create ();
  if (side->nbd == NULL)
    return verify_nbd_error (side, "cannot create a libnbd handle", error);
  /* Without base:allocation from the server, everything counts as data. */
  if (nbd_add_meta_context (side->nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1)
    return verify_nbd_error (side, "cannot request block status", error);
  if (!(verify_is_uri (name) ? verify_connect_uri (side, error)
                             : verify_connect_image (side, error)))
    return FALSE;
  side->size = nbd_get_size (side->nbd);
  if (side->size < 0)
    return verify_nbd_error (side, "cannot get the size", error);
  side->has_status = nbd_can_meta_context (side->nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
  return TRUE;
}

static void
verify_side_clear (Side *side)
{
  g_clear_pointer (&side->nbd, nbd_close);
  g_clear_pointer (&side->extents, g_array_unref);
}

/* ---- block status -------------------------------------------------------- */

static int
verify_extent_cb (void *user_data, const char *metacontext, uint64_t offset,
                  uint32_t *entries, size_t nr_entries, int *error)
{
  Side *side = user_data;
  gint64 end = offset;

  if (strcmp (metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0 || side->extents->len > 0)
    return 0;  /* another context, or a second reply for the same request */
  side->ext_start = offset;
  for (size_t i = 0; i + 1 < nr_entries; i += 2)
    {
      Extent ext = { MIN (end + (gint64) entries[i], side->size),
                     (entries[i + 1] & LIBNBD_STATE_ZERO) != 0 };
      if (ext.end <= end)
        continue;
      g_array_append_val (side->extents, ext);
      end = ext.end;
    }
  return 0;
}

static gboolean
verify_fetch_extents (Side *side, gint64 pos, GError **error)
{
  gint64 count = MIN ((gint64) VERIFY_STATUS_SPAN, side->size - pos);
  nbd_extent_callback cb = { .callback = verify_extent_cb, .user_data = side };

  g_array_set_size (side->extents, 0);
  side->ext_index = 0;
  if (nbd_block_status (side->nbd, count, pos, cb, 0) == -1)
    return verify_nbd_error (side, "block status", error);
  if (side->extents->len == 0 || side->ext_start > pos)
    {
      /* A reply that says nothing useful: treat the span as data. */
      Extent ext = { pos + count, FALSE };
      g_array_set_size (side->extents, 0);
      g_array_append_val (side->extents, ext);
      side->ext_start = pos;
    }
  return TRUE;
}

/* The extent containing @pos: where it ends and whether it reads as zeroes. */
static gboolean
verify_extent_at (Side *side, gint64 pos, gint64 *end, gboolean *zero, GError **error)
{
  GArray *exts = side->extents;
  const Extent *ext;

  if (!side->has_status)
    {
      *end = side->size;
      *zero = FALSE;
      return TRUE;
    }
  if ((exts->len == 0 || pos < side->ext_start
       || pos >= g_array_index (exts, Extent, exts->len - 1).end)
      && !verify_fetch_extents (side, pos, error))
    return FALSE;
  while (g_array_index (exts, Extent, side->ext_index).end <= pos)
    side->ext_index++;
  ext = &g_array_index (exts, Extent, side->ext_index);
  *end = ext->end;
  *zero = ext->zero;
  return TRUE;
}

/* ---- planning and reading ------------------------------------------------ */

/* The next range to read, skipping what reads as zeroes on both sides;
 * *len == 0 at the end of the disk. */
static gboolean
verify_next_range (Verify *v, gint64 *offset, gsize *len, GError **error)
{
  gint64 size = v->result->size;

  *len = 0;
  while (v->pos < size)
    {
      gint64 end_a, end_b;
      gboolean zero_a, zero_b;

      if (!verify_extent_at (&v->side[0], v->pos, &end_a, &zero_a, error)
          || !verify_extent_at (&v->side[1], v->pos, &end_b, &zero_b, error))
        return FALSE;
      end_a = MIN (end_a, end_b);
      if (zero_a && zero_b)
        {
          v->result->hole_bytes += end_a - v->pos;
          v->pos = end_a;
          continue;
        }
      *offset = v->pos;
      *len = MIN (end_a - v->pos, (gint64) VERIFY_READ_SIZE);
      v->pos += *len;
      return TRUE;
    }
  return TRUE;
}

static int
verify_read_done_cb (void *user_data, int *error)
{
  Piece *piece = user_data;

  if (*error != 0 && piece->err == 0)
    piece->err = *error;
  piece->pending--;
  return 1;  /* retire the command */
}

static gboolean
verify_submit (Verify *v, Piece *piece, gint64 offset, gsize len, GError **error)
{
  piece->offset = offset;
  piece->len = len;
  piece->err = 0;
  piece->pending = 0;
  v->busy++;
  for (int i = 0; i < 2; i++)
    {
      nbd_completion_callback done = { .callback = verify_read_done_cb, .user_data = piece };

      if (piece->buf[i] == NULL)
        piece->buf[i] = g_malloc (VERIFY_READ_SIZE);
      if (nbd_aio_pread (v->side[i].nbd, piece->buf[i], len, offset, done, 0) == -1)
        return verify_nbd_error (&v->side[i], "read", error);
      piece->pending++;
    }
  return TRUE;
}

/* Fills every free slot with a new read pair. */
static gboolean
verify_fill (Verify *v, GError **error)
{
  for (guint i = 0; i < VERIFY_IN_FLIGHT && v->pos < v->result->size; i++)
    {
      Piece *piece = &v->pieces[i];
      gint64 offset = 0;
      gsize len = 0;

      if (piece->len != 0)
        continue;
      if (!verify_next_range (v, &offset, &len, error))
        return FALSE;
      if (len == 0)
        break;
      if (!verify_submit (v, piece, offset, len, error))
        return FALSE;
    }
  return TRUE;
}

/* ---- the event loop ------------------------------------------------------ */

static short
verify_poll_events (struct nbd_handle *nbd)
{
  unsigned dir = nbd_aio_get_direction (nbd);

  return ((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0)
         | ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0);
}

/* Waits up to @timeout_ms (-1: no limit) for either connection to be ready
 * and lets libnbd move on. */
static gboolean
verify_wait (Verify *v, int timeout_ms, GError **error)
{
  struct pollfd fds[2];

  for (int i = 0; i < 2; i++)
    fds[i] = (struct pollfd) { nbd_aio_get_fd (v->side[i].nbd),
                               verify_poll_events (v->side[i].nbd), 0 };
  if (poll (fds, 2, timeout_ms) == -1)
    {
      int saved = errno;
      if (saved == EINTR)
        return TRUE;  /* a signal: the caller checks the cancellable */
      return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_FAILED, "poll: %s",
                          g_strerror (saved)), FALSE;
    }
  for (int i = 0; i < 2; i++)
    {
      int rc = 0;
      if ((fds[i].revents & (POLLIN | POLLHUP | POLLERR)) && (fds[i].events & POLLIN))
        rc = nbd_aio_notify_read (v->side[i].nbd);
      else if ((fds[i].revents & (POLLOUT | POLLHUP | POLLERR)) && (fds[i].events & POLLOUT))
        rc = nbd_aio_notify_write (v->side[i].nbd);
      if (rc == -1)
        return verify_nbd_error (&v->side[i], "connection", error);
    }
  return TRUE;
}

static void
verify_compare (Verify *v, const Piece *piece)
{
  VerifyResult *r = v->result;

  if (memcmp (piece->buf[0], piece->buf[1], piece->len) == 0)
    return;
  for (gsize i = 0; i < piece->len; i++)
    {
      if (piece->buf[0][i] == piece->buf[1][i])
        continue;
      if (r->first_diff < 0 || piece->offset + (gint64) i < r->first_diff)
        r->first_diff = piece->offset + i;
      r->diff_bytes++;
    }
}

/* Compares the pieces whose reads have both completed and frees their slots. */
static gboolean
verify_harvest (Verify *v, GError **error)
{
  for (guint i = 0; i < VERIFY_IN_FLIGHT; i++)
    {
      Piece *piece = &v->pieces[i];

      if (piece->len == 0 || piece->pending > 0)
        continue;
      if (piece->err != 0)
        return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                            "reading %zu bytes at offset %" G_GINT64_FORMAT ": %s",
                            piece->len, piece->offset, g_strerror (piece->err)), FALSE;
      verify_compare (v, piece);
      piece->len = 0;
      v->busy--;
    }
  return TRUE;
}

/* Lets signal handlers run (they cancel @cancellable) and checks it. */
static gboolean
verify_check_cancelled (GCancellable *cancellable, GError **error)
{
  while (g_main_context_iteration (NULL, FALSE))
    ;
  return !g_cancellable_set_error_if_cancelled (cancellable, error);
}

static gboolean
verify_run (Verify *v, GCancellable *cancellable, GError **error)
{
  for (;;)
    {
      if (!verify_check_cancelled (cancellable, error) || !verify_fill (v, error))
        return FALSE;
      if (v->busy == 0)
        return TRUE;  /* nothing left to read */
      if (!verify_wait (v, -1, error) || !verify_harvest (v, error))
        return FALSE;
    }
}

/* ---- the entry point ----------------------------------------------------- */

static gboolean
verify_reads_pending (const Verify *v)
{
  for (guint i = 0; i < VERIFY_IN_FLIGHT; i++)
    if (v->pieces[i].len != 0 && v->pieces[i].pending > 0)
      return TRUE;
  return FALSE;
}

/* After an error or a cancel: lets the reads in flight finish (for a while) so
 * that qemu-nbd sees a quiet disconnect, not a broken pipe. */
static void
verify_drain (Verify *v)
{
  gint64 deadline = g_get_monotonic_time () + VERIFY_DRAIN_USEC;

  while (verify_reads_pending (v) && g_get_monotonic_time () < deadline
         && verify_wait (v, 100, NULL))
    ;
}

static void
verify_clear (Verify *v)
{
  if (v->side[0].nbd != NULL && v->side[1].nbd != NULL)
    verify_drain (v);
  for (int i = 0; i < 2; i++)
    verify_side_clear (&v->side[i]);
  for (guint i = 0; i < VERIFY_IN_FLIGHT; i++)
    {
      g_free (v->pieces[i].buf[0]);
      g_free (v->pieces[i].buf[1]);
    }
}

static gboolean
verify_sizes_match (const Verify *v, GError **error)
{
  if (v->side[0].size == v->side[1].size)
    return TRUE;
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
               "%s is %" G_GINT64_FORMAT " bytes, %s is %" G_GINT64_FORMAT " bytes",
               v->side[0].name, v->side[0].size, v->side[1].name, v->side[1].size);
  return FALSE;
}

gboolean
nbd_verify (const char *a, const char *b, VerifyResult *result, GCancellable *cancellable,
            GError **error)
{
  Verify v = { .result = result };
  gint64 start = g_get_monotonic_time ();
  gboolean ok;

  *result = (VerifyResult) { .first_diff = -1 };
  ok = verify_open (&v.side[0], a, error) && verify_open (&v.side[1], b, error)
       && verify_sizes_match (&v, error);
  if (ok)
    {
      result->size = v.side[0].size;
      ok = verify_run (&v, cancellable, error);
    }
  verify_clear (&v);
  result->seconds = (g_get_monotonic_time () - start) / 1e6;
  return ok;
}
