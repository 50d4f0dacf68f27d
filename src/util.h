/* Small helpers for commands: private directories, image creation, signals. */
#pragma once

#include <gio/gio.h>
#include <json-glib/json-glib.h>

/* A new 0700 directory under $XDG_RUNTIME_DIR (or the temp dir) for sockets. */
char *util_private_dir_new (GError **error);
/* A target is made in a private directory named like this inside the target's own
 * directory, then renamed into place (util_image_create). */
#define UTIL_STAGING_PREFIX ".blkmig-"
/* Whether @path is a directory blkmig made: a real directory (not a link) of the
 * effective user, mode 0700, named blkmig-XXXXXX in
 * $XDG_RUNTIME_DIR or the temp directory (where util_private_dir_new makes them), or
 * UTIL_STAGING_PREFIX XXXXXX anywhere. */
gboolean util_is_private_dir (const char *path);
/* Removes the files in @dir and @dir itself; quiet when it is already gone. */
void util_private_dir_remove (const char *dir);
/* qemu-img create -f FORMAT PATH SIZE. */
gboolean util_image_create (const char *path, const char *format, gint64 size,
                            GCancellable *cancellable, GError **error);
/* A new 0700 directory PARENT/.blkmig-XXXXXX where targets are made before they
 * are renamed into place. */
char *util_staging_dir_new (const char *parent, GError **error);
/* Makes a new image at @path and never touches anything already there: qemu-img
 * creates it inside @staging (a util_staging_dir_new of @path's directory, where
 * nobody else can plant a link), then it is renamed to @path with
 * RENAME_NOREPLACE; an existing @path (a file, a link, anything) fails with
 * BLKMIG_ERROR_DISK. */
gboolean util_image_create_new (const char *path, const char *staging, const char *format,
                                gint64 size, GCancellable *cancellable, GError **error);
/* The same for a qcow2 overlay backed by @backing (an absolute path, not opened:
 * a running VM holds its lock) in @backing_format. */
gboolean util_overlay_create_new (const char *path, const char *staging, const char *backing,
                                  const char *backing_format, gint64 size,
                                  GCancellable *cancellable, GError **error);
/* Writes @backing (@backing_format) into the qcow2 header of @path without reading
 * either (qemu-img rebase -u): for an image no QEMU has open. */
gboolean util_rebase_unsafe (const char *path, const char *backing, const char *backing_format,
                             GCancellable *cancellable, GError **error);
/* qemu-img commit -b @base @top: the data of every layer above @base up to @top
 * (a qcow2 whose header chain reaches @base) written into @base; the layers stay. */
gboolean util_commit_into (const char *top, const char *base, GCancellable *cancellable,
                           GError **error);
/* "vd-a_1" from any string: keeps [A-Za-z0-9-_.], replaces the rest with '_'. */
char *util_sanitize_name (const char *name);
/* Cancels @cancellable on SIGINT and SIGTERM for as long as the process runs. */
void util_cancel_on_signals (GCancellable *cancellable);
/* "1.5 GiB", "32 MiB": plain ASCII whatever the locale. */
char *util_human_size (gint64 bytes);
/* "1.5 GiB (1610612736 bytes)" */
char *util_format_bytes (gint64 bytes);
/* Whether nothing listens on the QMP socket @path any more (missing or refused):
 * that QEMU is gone, and with it everything blkmig had made inside it. */
gboolean util_qmp_gone (const char *path);
/* qemu-img info --output=json of @path (@format, NULL: probed; @chain: the whole
 * backing chain, an array; @force_share: -U, else a running QEMU's lock refuses);
 * BLKMIG_ERROR_DISK "cannot read PATH: qemu-img's words" when it fails. */
JsonNode *util_qemu_img_info (const char *path, const char *format, gboolean chain,
                              gboolean force_share, GCancellable *cancellable, GError **error);
/* The virtual size of @path opened as @format (never probed: a guest can write
 * any header into a raw image). */
gboolean util_image_size (const char *path, const char *format, gint64 *size,
                          GCancellable *cancellable, GError **error);
