/* The commands blkmig offers, one file each, and the options they share. */
#pragma once

#include <stdio.h>

#include <gio/gio.h>

#include "jobs/mirror.h"
#include "qmp/qmp-client.h"
#include "src/journal.h"

/* A command parses its own options from argv (argv[0] is its name). */
typedef gboolean (*CommandFunc) (int argc, char **argv, GCancellable *cancellable,
                                 GError **error);

gboolean cmd_migrate (int argc, char **argv, GCancellable *cancellable, GError **error);
gboolean cmd_begin (int argc, char **argv, GCancellable *cancellable, GError **error);
gboolean cmd_prepare (int argc, char **argv, GCancellable *cancellable, GError **error);
gboolean cmd_perform (int argc, char **argv, GCancellable *cancellable, GError **error);
gboolean cmd_finish (int argc, char **argv, GCancellable *cancellable, GError **error);
gboolean cmd_abort (int argc, char **argv, GCancellable *cancellable, GError **error);
gboolean cmd_snapshot (int argc, char **argv, GCancellable *cancellable, GError **error);
gboolean cmd_merge (int argc, char **argv, GCancellable *cancellable, GError **error);
gboolean cmd_move (int argc, char **argv, GCancellable *cancellable, GError **error);
gboolean cmd_list (int argc, char **argv, GCancellable *cancellable, GError **error);
gboolean cmd_verify (int argc, char **argv, GCancellable *cancellable, GError **error);
gboolean cmd_recover (int argc, char **argv, GCancellable *cancellable, GError **error);
gboolean cmd_reconcile (int argc, char **argv, GCancellable *cancellable, GError **error);
gboolean cmd_tunnel_endpoint (int argc, char **argv, GCancellable *cancellable, GError **error);
gboolean cmd_replicate (int argc, char **argv, GCancellable *cancellable, GError **error);
gboolean cmd_ctl (int argc, char **argv, GCancellable *cancellable, GError **error);
gboolean cmd_gc (int argc, char **argv, GCancellable *cancellable, GError **error);
gboolean cmd_status (int argc, char **argv, GCancellable *cancellable, GError **error);
gboolean cmd_qmp (int argc, char **argv, GCancellable *cancellable, GError **error);

/* What `blkmig recover --id` does for one journal: finishes the operation
 * (*completed) or rolls it back; FALSE when a side could not be reached (the
 * journal then stays).  Says what it did on @report (stderr where stdout carries a
 * command's result) unless --quiet. */
gboolean recover_journal (Journal *journal, FILE *report, gboolean *completed, GError **error);

/* A running operation's status (a control socket's reply) as lines for people. */
void ctl_print_status (JsonObject *status);

/* Options every command accepts. */
typedef struct {
  gboolean debug;
  gboolean quiet;
  gboolean json;          /* events as JSON lines on stdout */
  char *events_path;      /* events as JSON lines into a file */
} CommonOptions;
extern CommonOptions common_options;

/* Mirror knobs for the commands that start mirrors (@t: a MirrorTuning *). */
#define COMMAND_MIRROR_ENTRIES(t) \
  { "speed", 0, 0, G_OPTION_ARG_INT64, &(t)->speed, \
    "Limit each mirror to BYTES per second (default: unlimited)", "BYTES" }, \
  { "buf-size", 0, 0, G_OPTION_ARG_INT64, &(t)->buf_size, \
    "Bytes each mirror keeps in flight (default: see docs/performance.md)", "BYTES" }, \
  { "granularity", 0, 0, G_OPTION_ARG_INT64, &(t)->granularity, \
    "Dirty-tracking granularity, a power of two (default: QEMU's)", "BYTES" }, \
  { "copy-mode", 0, 0, G_OPTION_ARG_STRING, &(t)->copy_mode, \
    "auto (default; move: write-blocking): background until a mirror stops converging, " \
    "then write-blocking; background; or write-blocking: guest writes wait for the " \
    "target, so a busy disk still converges", "MODE" }, \
  { "converge-window", 0, 0, G_OPTION_ARG_INT, &(t)->converge_window, \
    "auto: a mirror whose remaining bytes have not shrunk for SECONDS while the guest " \
    "writes is not converging (default 30, 0 = never switch)", "SECONDS" }, \
  { "stall-timeout", 0, 0, G_OPTION_ARG_INT, &(t)->stall_timeout, \
    "Give up when the copy makes no progress for SECONDS (default 60, 0 = never)", "SECONDS" }, \
  { "nbd-reconnect-delay", 0, 0, G_OPTION_ARG_INT, &(t)->reconnect_delay, \
    "How long a lost NBD connection to the destination may take to come back (default 5)", \
    "SECONDS" }

/* --chain on the commands that describe the source's disks. */
#define COMMAND_CHAIN_ENTRY(value) \
  { "chain", 0, 0, G_OPTION_ARG_STRING, (value), \
    "full (default): every disk arrives as one image; top: a disk with backing files sends " \
    "only its active layer, onto the destination's own copy of the chain below it " \
    "(prepare --base-dir/--base, or the destination VM's disk), verified layer by layer " \
    "first; copy-base: the active layer is mirrored and the chain below it copied beside " \
    "it (live and copy)", "full|top|copy-base" }
