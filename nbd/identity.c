/* The content identity of one layer of a backing chain, hashed through qemu-nbd. */
#include "nbd/identity.h"

#include <errno.h>
#include <fcntl.h>
#include <libnbd.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error.h"
#include "common/escape.h"
#include "common/json.h"

#define IDENTITY_READ_SIZE (4 << 20)     /* bytes per read request */
#define IDENTITY_STATUS_SPAN (1 << 30)   /* bytes per block status request */
/* qemu-nbd --allocation-depth: 0 unallocated, 1 this layer (libnbd has no macro). */
#define IDENTITY_CONTEXT_DEPTH "qemu:allocation-depth"
/* What is hashed: this tag (another way of hashing would take another one), then
 * for each maximal run of one kind its record (the kind's letter, offset and length
 * as 8-byte big-endian integers), a data run's record followed by its bytes. */
#define IDENTITY_TAG "blkmig layer identity 1\n"

/* What a run of the layer is; the values are what the hash records. */
typedef enum {
  KIND_DATA = 'D',          /* allocated here, with data: its bytes are hashed */
  KIND_ZERO = 'Z',          /* allocated here, reads as zeroes (zero cluster, raw hole) */
  KIND_UNALLOCATED = 'U',   /* not in this layer: a backing file would show through */
} Kind;

typedef struct {
  gint64 end;        /* the extent ends here (exclusive) */
  guint32 flags;     /* the context's status flags (or depth) */
} Extent;

/* The extents of one context from the last block status reply. */
typedef struct {
  const char *context;
  GArray *extents;   /* of Extent, in order, covering [Layer.status_start, last end) */
  guint index;       /* the first extent that may still contain the cursor */
} Context;

typedef struct {
  const char *path;
  struct nbd_handle *nbd;
  gint64 size;
  gint64 status_start;
  Context alloc;     /* base:allocation */
  Context depth;     /* qemu:allocation-depth */
  GChecksum *sum;
  guchar *buf[2];    /* IDENTITY_READ_SIZE bytes each: one hashed, one being read */
} Layer;

/* ---- opening the layer --------------------------------------------------- */

static gboolean
identity_nbd_error (const Layer *layer, const char *what, GError **error)
{
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK, "%s: %s: %s", layer->path, what,
               nbd_get_error () != NULL ? nbd_get_error () : "unknown libnbd error");
  return FALSE;
}

/* "json:{...}" opening @path alone: no backing file, shared with a QEMU that has it
 * open.  json-glib escapes the name; a plain file name could be taken for a protocol. */
static char *
identity_json_filename (const char *path, const char *format, const char *protocol)
{
  g_autoptr(JsonBuilder) b = json_builder_new ();
  g_autoptr(JsonNode) root = NULL;
  g_autofree char *text = NULL;

  json_builder_begin_object (b);
  blkmig_json_add_string (b, "driver", format);
  if (g_str_equal (format, "qcow2"))
    blkmig_json_add_string (b, "backing", NULL);
  blkmig_json_add_bool (b, "force-share", TRUE);
  json_builder_set_member_name (b, "file");
  json_builder_begin_object (b);
  blkmig_json_add_string (b, "driver", protocol);
  blkmig_json_add_string (b, "filename", path);
  json_builder_end_object (b);
  json_builder_end_object (b);
  root = json_builder_get_root (b);
  text = json_to_string (root, FALSE);
  return g_strconcat ("json:", text, NULL);
}

static const char *
identity_fail (const char *path, const char *problem, GError **error)
{
  g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK, "cannot read %s: %s", path, problem);
  return NULL;
}

/* The protocol driver for @path, open as @fd: "file", or "host_device" (LVM);
 * NULL with an error when it cannot hold an image of @format. */
