/* move --verify: compare the old and new images through this QEMU right after the pivot. */
#include "src/move-verify.h"

#include "common/error.h"
#include "nbd/nbd-server.h"
#include "nbd/verify.h"
#include "src/events.h"
#include "src/names.h"
#include "src/util.h"

static gboolean
move_verify_exports (QmpClient *qmp, const char *sock, const char *old_node,
                     const char *new_node, const char *tag, VerifyResult *result,
                     GCancellable *cancellable, GError **error)
{
  NbdEndpoint ep = { .unix_path = (char *) sock };
  g_autofree char *old_id = names_verify_export (tag, FALSE);
  g_autofree char *new_id = names_verify_export (tag, TRUE);
  g_autofree char *old_uri = nbd_endpoint_uri (&ep, old_id);
  g_autofree char *new_uri = nbd_endpoint_uri (&ep, new_id);
  gboolean ok;

  /* read-only exports go through QEMU's own caches: what the guest would see */
  ok = nbd_server_start (qmp, &ep, NULL, NULL, cancellable, error)
       && nbd_export_add (qmp, old_id, old_node, old_id, FALSE, cancellable, error)
       && nbd_export_add (qmp, new_id, new_node, new_id, FALSE, cancellable, error)
       && nbd_verify (old_uri, new_uri, result, cancellable, error);
  nbd_export_del (qmp, old_id, TRUE, NULL, NULL);
  nbd_export_del (qmp, new_id, TRUE, NULL, NULL);
  nbd_server_stop (qmp, NULL, NULL);
  return ok;
}

gboolean
move_verify_pivot (QmpClient *qmp, const char *disk, const char *old_node,
                   const char *new_node, const char *tag, gboolean quiet,
                   GCancellable *cancellable, GError **error)
{
  g_autofree char *dir = util_private_dir_new (error);
  g_autofree char *sock = dir != NULL ? g_build_filename (dir, "verify.sock", NULL) : NULL;
  VerifyResult result = { 0 };
  gint64 start = g_get_monotonic_time ();
  gboolean ok;

  if (dir == NULL)
    return FALSE;
  ok = move_verify_exports (qmp, sock, old_node, new_node, tag, &result, cancellable, error);
  util_private_dir_remove (dir);
  if (!ok)
    return g_prefix_error (error, "%s: verify: ", disk), FALSE;
  if (result.diff_bytes > 0)
    return g_set_error (error, BLKMIG_ERROR, BLKMIG_ERROR_DISK,
                        "%s: verify: the new image differs from the old one at offset %"
                        G_GINT64_FORMAT " (%" G_GINT64_FORMAT " bytes); the guest stays paused "
                        "on the new image: resume it (cont) or move it back", disk,
                        result.first_diff, result.diff_bytes), FALSE;
  events_emit ("verified", "disks", qmp_int (1),
               "elapsed-ms", qmp_int ((g_get_monotonic_time () - start) / 1000), NULL);
  if (!quiet)
    g_printerr ("blkmig: verified 1 disk: identical (%.2f s, guest paused meanwhile)\n",
                (g_get_monotonic_time () - start) / 1e6);
  return TRUE;
}
