#!/bin/bash
# Evacuates several VMs off this host with hook-source.sh, at most N at a time and within one bandwidth budget, driven by blkmig's JSON events.
#
# Usage:
#   evacuate.sh --dest HOST --plan FILE [--max-parallel N] [--host-bandwidth BYTES]
#               [--retries R] [--insecure]
#
#   --dest HOST            the destination host, as hook-source.sh takes it
#   --plan FILE            one VM per line:  NAME SRC-QMP DEST-QMP LISTEN [INCOMING]
#                          (# starts a comment); NAME: letters, digits, _ . -
#   --max-parallel N       at most N VMs copy at once (default 2); the others wait,
#                          queued by blkmig itself (perform --max-parallel)
#   --host-bandwidth BYTES all copies together stay within BYTES per second
#                          (perform --host-bandwidth; default: no budget)
#   --retries R            a VM whose failure is worth retrying (docs/exit-codes.md)
#                          is tried again up to R times (default 2), with the same
#                          operation id: a re-run after a failure is safe
#   --insecure             plaintext NBD between the hosts (a trusted network)
#
# Every VM starts at once (begin and prepare are quick); blkmig queues the copies.
# While they run, a line per change: "NAME: queued", "NAME: copying 42%",
# "NAME: switching", "NAME: done", "NAME: failed (retryable|not retryable): MESSAGE".
# At the end a summary; exit 0 only if every VM moved.
#
# Environment: BLKMIG, BLKMIG_SSH, BLKMIG_REMOTE_HOOK as for hook-source.sh;
# HOOK_SOURCE (default: hook-source.sh next to this script).
set -uo pipefail

PROG=evacuate
say() { printf '%s: %s\n' "$PROG" "$*"; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 2; }
usage() {
    sed -n '3,/^set -uo/{/^#/p}' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

HOOK=${HOOK_SOURCE:-$(cd "$(dirname "$(readlink -f "$0")")" && pwd)/hook-source.sh}
DEST='' PLAN='' MAX_PARALLEL=2 HOST_BANDWIDTH='' RETRIES=2 INSECURE=()
while (($# > 0)); do
    case $1 in
    -h | --help) usage ;;
    --insecure) INSECURE=(--insecure); shift; continue ;;
    --dest | --plan | --max-parallel | --host-bandwidth | --retries)
        (($# >= 2)) || die "$1 needs a value" ;;
    *) die "unexpected argument '$1' (try --help)" ;;
    esac
    case $1 in
    --dest) DEST=$2 ;;
    --plan) PLAN=$2 ;;
    --max-parallel) MAX_PARALLEL=$2 ;;
    --host-bandwidth) HOST_BANDWIDTH=$2 ;;
    --retries) RETRIES=$2 ;;
    esac
    shift 2
done
[[ -n $DEST ]] || die "--dest is required (try --help)"
[[ -r $PLAN ]] || die "--plan FILE is required and must be readable"
[[ $MAX_PARALLEL =~ ^[1-9][0-9]?$ ]] || die "--max-parallel must be a number from 1 to 64"
[[ -z $HOST_BANDWIDTH || $HOST_BANDWIDTH =~ ^[1-9][0-9]*$ ]] ||
    die "--host-bandwidth must be bytes per second"
[[ $RETRIES =~ ^[0-9]$ ]] || die "--retries must be a number from 0 to 9"

umask 077
WORK=$(mktemp -d "${TMPDIR:-/tmp}/blkmig-evacuate.XXXXXX") || die "mktemp failed"
declare -A ARGS PID TRIES SHOWN RESULT
NAMES=()