static const char *
identity_protocol (const char *path, int fd, const char *format, GError **error)
{
  guchar magic[4] = { 0 };
  struct stat st;

  if (fstat (fd, &st) == -1)
    return identity_fail (path, g_strerror (errno), error);
  if (!S_ISREG (st.st_mode) && !S_ISBLK (st.st_mode))
    return identity_fail (path, "not a regular file or block device", error);
  if (g_str_equal (format, "qcow2") && pread (fd, magic, sizeof magic, 0) == -1)
    return identity_fail (path, g_strerror (errno), error);
  if (g_str_equal (format, "qcow2") && memcmp (magic, "QFI\xfb", sizeof magic) != 0)
    return identity_fail (path, "not a qcow2 image", error);
  return S_ISBLK (st.st_mode) ? "host_device" : "file";
}

/* What can be told before qemu-nbd runs, whose own messages go to stderr: the
 * protocol driver, or NULL with an error. */
static const char *
identity_check_file (const char *path, const char *format, GError **error)
{
  g_autofree char *quoted = NULL;
  const char *protocol;
  int fd;

  if (!g_str_equal (format, "qcow2") && !g_str_equal (format, "raw"))
    {
      quoted = blkmig_escape (format);
      g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                   "%s: cannot hash a layer of format '%s'", path, quoted);
      return NULL;
    }
  if (!g_utf8_validate (path, -1, NULL))
    return identity_fail (path, "the file name is not UTF-8", error);
  fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd == -1)
    return identity_fail (path, g_strerror (errno), error);
  protocol = identity_protocol (path, fd, format, error);
  close (fd);
  return protocol;
}

static gboolean
identity_open (Layer *layer, const char *format, const char *protocol, GError **error)
{
  g_autofree char *filename = identity_json_filename (layer->path, format, protocol);
  char *argv[] = { "qemu-nbd", "--read-only", "--allocation-depth", filename, NULL };

  layer->nbd = nbd_create ();
  if (layer->nbd == NULL)
    return identity_nbd_error (layer, "cannot create a libnbd handle", error);
  if (nbd_add_meta_context (layer->nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1
      || nbd_add_meta_context (layer->nbd, IDENTITY_CONTEXT_DEPTH) == -1)
    return identity_nbd_error (layer, "cannot request block status", error);
  if (nbd_connect_systemd_socket_activation (layer->nbd, argv) == -1)
    return identity_nbd_error (layer, "cannot serve the image with qemu-nbd", error);
  layer->size = nbd_get_size (layer->nbd);
  if (layer->size < 0)
    return identity_nbd_error (layer, "cannot get the size", error);
  /* Without them every layer would hash as all data: refuse rather than mislead. */
  if (nbd_can_meta_context (layer->nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) != 1
      || nbd_can_meta_context (layer->nbd, IDENTITY_CONTEXT_DEPTH) != 1)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                        "%s: qemu-nbd does not report the allocation", layer->path), FALSE;
  return TRUE;
}

/* ---- block status -------------------------------------------------------- */

static int
identity_extent_cb (void *user_data, const char *metacontext, uint64_t offset,
                    uint32_t *entries, size_t nr_entries, int *error)
{
  Layer *layer = user_data;
  Context *ctx = g_str_equal (metacontext, layer->alloc.context) ? &layer->alloc
                 : g_str_equal (metacontext, layer->depth.context) ? &layer->depth : NULL;
  gint64 end = offset;

  if (ctx == NULL || ctx->extents->len > 0 || (gint64) offset != layer->status_start)
    return 0;  /* another context, a second reply, or one for somewhere else */
  for (size_t i = 0; i + 1 < nr_entries; i += 2)
    {
      Extent ext = { MIN (end + (gint64) entries[i], layer->size), entries[i + 1] };
      if (ext.end <= end)
        continue;
      g_array_append_val (ctx->extents, ext);
      end = ext.end;
    }
  return 0;
}

