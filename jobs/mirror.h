/* How blkmig starts a mirror job: its tuning knobs and the blockdev-mirror arguments. */
#pragma once

#include <json-glib/json-glib.h>

typedef struct {
  gint64 speed;          /* bytes/s, 0 = unlimited */
  gint64 buf_size;       /* bytes in flight, 0 = QEMU's default (16 MiB) */
  gint64 granularity;    /* dirty-bitmap granularity, 0 = QEMU's default */
  char *copy_mode;       /* "background" (default) or "write-blocking" */
} MirrorTuning;

void mirror_tuning_clear (MirrorTuning *tuning);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (MirrorTuning, mirror_tuning_clear)

/* Checks the knobs the way QEMU would, with messages naming the option. */
gboolean mirror_tuning_check (const MirrorTuning *tuning, GError **error);
/* blockdev-mirror arguments: sync full, explicit job-id, auto-dismiss off. */
JsonNode *mirror_args_new (const char *job_id, const char *device, const char *target,
                           const MirrorTuning *tuning);
