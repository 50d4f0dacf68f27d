/* --chain copy-base on the source: each disk's backing layers copied into the destination's exports beside the mirrors. */
#include "src/source-copy-base.h"

#include "common/error.h"
#include "common/escape.h"
#include "nbd/layer-copy.h"
#include "nbd/nbd-server.h"
#include "qmp/qmp-json.h"
#include "src/events.h"
#include "src/names.h"
#include "src/util.h"

#define BASE_COPY_TICK_MS 250
#define BASE_COPY_PROGRESS_TICKS 8   /* a progress line every 2 s */

typedef struct {
  BaseCopy *owner;
  LayerCopy copy;
  char *path;            /* the source's own file (QEMU's answer), never the cookie's */
  char *format;
  char *uri;
  char *label;           /* "vda: backing layer 1" (the disk's name escaped) */
  gint64 total;
  gint64 done;           /* written by the thread (__atomic) */
  gint64 sent;
  gint finished;         /* set by the thread once error is final */
  GError *error;
  GThread *thread;
} BaseLayer;

struct _BaseCopy {
  GPtrArray *layers;     /* BaseLayer */
  GCancellable *cancellable;
  JobGroup *group;
  gboolean quiet;
  guint timer;
  guint ticks;
  gboolean failed;       /* the group was told */
};

static void
base_layer_free (BaseLayer *layer)
{
  g_free (layer->path);
  g_free (layer->format);
  g_free (layer->uri);
  g_free (layer->label);
  g_clear_error (&layer->error);
  g_free (layer);
}

/* ---- the threads ---------------------------------------------------------- */

/* A failed copy fails the mirrors too, so the operation stops now. */
static void
base_copy_check_failed (BaseCopy *copy)
{
  for (guint i = 0; i < copy->layers->len; i++)
    {
      BaseLayer *layer = copy->layers->pdata[i];

      if (!copy->failed && g_atomic_int_get (&layer->finished) && layer->error != NULL
          && !g_error_matches (layer->error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
        {
          g_autofree char *why = g_strdup_printf ("%s: %s", layer->label, layer->error->message);
          copy->failed = TRUE;
          job_group_fail_all (copy->group, why);
          return;
        }
    }
}

static gpointer
base_layer_thread (gpointer data)
{
  BaseLayer *layer = data;
  BaseCopy *copy = layer->owner;

  nbd_copy_layer (&layer->copy, copy->cancellable, &layer->error);
  g_atomic_int_set (&layer->finished, 1);
  g_main_context_wakeup (NULL);
  return NULL;
}

/* ---- starting --------------------------------------------------------------- */

/* nbd_endpoint_uri's, made TLS (nbds, nbds+unix) with the credentials' directory. */
static char *
base_copy_uri (const BaseCopyTarget *target, const char *export_name)
{
  NbdEndpoint ep = { .unix_path = (char *) target->unix_path, .host = (char *) target->host,
                     .port = target->port };
  g_autofree char *uri = nbd_endpoint_uri (&ep, export_name);
  g_autofree char *dir = NULL;

  if (target->tls_dir == NULL)
    return g_steal_pointer (&uri);
  dir = g_uri_escape_string (target->tls_dir, "/", FALSE);
  return g_strdup_printf ("nbds%s%stls-certificates=%s", uri + strlen ("nbd"),
                          target->unix_path != NULL ? "&" : "?", dir);
}

static gboolean
base_copy_check_target (const BaseCopyTarget *target, GError **error)
{
  if (target->tls_dir == NULL || target->unix_path != NULL
      || g_strcmp0 (target->tls_hostname, target->host) == 0)
    return TRUE;
  return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_USAGE,
                      "--chain copy-base over TLS checks the destination's certificate "
                      "against the address it connects to (%s): --tls-hostname must be that "
                      "address", target->host), FALSE;
}

/* The source's own chain must be the one the cookie describes: the layers copied
 * are QEMU's files, matched to the destination's exports by position. */
static gboolean
base_copy_check_chain (const CookieDisk *disk, const char *const *files,
                       const char *const *formats, GError **error)
{
  guint have = files != NULL ? g_strv_length ((GStrv) files) : 0;
  g_autofree char *name = blkmig_escape (disk->name);

  if (have != disk->chain->len)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                        "%s: the disk has %u backing layers now, the cookie %u", name, have,
                        disk->chain->len), FALSE;
  for (guint j = 0; j < have; j++)
    {
      const CookieLayer *layer = disk->chain->pdata[j];
      g_autofree char *base = g_path_get_basename (files[j]);

      if (!g_path_is_absolute (files[j]) || !g_str_equal (base, layer->name)
          || g_strcmp0 (formats[j], layer->format) != 0)
        return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                            "%s: backing layer %u changed since begin", name, j + 1), FALSE;
    }
  return TRUE;
}