static gboolean
identity_fetch_extents (Layer *layer, gint64 pos, GError **error)
{
  gint64 count = MIN ((gint64) IDENTITY_STATUS_SPAN, layer->size - pos);
  nbd_extent_callback cb = { .callback = identity_extent_cb, .user_data = layer };

  layer->status_start = pos;
  g_array_set_size (layer->alloc.extents, 0);
  g_array_set_size (layer->depth.extents, 0);
  layer->alloc.index = layer->depth.index = 0;
  if (nbd_block_status (layer->nbd, count, pos, cb, 0) == -1)
    return identity_nbd_error (layer, "block status", error);
  if (layer->alloc.extents->len == 0 || layer->depth.extents->len == 0)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                        "%s: qemu-nbd reported no allocation at offset %" G_GINT64_FORMAT,
                        layer->path, pos), FALSE;
  return TRUE;
}

/* The extent of @ctx containing @pos, which the last reply covers. */
static const Extent *
identity_context_at (Context *ctx, gint64 pos)
{
  while (g_array_index (ctx->extents, Extent, ctx->index).end <= pos)
    ctx->index++;
  return &g_array_index (ctx->extents, Extent, ctx->index);
}

static gboolean
identity_covered (const Context *ctx, gint64 pos)
{
  return ctx->extents->len > 0
         && pos < g_array_index (ctx->extents, Extent, ctx->extents->len - 1).end;
}

/* The kind of the layer at @pos (which only grows from call to call), and where
 * that stretch ends as far as the last reply tells. */
static gboolean
identity_kind_at (Layer *layer, gint64 pos, Kind *kind, gint64 *end, GError **error)
{
  const Extent *alloc, *depth;

  if ((pos < layer->status_start || !identity_covered (&layer->alloc, pos)
       || !identity_covered (&layer->depth, pos))
      && !identity_fetch_extents (layer, pos, error))
    return FALSE;
  alloc = identity_context_at (&layer->alloc, pos);
  depth = identity_context_at (&layer->depth, pos);
  *kind = depth->flags == 0 ? KIND_UNALLOCATED
          : (alloc->flags & LIBNBD_STATE_HOLE) != 0 ? KIND_ZERO : KIND_DATA;
  *end = MIN (alloc->end, depth->end);
  return TRUE;
}

/* The longest run of one kind from @pos: the same layer gives the same runs however
 * qemu-nbd splits its replies. */
static gboolean
identity_run_at (Layer *layer, gint64 pos, Kind *kind, gint64 *end, GError **error)
{
  if (!identity_kind_at (layer, pos, kind, end, error))
    return FALSE;
  while (*end < layer->size)
    {
      Kind next;
      gint64 next_end;

      if (!identity_kind_at (layer, *end, &next, &next_end, error))
        return FALSE;
      if (next != *kind)
        break;
      *end = next_end;
    }
  return TRUE;
}

/* ---- hashing ------------------------------------------------------------- */

/* Lets signal handlers run (they cancel @cancellable) and checks it. */
static gboolean
identity_check_cancelled (GCancellable *cancellable, GError **error)
{
  while (g_main_context_iteration (NULL, FALSE))
    ;
  return !g_cancellable_set_error_if_cancelled (cancellable, error);
}

/* A run's record: its kind, offset and length (big-endian). */
static void
identity_hash_run (Layer *layer, Kind kind, gint64 offset, gint64 length)
{
  guchar record[17] = { (guchar) kind };
  guint64 be_offset = GUINT64_TO_BE ((guint64) offset);
  guint64 be_length = GUINT64_TO_BE ((guint64) length);

  memcpy (record + 1, &be_offset, 8);
  memcpy (record + 9, &be_length, 8);
  g_checksum_update (layer->sum, record, sizeof record);
}

/* Starts reading [offset, offset + len) into @buf. */
static gboolean
identity_read_start (Layer *layer, guchar *buf, gint64 offset, gsize len, int64_t *cookie,
                     GError **error)
{
  *cookie = nbd_aio_pread (layer->nbd, buf, len, offset, NBD_NULL_COMPLETION, 0);
  return *cookie != -1 || identity_nbd_error (layer, "read", error);
}