/* Where prepare finds the source's backing layers for --chain top. */
#define COMMAND_BASE_ENTRIES(dir, map) \
  { "base-dir", 0, 0, G_OPTION_ARG_FILENAME, (dir), \
    "--chain top: the source's backing layers are in DIR under their file names; " \
    "copy-base: their copies are made there (default: beside the disk)", "DIR" }, \
  { "base", 0, 0, G_OPTION_ARG_FILENAME_ARRAY, (map), \
    "--chain top: disk NAME's nearest backing layer is PATH (the rest from its header); " \
    "repeatable", "NAME=PATH" }

/* Tunnel options of the commands that mirror to a destination. */
#define COMMAND_TUNNEL_ENTRIES(addr, command, compress) \
  { "tunnel", 0, 0, G_OPTION_ARG_STRING, (addr), \
    "Carry every disk's NBD connection through ONE TCP stream to a tunnel-endpoint at " \
    "tcp:HOST:PORT", "ADDR" }, \
  { "tunnel-command", 0, 0, G_OPTION_ARG_STRING, (command), \
    "Carry them through the stdin/stdout of CMD (e.g. ssh HOST blkmig tunnel-endpoint " \
    "--nbd-socket {nbd-socket}), split into words and run without a shell; the word " \
    "{nbd-socket} is replaced by the destination's socket", "CMD" }, \
  COMMAND_TUNNEL_COMPRESS_ENTRY (compress)
#define COMMAND_TUNNEL_COMPRESS_ENTRY(compress) \
  { "tunnel-compress", 0, 0, G_OPTION_ARG_STRING, (compress), \
    "Compress the tunnel's stream with zstd: auto (default: while the link, not the CPU, " \
    "is the bottleneck, and the data shrinks), zstd (always) or none; both ends must agree, " \
    "an end without it gets the stream uncompressed", "MODE" }

/* TLS options: x509 credentials and the plaintext guard. */
#define COMMAND_TLS_ENTRIES(dir, insecure) \
  { "tls-creds", 0, 0, G_OPTION_ARG_FILENAME, (dir), \
    "x509 credentials for NBD and the memory stream (or the tunnel): DIR holds ca-cert.pem " \
    "and server-cert.pem/server-key.pem (destination) or client-cert.pem/client-key.pem " \
    "(source)", "DIR" }, \
  { "insecure", 0, 0, G_OPTION_ARG_NONE, (insecure), \
    "Allow plaintext NBD or memory stream over TCP to a non-loopback address", NULL }
#define COMMAND_PASS_FDS_ENTRY(flag) \
  { "pass-fds", 0, 0, G_OPTION_ARG_NONE, (flag), \
    "Connect to the destination here and hand QEMU the sockets (getfd): QEMU needs no " \
    "access to socket paths or the network (no NBD reconnects then)", NULL }
#define COMMAND_TLS_AUTHZ_ENTRY(dns) \
  { "tls-authz", 0, 0, G_OPTION_ARG_STRING_ARRAY, (dns), \
    "Accept only the client certificate with this distinguished name; repeatable", "DN" }

/* --hold: wait at READY for `blkmig ctl ID switchover`. */
#define COMMAND_HOLD_ENTRY(flag) \
  { "hold", 0, 0, G_OPTION_ARG_NONE, (flag), \
    "With every mirror ready, hold them in sync until `blkmig ctl ID switchover` (the " \
    "caller picks the moment of the switch)", NULL }

/* What an operation shares with the others on its host (@h: a ControlHostOptions *). */
#define COMMAND_HOST_ENTRIES(h) \
  { "host-bandwidth", 0, 0, G_OPTION_ARG_INT64, &(h)->host_bandwidth, \
    "Share BYTES per second among the copying mirrors of every operation on this host " \
    "given it (equal parts, redistributed as mirrors finish; --speed caps this one's)", \
    "BYTES" }, \
  { "max-parallel", 0, 0, G_OPTION_ARG_INT, &(h)->max_parallel, \
    "Wait (queued, cancellable) while N operations given --max-parallel run on this host", \
    "N" }

/* --keep-target: a rollback keeps targets it would remove (docs/control.md). */
#define COMMAND_KEEP_TARGET_ENTRY(flag) \
  { "keep-target", 0, 0, G_OPTION_ARG_NONE, (flag), \
    "On failure keep the targets blkmig created (partly copied), listed in STATE_DIR/ID.kept, " \
    "instead of removing them", NULL }

/* --op-id: the caller names the operation (docs/control.md). */
#define COMMAND_OP_ID_ENTRY(value) \
  { "op-id", 0, 0, G_OPTION_ARG_STRING, (value), \
    "Name the operation ID (1-40 of A-Z a-z 0-9 . _ -): its control socket is ID.ctl, and " \
    "running the command again with the same ID is safe (it reports a success, or recovers " \
    "a killed run and goes on)", "ID" }

/* Entries for the commands that report events (long-running ones). */
#define COMMAND_EVENT_ENTRIES \
  { "json", 0, 0, G_OPTION_ARG_NONE, &common_options.json, \
    "Print events as JSON lines on stdout (docs/events.md)", NULL }, \
  { "events", 0, 0, G_OPTION_ARG_FILENAME, &common_options.events_path, \
    "Write events as JSON lines to FILE", "FILE" }

/* Parses argv with @entries plus the common options; @summary heads --help. */
gboolean command_parse (int *argc, char ***argv, const char *params, const char *summary,
                        const GOptionEntry *entries, GError **error);
/* A BLKMIG_ERROR_USAGE unless @value is set. */
gboolean command_require (const char *option, const void *value, GError **error);
