/* Integration-test harness: real QEMU processes, images, and blkmig runs. */
#pragma once

#include <gio/gio.h>

#include "qmp/qmp-client.h"

typedef struct {
  const char *id;        /* qdev id, e.g. "vda"; the format node is "drive-<id>" */
  const char *path;
  const char *format;
} VmDisk;

typedef struct {
  char *name;
  char *qmp_path;        /* the socket blkmig uses */
  GSubprocess *proc;
  QmpClient *qmp;        /* the test's own connection */
} Vm;

/* A fresh scratch directory under /var/tmp, removed by rig_free. */
typedef struct {
  char *dir;
  GPtrArray *vms;
} Rig;

Rig *rig_new (void);
void rig_free (Rig *rig);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (Rig, rig_free)
char *rig_path (Rig *rig, const char *name);
/* The operation id of the one control socket that appears in the rig's state
 * directory (blkmig ctl ID ...), waiting up to 30 s. */
char *rig_wait_for_control (Rig *rig);
/* How many journals blkmig left in the rig's state directory. */
guint rig_count_journals (Rig *rig);
/* "kvm" when /dev/kvm works, else "tcg". */
const char *rig_accel (void);

/* The directory of the other QEMU's binaries (BLKMIG_TEST_OTHER_QEMU, set by
 * run.sh: QEMU 10.0 when PATH has 7.2, and the reverse), or NULL. */
const char *rig_other_qemu (void);
/* In the pass on the second QEMU (run.sh sets BLKMIG_TEST_SECOND_PASS) a case whose
 * subject is blkmig's own handling (a refusal, a signal, a hostile input) is left
 * to the first pass: TRUE after g_test_skip (@why) there, FALSE elsewhere. */
gboolean rig_first_pass_only (const char *why);
/* "7.2.22": PATH's qemu-system-x86_64, or with @other the other QEMU's. */
char *rig_qemu_version (gboolean other);

/* Starts QEMU with @disks (NULL-terminated by id == NULL).  @flags: "incoming"
 * adds -S -incoming defer, "paused" adds -S, "nodevices" gives the disks as
 * block nodes only (a storage target, like qemu-storage-daemon), "drive" gives
 * them with -drive (BlockBackend drive-ID, node node-ID; "drive-nonode": no
 * node-name), "other-qemu" runs rig_other_qemu()'s QEMU, "machine-7.2" the machine
 * type pc-i440fx-7.2 (what both QEMUs of a cross-version migration must run),
 * "relative" with "drive" names the images relative to the rig directory (QEMU's
 * working directory), "chdir-root" makes QEMU change to "/" once it has opened
 * them (as -daemonize does), "unmap" gives -blockdev disks discard=unmap (zero
 * writes may then leave holes: a thin target). */
Vm *vm_start (Rig *rig, const char *name, const VmDisk *disks, const char *flags);
void vm_stop (Vm *vm);
/* Runs a command that must succeed; @args_json may be NULL. */
JsonNode *vm_qmp (Vm *vm, const char *command, const char *args_json);
/* Runs a command that may fail. */
JsonNode *vm_qmp_try (Vm *vm, const char *command, const char *args_json, GError **error);
/* An HMP command line; fails the test when the output mentions an error. */
char *vm_hmp (Vm *vm, const char *command_line);
/* Writes @len bytes of @pattern at @offset through the guest device's own path. */
void vm_guest_write (Vm *vm, const char *id, int pattern, const char *offset, const char *len);
char *vm_status (Vm *vm);
guint vm_count_jobs (Vm *vm);
guint vm_count_exports (Vm *vm);
/* Nodes whose name starts with "blkmig". */
guint vm_count_blkmig_nodes (Vm *vm);
/* The image file the guest's disk @id now runs on. */
char *vm_disk_file (Vm *vm, const char *id);

void img_create (const char *path, const char *format, const char *size);
/* qemu-io write -P pattern offset len */
void img_write (const char *path, const char *format, int pattern, const char *offset,
                const char *len);
gboolean img_identical (const char *a, const char *b);
/* Bytes the file takes on disk (st_blocks * 512). */
gint64 file_allocated (const char *path);
/* Whether [offset, offset+len) reads back as @pattern. */
gboolean img_has_pattern (const char *path, const char *format, int pattern,
                          const char *offset, const char *len);

/* Runs build/blkmig (argv NULL-terminated) to completion; returns its exit status. */
int blkmig_run (char **out, char **err, const char *first_arg, ...) G_GNUC_NULL_TERMINATED;
/* Starts blkmig in the background, stdout and stderr piped. */
GSubprocess *blkmig_spawn (const char *first_arg, ...) G_GNUC_NULL_TERMINATED;
/* Waits for a spawned blkmig; returns its exit status and its output. */
int blkmig_wait (GSubprocess *proc, char **out, char **err);
/* Polls the test QMP until @vm lists at least one block job (or 30 s pass). */
void vm_wait_for_jobs (Vm *vm);

/* ---- fault injection (test-faults) ---------------------------------------- */

/* Like vm_start, but disk @blkdebug_id's file node is wrapped by blkdebug with
 * @blkdebug_opts appended (e.g. "inject-error.0.event=write_aio,inject-error.0.errno=5"). */
Vm *vm_start_blkdebug (Rig *rig, const char *name, const VmDisk *disks, const char *flags,
                       const char *blkdebug_id, const char *blkdebug_opts);
/* Waits (bounded, ~30 s) until process @proc is stopped (state 'T' in /proc/PID/stat),
 * e.g. after BLKMIG_TEST_PAUSE_AT made it SIGSTOP itself. */
void proc_wait_stopped (GSubprocess *proc);
/* @proc's state letter from /proc/PID/stat ('T' stopped, 'Z' ended), 0 when gone. */
char proc_get_state (GSubprocess *proc);
/* Copies @from to @to keeping holes (cp --sparse=always). */
void file_copy_sparse (const char *from, const char *to);

/* A unix-socket proxy: each client of @listen_path is spliced to a new connection
 * to @upstream_path (runs on the main context). */
typedef struct _QmpProxy QmpProxy;
QmpProxy *qmp_proxy_new (const char *upstream_path, const char *listen_path);
/* Cuts every spliced connection (both ends close); new clients still get through. */
guint qmp_proxy_cut (QmpProxy *proxy);
void qmp_proxy_free (QmpProxy *proxy);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (QmpProxy, qmp_proxy_free)
