#!/bin/bash
# Source-host migration hook: runs begin/perform here and prepare/finish on the destination over ssh, aborting both sides on failure.
#
# Run on the SOURCE host.  It drives one migration with blkmig's phase commands:
#
#   here:         blkmig begin            -> source cookie
#   destination:  hook-destination.sh prepare  (source cookie in, destination cookie out)
#   here:         blkmig perform          -> result cookie
#   destination:  hook-destination.sh finish   (result cookie in)
#
# If any step fails (or the script is interrupted) it runs `blkmig abort` here and
# `hook-destination.sh abort` on the destination, each with the newest cookie that
# side has, and exits non-zero.
#
# Usage:
#   hook-source.sh --qmp SRC.qmp --dest HOST --dest-qmp DST.qmp --listen ADDR
#                  [--incoming URI] [--disk NAME]... [--mode live|copy|move]
#                  [--create-dir DIR] [--speed BYTES] [--insecure] [--op-id ID]
#                  [--max-parallel N] [--host-bandwidth BYTES] [--events FILE]
#
#   --qmp PATH        the source QEMU's QMP socket (on this host)
#   --dest HOST       the destination, as the remote command takes it (ssh: [user@]host)
#   --dest-qmp PATH   the destination QEMU's QMP socket (on the destination host)
#   --listen ADDR     the destination's NBD address: tcp:HOST:PORT (PORT 0 = any free
#                     port) or unix:PATH (only when both QEMUs share a host); with
#                     unix:PATH or a loopback HOST perform gets --local-destination
#   --incoming URI    the destination's memory stream URI (live mode over TCP)
#   --disk NAME       migrate only this disk; repeatable (default: all disks)
#   --mode MODE       live (default), copy or move
#   --create-dir DIR  let the destination create missing targets in DIR (copy, move)
#   --speed BYTES     limit each mirror to BYTES per second
#   --insecure        allow plaintext NBD over TCP between the hosts (trusted network)
#   --op-id ID        name the migration (begin and perform): running the hook again
#                     with the same ID after a failure is safe (docs/control.md)
#   --max-parallel N  perform waits its turn while N others run on this host
#   --host-bandwidth BYTES  perform shares this budget with the host's others
#   --events FILE     perform's JSON events (docs/events.md) go to FILE
#
# Environment:
#   BLKMIG              the blkmig binary here (default: blkmig)
#   BLKMIG_SSH          the remote command, word-split (default: ssh); the remote
#                       command line is  $BLKMIG_SSH HOST HOOK ARGS...  so
#                       BLKMIG_SSH="ssh -o BatchMode=yes" or "ip netns exec" work
#   BLKMIG_REMOTE_HOOK  hook-destination.sh on the destination host
#                       (default: the hook-destination.sh next to this script)
#   BLKMIG_REMOTE_BLKMIG  the blkmig binary on the destination host (default: the
#                       destination hook's own default, "blkmig" in its PATH)
#
# The remote arguments must not need shell quoting (ssh hands the remote shell one
# string, `ip netns exec` passes words as they are), so they are restricted to
# letters, digits and  _ . / : , @ % + = -  and checked before anything starts.
set -euo pipefail