static void
base_copy_add (BaseCopy *copy, const Cookie *cookie, guint i, const char *const *files,
               const char *const *formats, const BaseCopyTarget *target)
{
  const CookieDisk *disk = cookie->disks->pdata[i];
  g_autofree char *name = blkmig_escape (disk->name);

  for (guint j = 0; j < disk->chain->len; j++)
    {
      const CookieLayer *cl = disk->chain->pdata[j];
      BaseLayer *layer = g_new0 (BaseLayer, 1);

      layer->owner = copy;
      layer->path = g_strdup (files[j]);
      layer->format = g_strdup (formats[j]);
      layer->uri = base_copy_uri (target, cl->export_name);
      layer->label = g_strdup_printf ("%s: backing layer %u", name, j + 1);
      layer->total = cl->virtual_size;
      layer->copy = (LayerCopy) { .path = layer->path, .format = layer->format,
                                  .dest_uri = layer->uri, .bottom = j + 1 == disk->chain->len,
                                  .done = &layer->done, .sent = &layer->sent,
                                  .speed = target->speed };
      g_ptr_array_add (copy->layers, layer);
    }
}

/* Exports are matched by our own names: an answer cannot point a copy elsewhere. */
static gboolean
base_copy_check_exports (const Cookie *cookie, guint i, GError **error)
{
  const CookieDisk *disk = cookie->disks->pdata[i];

  for (guint j = 0; j < disk->chain->len; j++)
    {
      g_autofree char *want = names_layer_export (cookie->id, i, j);
      const char *have = ((CookieLayer *) disk->chain->pdata[j])->export_name;

      if (g_strcmp0 (have, want) != 0)
        return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_COOKIE,
                            "disk %u: the destination answered export %s for backing layer "
                            "%u, not %s", i, have, j + 1, want), FALSE;
    }
  return TRUE;
}

static void
base_copy_progress (BaseCopy *copy)
{
  gint64 done = 0, total = 0;
  g_autofree char *d = NULL;
  g_autofree char *t = NULL;

  base_copy_totals (copy, &done, &total);
  events_emit ("progress", "part", qmp_str ("base"), "done", qmp_int (done),
               "total", qmp_int (total), NULL);
  if (copy->quiet)
    return;
  d = util_human_size (done);
  t = util_human_size (total);
  g_printerr ("blkmig: base layers: %s of %s (%d%%)\n", d, t,
              total > 0 ? (int) (done * 100 / total) : 100);
}

static gboolean
base_copy_tick_cb (gpointer data)
{
  BaseCopy *copy = data;

  base_copy_check_failed (copy);
  if (++copy->ticks % BASE_COPY_PROGRESS_TICKS == 0)
    base_copy_progress (copy);
  return G_SOURCE_CONTINUE;
}

