/* Waiting for one GAsyncResult by iterating the main context (sync wrappers only). */
#pragma once

#include <gio/gio.h>

/* A GAsyncReadyCallback that stores a reference to the result in *(GAsyncResult **) user_data. */
void blkmig_store_result_cb (GObject *source, GAsyncResult *result, gpointer user_data);
/* Iterates the thread-default main context until *slot is set; returns it. */
GAsyncResult *blkmig_await (GAsyncResult **slot);
/* Iterates the main context for @ms milliseconds, or until @cancellable fires. */
void blkmig_sleep (guint ms, GCancellable *cancellable);