PROG=hook-source
say() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
usage() {
    sed -n '3,/^set -euo/{/^#/p}' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

BLKMIG=${BLKMIG:-blkmig}
read -r -a SSH <<<"${BLKMIG_SSH:-ssh}"
((${#SSH[@]} > 0)) || die "BLKMIG_SSH is empty"
REMOTE_HOOK=${BLKMIG_REMOTE_HOOK:-$(cd "$(dirname "$(readlink -f "$0")")" && pwd)/hook-destination.sh}

SRC_QMP='' DEST='' DEST_QMP='' LISTEN='' INCOMING='' MODE='' CREATE_DIR='' SPEED=''
OP_ID='' MAX_PARALLEL='' HOST_BANDWIDTH='' EVENTS=''
INSECURE=()
DISKS=()
while (($# > 0)); do
    opt=$1
    case $opt in
    -h | --help) usage ;;
    --insecure)
        INSECURE=(--insecure)
        shift
        continue
        ;;
    --qmp | --dest | --dest-qmp | --listen | --incoming | --disk | --mode | --create-dir | --speed | \
        --op-id | --max-parallel | --host-bandwidth | --events)
        (($# >= 2)) || die "$opt needs a value"
        val=$2
        shift 2
        ;;
    --*=*)
        val=${opt#*=}
        opt=${opt%%=*}
        shift
        ;;
    *) die "unexpected argument '$opt' (try --help)" ;;
    esac
    case $opt in
    --qmp) SRC_QMP=$val ;;
    --dest) DEST=$val ;;
    --dest-qmp) DEST_QMP=$val ;;
    --listen) LISTEN=$val ;;
    --incoming) INCOMING=$val ;;
    --disk) DISKS+=("$val") ;;
    --mode) MODE=$val ;;
    --create-dir) CREATE_DIR=$val ;;
    --speed) SPEED=$val ;;
    --op-id) OP_ID=$val ;;
    --max-parallel) MAX_PARALLEL=$val ;;
    --host-bandwidth) HOST_BANDWIDTH=$val ;;
    --events) EVENTS=$val ;;
    *) die "unknown option '$opt' (try --help)" ;;
    esac
done
[[ -n $SRC_QMP ]] || die "--qmp is required (try --help)"
[[ -n $DEST ]] || die "--dest is required (try --help)"
[[ -n $DEST_QMP ]] || die "--dest-qmp is required (try --help)"
[[ -n $LISTEN ]] || die "--listen is required (try --help)"

# Words that go to the remote side must mean the same to ssh's remote shell as
# to a plain exec.
remote_safe() {
    local what=$1 word=$2
    [[ $word =~ ^[A-Za-z0-9_./:,@%+=-]+$ ]] ||
        die "$what '$word' contains characters that would need quoting on the remote side"
}
remote_safe "--dest" "$DEST"
remote_safe "BLKMIG_REMOTE_HOOK" "$REMOTE_HOOK"
remote_safe "--dest-qmp" "$DEST_QMP"
remote_safe "--listen" "$LISTEN"
[[ -z $INCOMING ]] || remote_safe "--incoming" "$INCOMING"
[[ -z $CREATE_DIR ]] || remote_safe "--create-dir" "$CREATE_DIR"
[[ -z ${BLKMIG_REMOTE_BLKMIG:-} ]] || remote_safe "BLKMIG_REMOTE_BLKMIG" "$BLKMIG_REMOTE_BLKMIG"

# remote_argv SUBCOMMAND ARGS...: set REMOTE to the command line that runs the
# destination hook (its stdin and stdout are the cookies).
REMOTE=()
remote_argv() {
    REMOTE=("${SSH[@]}" "$DEST" "$REMOTE_HOOK" "$1" --qmp "$DEST_QMP")
    shift
    [[ -z ${BLKMIG_REMOTE_BLKMIG:-} ]] || REMOTE+=(--blkmig "$BLKMIG_REMOTE_BLKMIG")
    REMOTE+=("$@")
}

umask 077
WORK=$(mktemp -d "${TMPDIR:-/tmp}/blkmig-hook.XXXXXX")
chmod 700 "$WORK"

LOCAL_COOKIE=    # the newest cookie this side has (abort undoes what it names)
REMOTE_COOKIE=   # the newest cookie the destination has
STEP=setup
DONE=no
CHILD=''         # the step running now, so that a signal can stop it at once

