/* The migration cookie: what the source offers, what the destination answers, the result. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

#define COOKIE_VERSION 1
/* The longest disk, node or export name (QEMU's ids are far shorter). */
#define COOKIE_MAX_NAME 128
/* The longest cookie text read or parsed (bytes). */
#define COOKIE_MAX_TEXT (1024 * 1024)
/* Sizes above this are rejected as absurd (1 EiB). */
#define COOKIE_MAX_SIZE (G_GINT64_CONSTANT (1) << 60)

/* A cookie grows as it travels: source → destination (adds the NBD endpoint and
 * per-disk exports) → result (adds the outcome).  Each kind validates the fields
 * it adds plus all earlier ones. */
typedef enum {
  COOKIE_KIND_SOURCE,
  COOKIE_KIND_DESTINATION,
  COOKIE_KIND_RESULT,
} CookieKind;

typedef enum {
  COOKIE_MODE_LIVE,
  COOKIE_MODE_COPY,
  COOKIE_MODE_MOVE,
} CookieMode;

/* The longest backing chain a cookie may describe. */
#define COOKIE_MAX_LAYERS 64

/* One read-only layer below a disk's active layer (--chain top, copy-base). */
typedef struct {
  char *name;            /* the file's base name (no directory), a plain file name */
  char *format;          /* "qcow2" or "raw" */
  gint64 virtual_size;
  gint64 allocated;
  char *identity;        /* "sha256:" + 64 hex digits (nbd_layer_identity); NULL for
                          * copy-base, which copies the layer instead of proving it */
  /* destination, copy-base */
  char *export_name;     /* the writable export the layer is copied into */
  char *target_path;     /* where the copy lives on the destination (shown only) */
} CookieLayer;

typedef struct {
  char *name;            /* the user's name: qdev id, BlockBackend or node name */
  char *node;            /* source root node name (what the mirror starts from) */
  char *format;          /* "qcow2", "raw", ... */
  gint64 virtual_size;   /* bytes, > 0 */
  gint64 allocated;      /* bytes on the host, >= 0 */
  GStrv backing;         /* backing file names, top first; NULL when none */
  char *sync;            /* "top": only the active layer moves (the destination has
                          * the chain); "copy-base": the active layer is mirrored and
                          * the chain copied beside it; NULL or "full": the whole disk */
  GPtrArray *chain;      /* CookieLayer below the active layer, nearest first; NULL
                          * when the cookie does not describe it */
  /* destination */
  char *export_name;     /* NBD export name on the destination */
  char *target_node;     /* destination node that is exported */
  char *target_path;     /* destination file, when known */
  gboolean created;      /* blkmig created target_path (remove it on failure) */
} CookieDisk;

typedef struct {
  char *name;
  gboolean mandatory;    /* a peer that does not know it must refuse */
} CookieFeature;

typedef struct {
  CookieKind kind;
  char *id;              /* 32 lowercase hex digits */
  CookieMode mode;
  char *source_host;
  char *machine;         /* the source's machine type ("pc-i440fx-7.2"), may be NULL */
  char *source_qemu;     /* the source QEMU's version ("7.2.22"), may be NULL */
  GPtrArray *features;   /* CookieFeature: offered (source) */
  GPtrArray *disks;      /* CookieDisk */
  /* destination */
  char *dest_host;
  char *dest_qemu;       /* the destination QEMU's version, may be NULL */
  GStrv accepted;        /* feature names the destination accepted */
  char *nbd_unix;        /* NBD endpoint: a UNIX socket path ... */
  char *nbd_host;        /* ... or host and port */
  int nbd_port;
  char *migrate_uri;     /* where the destination listens for the memory stream */
  /* result */
  char *status;          /* "completed", "copied", "moved" */
  gint64 downtime_ms;    /* -1 when not measured */
  gint64 bytes;          /* bytes the mirrors reported as copied */
} Cookie;

void cookie_layer_free (CookieLayer *layer);
CookieLayer *cookie_layer_new (const char *name, const char *format, gint64 virtual_size,
                               gint64 allocated, const char *identity);
/* Whether @value may name a layer's file: [A-Za-z0-9._+-], not "." or "..", at most
 * 255 bytes (a peer's base name: never a path). */
gboolean cookie_is_file_name (const char *value);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (CookieLayer, cookie_layer_free)
void cookie_disk_free (CookieDisk *disk);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (CookieDisk, cookie_disk_free)
void cookie_feature_free (CookieFeature *feature);
void cookie_free (Cookie *cookie);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (Cookie, cookie_free)

/* Whether @value is a QEMU version as QMP's greeting gives it: "MAJOR.MINOR.MICRO",
 * digits, at most 32 characters. */
gboolean cookie_is_qemu_version (const char *value);
/* Whether @value is what the cookie accepts as a QEMU name: [A-Za-z0-9._-#], at
 * most COOKIE_MAX_NAME characters (ids, node names, machine types). */
gboolean cookie_is_name (const char *value);
/* A new source cookie with a fresh random id and this host's name. */
/* A new migration id: 32 lowercase hex digits (a random UUID without its dashes). */
char *cookie_new_id (void);
Cookie *cookie_new (CookieMode mode);
/* A deep copy holding what a cookie of @kind (at most cookie->kind) has: the copy
 * serialises exactly as @cookie would with its kind set to @kind. */
Cookie *cookie_copy_as (const Cookie *cookie, CookieKind kind);
/* A deep copy: cookie_to_string() of both is the same text. */
Cookie *cookie_copy (const Cookie *cookie);
/* The destination's answer to @offer: its source part, kind destination, this host's
 * name and the features cookie_accept_features() accepted. */
Cookie *cookie_new_reply (const Cookie *offer);
/* The result cookie of @cookie (at least a destination cookie, else
 * BLKMIG_ERROR_COOKIE): its destination part, @status, no downtime measured, 0 bytes. */
Cookie *cookie_new_result (const Cookie *cookie, const char *status, GError **error);
CookieDisk *cookie_disk_new (const char *name, const char *node, const char *format,
                             gint64 virtual_size, gint64 allocated);
/* Adds a feature this build offers. */
void cookie_add_feature (Cookie *cookie, const char *name, gboolean mandatory);
/* Whether @cookie offers feature @name. */
gboolean cookie_has_feature (const Cookie *cookie, const char *name);
gboolean cookie_has_accepted (const Cookie *cookie, const char *feature);
CookieDisk *cookie_find_disk (const Cookie *cookie, const char *name);

const char *cookie_mode_to_string (CookieMode mode);
gboolean cookie_mode_from_string (const char *str, CookieMode *mode);
const char *cookie_kind_to_string (CookieKind kind);

/* Parses and validates.  The cookie must be at least of kind @min_kind.
 * Errors are BLKMIG_ERROR_COOKIE with one clear message each. */
Cookie *cookie_parse (const char *data, gssize len, CookieKind min_kind,
                      GError **error) G_GNUC_WARN_UNUSED_RESULT;
Cookie *cookie_load (const char *path, CookieKind min_kind,
                     GError **error) G_GNUC_WARN_UNUSED_RESULT;
/* Serialises (pretty-printed, stable key order, trailing newline). */
char *cookie_to_string (const Cookie *cookie);
gboolean cookie_save (const Cookie *cookie, const char *path, GError **error);

/* Unknown mandatory features in @offer are an error; unknown optional ones are
 * dropped.  Sets offer->accepted to the known features offered. */
gboolean cookie_accept_features (Cookie *offer, GError **error);
/* Checks a destination's answer against our offer: same id, same disks, same sizes. */
gboolean cookie_check_reply (const Cookie *offer, const Cookie *reply, GError **error);