static gboolean
identity_read_wait (Layer *layer, int64_t cookie, GError **error)
{
  int done;

  while ((done = nbd_aio_command_completed (layer->nbd, cookie)) == 0)
    if (nbd_poll (layer->nbd, -1) == -1)
      return identity_nbd_error (layer, "read", error);
  return done == 1 || identity_nbd_error (layer, "read", error);
}

/* Hashes [offset, end) chunk by chunk, reading the next chunk while hashing one;
 * returns with no read in flight. */
static gboolean
identity_hash_data (Layer *layer, gint64 offset, gint64 end, GCancellable *cancellable,
                    GError **error)
{
  gsize len = MIN (end - offset, (gint64) IDENTITY_READ_SIZE);
  int64_t cookie = 0;
  guint cur = 0;

  if (!identity_read_start (layer, layer->buf[cur], offset, len, &cookie, error))
    return FALSE;
  for (;;)
    {
      gint64 next = offset + len;
      gsize next_len = MIN (end - next, (gint64) IDENTITY_READ_SIZE);

      if (!identity_read_wait (layer, cookie, error)
          || (next < end && (!identity_check_cancelled (cancellable, error)
                             || !identity_read_start (layer, layer->buf[!cur], next, next_len,
                                                      &cookie, error))))
        return FALSE;
      g_checksum_update (layer->sum, layer->buf[cur], len);
      if (next >= end)
        return TRUE;
      offset = next;
      len = next_len;
      cur = !cur;
    }
}

static gboolean
identity_hash_layer (Layer *layer, GCancellable *cancellable, GError **error)
{
  gint64 pos = 0;

  g_checksum_update (layer->sum, (const guchar *) IDENTITY_TAG, strlen (IDENTITY_TAG));
  while (pos < layer->size)
    {
      Kind kind;
      gint64 end;

      if (!identity_check_cancelled (cancellable, error)
          || !identity_run_at (layer, pos, &kind, &end, error))
        return FALSE;
      identity_hash_run (layer, kind, pos, end - pos);
      if (kind == KIND_DATA && !identity_hash_data (layer, pos, end, cancellable, error))
        return FALSE;
      pos = end;
    }
  return TRUE;
}

/* ---- the entry point ----------------------------------------------------- */

static void
identity_clear (Layer *layer)
{
  /* A clean disconnect (after any read in flight): qemu-nbd exits without complaining. */
  if (layer->nbd != NULL
      && (nbd_aio_is_ready (layer->nbd) == 1 || nbd_aio_is_processing (layer->nbd) == 1))
    nbd_shutdown (layer->nbd, 0);
  g_clear_pointer (&layer->nbd, nbd_close);
  g_clear_pointer (&layer->alloc.extents, g_array_unref);
  g_clear_pointer (&layer->depth.extents, g_array_unref);
  g_clear_pointer (&layer->sum, g_checksum_free);
  g_clear_pointer (&layer->buf[0], g_free);
  g_clear_pointer (&layer->buf[1], g_free);
}

char *
nbd_layer_identity (const char *path, const char *format, GCancellable *cancellable,
                    GError **error)
{
  Layer layer = {
    .path = path,
    .alloc = { LIBNBD_CONTEXT_BASE_ALLOCATION, g_array_new (FALSE, FALSE, sizeof (Extent)) },
    .depth = { IDENTITY_CONTEXT_DEPTH, g_array_new (FALSE, FALSE, sizeof (Extent)) },
    .sum = g_checksum_new (G_CHECKSUM_SHA256),
    .buf = { g_malloc (IDENTITY_READ_SIZE), g_malloc (IDENTITY_READ_SIZE) },
  };
  const char *protocol = identity_check_file (path, format, error);
  char *identity = NULL;

  if (protocol != NULL && identity_open (&layer, format, protocol, error)
      && identity_hash_layer (&layer, cancellable, error))
    identity = g_strconcat ("sha256:", g_checksum_get_string (layer.sum), NULL);
  identity_clear (&layer);
  return identity;
}
