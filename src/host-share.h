/* What the operations on one host share through the state directory: run slots (--max-parallel) and a bandwidth budget (--host-bandwidth). */
#pragma once

#include <gio/gio.h>

/* ---- run slots ---- */

typedef struct _HostSlot HostSlot;

/* Waits until fewer than @max operations hold a slot (STATE_DIR/slot-K.lock,
 * K < @max, held with flock: a process that dies lets go of it), then holds one
 * until host_slot_release.  While it waits it emits the phase event `queued` once
 * and serves the main loop (the control socket); @cancellable ends the wait
 * (G_IO_ERROR_CANCELLED). */
HostSlot *host_slot_acquire (guint max, GCancellable *cancellable, GError **error);
void host_slot_release (HostSlot *slot);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (HostSlot, host_slot_release)

/* ---- the bandwidth budget ---- */

typedef struct _HostBudget HostBudget;

/* Joins the budget as @name (STATE_DIR/NAME.bw, held with a shared flock while
 * the operation lives). */
HostBudget *host_budget_join (const char *name, GError **error);
void host_budget_leave (HostBudget *budget);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (HostBudget, host_budget_leave)
/* Publishes how many of this operation's disks still copy, and returns how many
 * copy on the whole host (every live member's, this one's included). */
guint host_budget_share (HostBudget *budget, guint copying);
/* Whether the budget file at @path belongs to no live operation (nobody holds
 * its lock): gc removes those. */
gboolean host_budget_is_dead (const char *path);