cleanup() {
    local rc=$? name
    trap - EXIT INT TERM HUP
    for name in "${NAMES[@]}"; do   # each hook rolls its own migration back on SIGTERM
        [[ -z ${PID[$name]:-} ]] || kill -TERM "${PID[$name]}" 2>/dev/null
    done
    wait
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# ---- the plan
while read -r name src_qmp dest_qmp listen incoming _; do
    [[ -z $name || $name == \#* ]] && continue
    [[ $name =~ ^[A-Za-z0-9_.-]{1,30}$ ]] || die "VM name '$name' is not letters, digits, _ . -"
    [[ -n $listen ]] || die "$name: the plan needs NAME SRC-QMP DEST-QMP LISTEN [INCOMING]"
    [[ -z ${ARGS[$name]:-} ]] || die "$name is in the plan twice"
    NAMES+=("$name")
    ARGS[$name]="--qmp $src_qmp --dest-qmp $dest_qmp --listen $listen${incoming:+ --incoming $incoming}"
    TRIES[$name]=0
done <"$PLAN"
((${#NAMES[@]} > 0)) || die "the plan names no VM"

# start NAME: one hook-source.sh run; its perform's events go to WORK/NAME.events.
start() {
    local name=$1 args
    read -r -a args <<<"${ARGS[$name]}"
    TRIES[$name]=$((TRIES[$name] + 1))
    : >"$WORK/$name.events"
    "$HOOK" --dest "$DEST" "${args[@]}" "${INSECURE[@]}" --op-id "evac-$name" \
        --max-parallel "$MAX_PARALLEL" ${HOST_BANDWIDTH:+--host-bandwidth "$HOST_BANDWIDTH"} \
        --events "$WORK/$name.events" >"$WORK/$name.log" 2>&1 &
    PID[$name]=$!
    SHOWN[$name]=''
}

# state NAME: what the newest event says: queued, copying N%, switching.
state() {
    local line copied total
    line=$(grep -E '"event":"(phase|progress)"' "$WORK/$1.events" 2>/dev/null | tail -n 1)
    case $line in
    *'"phase":"queued"'*) echo queued ;;
    *'"phase":"switch"'* | *'"phase":"finish"'*) echo switching ;;
    *'"event":"progress"'*)
        copied=$(sed -n 's/.*"done":\([0-9]*\).*/\1/p' <<<"$line")
        total=$(sed -n 's/.*"total":\([0-9]*\).*/\1/p' <<<"$line")
        if ((${total:-0} > 0)); then echo "copying $((copied * 100 / total))%"; else echo copying; fi ;;
    '') echo starting ;;
    *) echo copying ;;
    esac
}

# retryable NAME STATUS: the final error event's flag, else the exit status's class
# (docs/exit-codes.md: 5 QMP, 6 block job, 7 migration, 10 busy may pass next time).
retryable() {
    local last
    last=$(grep '"event":"error"' "$WORK/$1.events" 2>/dev/null | tail -n 1)
    case $last in
    *'"retryable":true'*) return 0 ;;
    *'"retryable":false'*) return 1 ;;
    esac
    [[ $2 == 5 || $2 == 6 || $2 == 7 || $2 == 10 ]]
}

# ended NAME STATUS: done, tried again, or failed for good.
ended() {
    local name=$1 rc=$2 why
    PID[$name]=''
    if ((rc == 0)); then
        RESULT[$name]=moved
        say "$name: done"
        return
    fi
    why=$(grep -v '^hook-source: ' "$WORK/$name.log" | grep -E '^blkmig ' | tail -n 1)
    [[ -n $why ]] || why=$(tail -n 1 "$WORK/$name.log")
    if retryable "$name" "$rc" && ((TRIES[$name] <= RETRIES)); then
        say "$name: failed (retryable, try $((TRIES[$name] + 1))): $why"
        start "$name"
    else
        if retryable "$name" "$rc"; then
            RESULT[$name]="failed after ${TRIES[$name]} tries"
        else
            RESULT[$name]="failed (not retryable)"
        fi
        say "$name: ${RESULT[$name]}: $why"
    fi
}

for name in "${NAMES[@]}"; do start "$name"; done
say "evacuating ${#NAMES[@]} VM(s) to $DEST, at most $MAX_PARALLEL at once"
while :; do
    running=0
    for name in "${NAMES[@]}"; do
        [[ -n ${PID[$name]} ]] || continue
        if kill -0 "${PID[$name]}" 2>/dev/null; then
            running=$((running + 1))
            now=$(state "$name")
            [[ $now == "${SHOWN[$name]}" ]] || say "$name: $now"
            SHOWN[$name]=$now
        else
            rc=0
            wait "${PID[$name]}" || rc=$?
            ended "$name" "$rc"
            [[ -z ${PID[$name]} ]] || running=$((running + 1))
        fi
    done
    ((running > 0)) || break
    sleep 1
done

failed=0
say "summary:"
for name in "${NAMES[@]}"; do
    printf '  %-20s %s\n' "$name" "${RESULT[$name]}"
    [[ ${RESULT[$name]} == moved ]] || failed=$((failed + 1))
done
((failed == 0)) || { say "$failed of ${#NAMES[@]} VM(s) did not move"; exit 1; }
say "all ${#NAMES[@]} VM(s) moved"