# run COMMAND...: one step, in the background, so that a signal sent to this
# script interrupts the wait instead of waiting for the step to end.
run() {
    local rc=0
    "$@" <&0 &      # <&0: keep stdin (a background command gets /dev/null)
    CHILD=$!
    wait "$CHILD" || rc=$?
    CHILD=''
    return "$rc"
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [[ -n $CHILD ]] && kill -0 "$CHILD" 2>/dev/null; then
        # blkmig undoes what it started when it gets SIGTERM (exit 130)
        kill -TERM "$CHILD" 2>/dev/null || true
        wait "$CHILD" 2>/dev/null || true
    fi
    if [[ $DONE != yes ]]; then
        ((rc != 0)) || rc=1
        say "migration failed during '$STEP' (status $rc); aborting both sides"
        # The source first: its mirrors still write into the destination's exports.
        if [[ -n $LOCAL_COOKIE ]]; then
            if "$BLKMIG" abort --qmp "$SRC_QMP" -c "$LOCAL_COOKIE"; then
                say "source aborted"
            else
                say "warning: abort on the source failed; check it by hand"
            fi
        fi
        if [[ -n $REMOTE_COOKIE ]]; then
            remote_argv abort
            if "${REMOTE[@]}" <"$REMOTE_COOKIE" >/dev/null; then
                say "destination aborted"
            else
                say "warning: abort on the destination $DEST failed; check it by hand"
            fi
        fi
        if [[ $STEP == finish ]]; then
            say "note: perform had succeeded (result: $(sed -n 's/^ *"status" *: *"\([a-z]*\)".*/\1/p' \
                "$WORK/result.cookie" | tail -n 1)); a live VM has already left this host," \
                "and neither VM was resumed here: decide which one runs"
        fi
        say "error: migration to $DEST failed"
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# ---- begin (here)
STEP=begin
begin_args=(begin --qmp "$SRC_QMP" -o "$WORK/source.cookie")
[[ -z $MODE ]] || begin_args+=(--mode "$MODE")
[[ -z $OP_ID ]] || begin_args+=(--op-id "$OP_ID")
for d in "${DISKS[@]}"; do begin_args+=(--disk "$d"); done
say "begin: describing the source's disks"
run "$BLKMIG" "${begin_args[@]}"
LOCAL_COOKIE=$WORK/source.cookie

# ---- prepare (destination)
STEP=prepare
prepare_args=(--listen "$LISTEN")
[[ -z $INCOMING ]] || prepare_args+=(--incoming "$INCOMING")
[[ -z $CREATE_DIR ]] || prepare_args+=(--create-dir "$CREATE_DIR")
prepare_args+=("${INSECURE[@]}")
say "prepare: exporting the targets on $DEST"
REMOTE_COOKIE=$WORK/source.cookie   # prepare may fail half-way; abort with what it got
remote_argv prepare "${prepare_args[@]}"
run "${REMOTE[@]}" <"$WORK/source.cookie" >"$WORK/dest.cookie"
[[ -s $WORK/dest.cookie ]] || die "the destination returned no cookie"
REMOTE_COOKIE=$WORK/dest.cookie
LOCAL_COOKIE=$WORK/dest.cookie

# ---- perform (here)
STEP=perform
perform_args=(perform --qmp "$SRC_QMP" -c "$WORK/dest.cookie" -o "$WORK/result.cookie")
[[ -z $SPEED ]] || perform_args+=(--speed "$SPEED")
[[ -z $OP_ID ]] || perform_args+=(--op-id "$OP_ID")
[[ -z $MAX_PARALLEL ]] || perform_args+=(--max-parallel "$MAX_PARALLEL")
[[ -z $HOST_BANDWIDTH ]] || perform_args+=(--host-bandwidth "$HOST_BANDWIDTH")
[[ -z $EVENTS ]] || perform_args+=(--events "$EVENTS")
perform_args+=("${INSECURE[@]}")
# The destination is this host only when our own --listen says so (never the cookie).
case $LISTEN in
unix:* | tcp:127.* | tcp:localhost:* | tcp:\[::1\]:*) perform_args+=(--local-destination) ;;
esac
say "perform: mirroring the disks to $DEST"
run "$BLKMIG" "${perform_args[@]}"
LOCAL_COOKIE=$WORK/result.cookie

# ---- finish (destination)
STEP=finish
REMOTE_COOKIE=$WORK/result.cookie
say "finish: tearing down the exports on $DEST"
remote_argv finish
run "${REMOTE[@]}" <"$WORK/result.cookie" >/dev/null
DONE=yes
say "migration to $DEST completed"
