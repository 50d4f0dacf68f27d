/* Waiting for one GAsyncResult by iterating the main context (sync wrappers only). */
#include "common/async.h"

void
blkmig_store_result_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  GAsyncResult **slot = user_data;

  *slot = g_object_ref (result);
}

GAsyncResult *
blkmig_await (GAsyncResult **slot)
{
  GMainContext *ctx = g_main_context_get_thread_default ();

  while (*slot == NULL)
    g_main_context_iteration (ctx, TRUE);
  return *slot;
}

static gboolean
blkmig_flag_cb (gpointer user_data)
{
  *(gboolean *) user_data = TRUE;
  return G_SOURCE_REMOVE;
}

void
blkmig_sleep (guint ms, GCancellable *cancellable)
{
  GMainContext *ctx = g_main_context_get_thread_default ();
  gboolean done = FALSE;
  guint id = g_timeout_add (ms, blkmig_flag_cb, &done);

  while (!done && !g_cancellable_is_cancelled (cancellable))
    g_main_context_iteration (ctx, TRUE);
  if (!done)
    g_source_remove (id);
}