BaseCopy *
base_copy_start (const Cookie *cookie, GPtrArray *files, GPtrArray *formats,
                 const BaseCopyTarget *target, JobGroup *group, gboolean quiet, GError **error)
{
  g_autoptr(BaseCopy) copy = g_new0 (BaseCopy, 1);

  copy->layers = g_ptr_array_new_with_free_func ((GDestroyNotify) base_layer_free);
  copy->cancellable = g_cancellable_new ();
  copy->group = group;
  copy->quiet = quiet;
  for (guint i = 0; i < cookie->disks->len; i++)
    {
      const CookieDisk *disk = cookie->disks->pdata[i];

      if (g_strcmp0 (disk->sync, "copy-base") != 0)
        continue;
      if (!base_copy_check_chain (disk, files->pdata[i], formats->pdata[i], error)
          || !base_copy_check_exports (cookie, i, error))
        return NULL;
      base_copy_add (copy, cookie, i, files->pdata[i], formats->pdata[i], target);
    }
  if (copy->layers->len == 0 || !base_copy_check_target (target, error))
    return NULL;
  for (guint i = 0; i < copy->layers->len; i++)
    {
      BaseLayer *layer = copy->layers->pdata[i];
      layer->thread = g_thread_new ("blkmig-base", base_layer_thread, layer);
    }
  copy->timer = g_timeout_add (BASE_COPY_TICK_MS, base_copy_tick_cb, copy);
  return g_steal_pointer (&copy);
}

/* ---- waiting ---------------------------------------------------------------- */

/* The first failure (a cancellation only if nothing else failed), or NULL. */
static BaseLayer *
base_copy_first_error (BaseCopy *copy, gboolean *all_done)
{
  BaseLayer *cancelled = NULL;

  *all_done = TRUE;
  for (guint i = 0; i < copy->layers->len; i++)
    {
      BaseLayer *layer = copy->layers->pdata[i];

      if (!g_atomic_int_get (&layer->finished))
        {
          *all_done = FALSE;
          continue;
        }
      if (layer->error == NULL)
        continue;
      if (!g_error_matches (layer->error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
        return layer;
      cancelled = layer;
    }
  return cancelled;
}

gboolean
base_copy_wait (BaseCopy *copy, GCancellable *cancellable, GError **error)
{
  gboolean all_done = FALSE;
  BaseLayer *failed = NULL;

  for (;;)
    {
      failed = base_copy_first_error (copy, &all_done);
      if (failed != NULL || all_done)
        break;
      if (g_cancellable_set_error_if_cancelled (cancellable, error))
        return FALSE;
      g_main_context_iteration (NULL, TRUE);
    }
  /* like a mirror's: a copy that failed (a cancellation stays one) */
  if (failed != NULL && g_error_matches (failed->error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return g_set_error (error, G_IO_ERROR, G_IO_ERROR_CANCELLED, "%s: %s", failed->label,
                        failed->error->message), FALSE;
  if (failed != NULL)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_JOB, "%s: %s", failed->label,
                        failed->error->message), FALSE;
  base_copy_progress (copy);
  return TRUE;
}

void
base_copy_totals (BaseCopy *copy, gint64 *done, gint64 *total)
{
  *done = *total = 0;
  for (guint i = 0; copy != NULL && i < copy->layers->len; i++)
    {
      BaseLayer *layer = copy->layers->pdata[i];

      *done += __atomic_load_n (&layer->done, __ATOMIC_RELAXED);
      *total += layer->total;
    }
}

void
base_copy_free (BaseCopy *copy)
{
  if (copy == NULL)
    return;
  g_cancellable_cancel (copy->cancellable);
  for (guint i = 0; copy->layers != NULL && i < copy->layers->len; i++)
    {
      BaseLayer *layer = copy->layers->pdata[i];
      if (layer->thread != NULL)
        g_thread_join (layer->thread);
    }
  if (copy->timer != 0)
    g_source_remove (copy->timer);
  g_clear_pointer (&copy->layers, g_ptr_array_unref);
  g_clear_object (&copy->cancellable);
  g_free (copy);
}
