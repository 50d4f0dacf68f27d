#!/bin/bash
# Integration test: examples/hook-source.sh + hook-destination.sh migrate real QEMUs between two network namespaces, "ssh" being `ip netns exec`.
#
# Prints TAP on stdout.  Exit 0 only if every check passed, 77 (skip) only when
# network namespaces cannot be used at all (not root, or no `ip`), 1 otherwise.
# Usage: test-hooks.sh [BLKMIG]   (default: $BLKMIG, else build/blkmig)
# Environment: BLKMIG, QEMU (default qemu-system-x86_64), G_TEST_SRCDIR (tests/).
# shellcheck disable=SC2317  # the check helpers and cleanup are called indirectly
set -uo pipefail

HERE=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
ROOT=$(cd "${G_TEST_SRCDIR:-$HERE/..}/.." && pwd)
BLKMIG=${1:-${BLKMIG:-$ROOT/build/blkmig}}
QEMU=${QEMU:-qemu-system-x86_64}
HOOK_SRC=$ROOT/examples/hook-source.sh
HOOK_DST=$ROOT/examples/hook-destination.sh
PLAN=22

# ---------------------------------------------------------------- skip / bail
. "$HERE/lib-netns.sh"

[[ $(id -u) == 0 ]] || skip_all "network namespaces need root"
command -v ip >/dev/null || skip_all "no ip command (iproute2)"
for tool in "$QEMU" qemu-img qemu-io; do
    command -v "$tool" >/dev/null || bail "$tool not found"
done
[[ -x $BLKMIG ]] || bail "blkmig binary $BLKMIG not found"
[[ -x $HOOK_SRC && -x $HOOK_DST ]] || bail "hook scripts not found under $ROOT/examples"

# ------------------------------------------------------------------- cleanup
SRC_NS=bm-src-$$ DST_NS=bm-dst-$$
VETH_SRC=bms$$ VETH_DST=bmd$$
DIR=$(mktemp -d "${TMPDIR:-/tmp}/blkmig-hooks.XXXXXX") || bail "mktemp failed"
PIDFILES=()
NAMESPACES=()


cleanup() {
    local rc=$? pf ns
    trap - EXIT INT TERM HUP
    for pf in "${PIDFILES[@]}"; do stop_qemu "$pf"; done
    for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null; done
    rm -rf "$DIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# ----------------------------------------------------------------------- TAP
echo "1..$PLAN"

# ---------------------------------------------------------------- namespaces
netns_pair 10.123.0.1 10.123.0.2
diag "accelerator $ACCEL, namespaces $SRC_NS/$DST_NS, directory $DIR"

# -------------------------------------------------------------------- helpers
quietly() {     # run a command; show its output and bail out if it fails
    local out
    out=$("$@" 2>&1) || bail "$* failed: $out"
}

# make_images PREFIX VDB-SIZE-ON-DEST: source images with data, empty destination images.
make_images() {
    local p=$1 dst_vdb_size=$2
    quietly qemu-img create -f qcow2 "$DIR/$p-src-vda.qcow2" 64M
    quietly qemu-io -f qcow2 -c 'write -P 0xab 0 16M' -c 'write -P 0xcd 40M 8M' \
        "$DIR/$p-src-vda.qcow2"
    quietly qemu-img create -f raw "$DIR/$p-src-vdb.raw" 32M
    quietly qemu-io -f raw -c 'write -P 0x11 0 8M' -c 'write -P 0x22 20M 4M' \
        "$DIR/$p-src-vdb.raw"
    quietly qemu-img create -f qcow2 "$DIR/$p-dst-vda.qcow2" 64M
    quietly qemu-img create -f raw "$DIR/$p-dst-vdb.raw" "$dst_vdb_size"
}

# start_vm NS NAME VDA VDB [EXTRA...]: a daemonized QEMU inside namespace NS,
# QMP at $DIR/NAME.qmp.
start_vm() {
    local ns=$1 name=$2 vda=$3 vdb=$4
    shift 4
    PIDFILES+=("$DIR/$name.pid")
    ip netns exec "$ns" "$QEMU" -machine pc,accel="$ACCEL" -m 64 -nodefaults -display none "$@" \
        -blockdev driver=file,filename="$vda",node-name=file-vda \
        -blockdev driver=qcow2,file=file-vda,node-name=drive-vda \
        -device virtio-blk-pci,drive=drive-vda,id=vda \
        -blockdev driver=file,filename="$vdb",node-name=file-vdb \
        -blockdev driver=raw,file=file-vdb,node-name=drive-vdb \
        -device virtio-blk-pci,drive=drive-vdb,id=vdb \
        -qmp unix:"$DIR/$name.qmp",server=on,wait=off \
        -daemonize -pidfile "$DIR/$name.pid" >"$DIR/$name.log" 2>&1 ||
        bail "could not start QEMU $name: $(cat "$DIR/$name.log")"
    wait_qmp "$name"
}

# start_pair PREFIX: source QEMU PREFIX-src in SRC_NS, destination PREFIX-dst
# (-S -incoming defer) in DST_NS, on PREFIX's images.
start_pair() {
    local p=$1
    start_vm "$SRC_NS" "$p-src" "$DIR/$p-src-vda.qcow2" "$DIR/$p-src-vdb.raw"
    start_vm "$DST_NS" "$p-dst" "$DIR/$p-dst-vda.qcow2" "$DIR/$p-dst-vdb.raw" -S -incoming defer
}

qmp() {         # qmp SOCKET COMMAND [ARGS-JSON]
    local sock=$1
    shift
    "$BLKMIG" qmp --qmp "$sock" "$@"
}

# run_hook LOG ARGS...: hook-source.sh inside SRC_NS, reaching DST_NS through
# `ip netns exec`; its stdout and stderr go to LOG; returns its status.
run_hook() {
    local log=$1
    shift
    BLKMIG_SSH="ip netns exec" BLKMIG="$BLKMIG" BLKMIG_REMOTE_HOOK="$HOOK_DST" \
        timeout 120 ip netns exec "$SRC_NS" "$HOOK_SRC" --dest "$DST_NS" --insecure "$@" >"$log" 2>&1
}

no_exports() {      # no_exports SOCKET
    local out
    out=$(qmp "$1" query-block-exports 2>&1) || { echo "$out"; return 1; }
    [[ $out == "[]" ]] || { echo "$out"; return 1; }
}

no_blkmig_nodes() { # no_blkmig_nodes SOCKET: abort deleted every node it added
    local out
    out=$(qmp "$1" query-named-block-nodes '{"flat":true}' 2>&1) || { echo "$out"; return 1; }
    ! grep -o '"node-name" : "blkmig[^"]*"' <<<"$out"
}

identical() {       # identical FORMAT A B
    qemu-img compare -U -f "$1" -F "$1" "$2" "$3"
}

rx_bytes() {        # rx_bytes: bytes the destination's veth has received
    ip netns exec "$DST_NS" cat "/sys/class/net/$VETH_DST/statistics/rx_bytes"
}

# ------------------------------------------- case 1: a live migration that works
make_images ok 32M
start_pair ok
rx_before=$(rx_bytes)
start=$SECONDS
if run_hook "$DIR/ok.log" --qmp "$DIR/ok-src.qmp" --dest-qmp "$DIR/ok-dst.qmp" \
    --listen tcp:10.123.0.2:0 --incoming tcp:10.123.0.2:4444; then
    ok "live: hook-source.sh exits 0 ($((SECONDS - start)) s)"
else
    not_ok "live: hook-source.sh exits 0 (status $?)" "$DIR/ok.log"
fi
rx_after=$(rx_bytes)
# 36 MiB of disk data (plus the memory stream) must have crossed the veth.
if ((rx_after - rx_before >= 36 * 1024 * 1024)); then
    ok "live: the data crossed the veth ($(((rx_after - rx_before) / 1048576)) MiB received)"
else
    not_ok "live: the data crossed the veth" "only $((rx_after - rx_before)) bytes received"
fi
check "live: the destination VM is running" vm_running "$DIR/ok-dst.qmp"
if grep -q '^{' "$DIR/ok.log"; then
    not_ok "live: no cookie leaked onto the hook's output" "$DIR/ok.log"
else
    ok "live: no cookie leaked onto the hook's output"
fi
# No guest flush first: after finish the destination's images must be complete on disk.
check "live: vda (qcow2) identical" identical qcow2 "$DIR/ok-src-vda.qcow2" "$DIR/ok-dst-vda.qcow2"
check "live: vdb (raw) identical" identical raw "$DIR/ok-src-vdb.raw" "$DIR/ok-dst-vdb.raw"
check "live: no block jobs left on the source" no_block_jobs "$DIR/ok-src.qmp"
check "live: no exports left on the destination" no_exports "$DIR/ok-dst.qmp"
stop_qemu "$DIR/ok-src.pid"
stop_qemu "$DIR/ok-dst.pid"

# ------------- case 2: prepare fails (the destination's vdb has the wrong size)
make_images size 16M
start_pair size
if run_hook "$DIR/size.log" --qmp "$DIR/size-src.qmp" --dest-qmp "$DIR/size-dst.qmp" \
    --listen tcp:10.123.0.2:0 --incoming tcp:10.123.0.2:4444; then
    not_ok "wrong size: hook-source.sh fails" "$DIR/size.log"
elif grep -q "during 'prepare' (status 4)" "$DIR/size.log" &&
    grep -q 'hook-source: error: migration to' "$DIR/size.log"; then
    ok "wrong size: hook-source.sh fails in prepare (exit 4) and says so"
else
    not_ok "wrong size: hook-source.sh fails in prepare (exit 4) and says so" "$DIR/size.log"
fi
check "wrong size: the source VM still runs" vm_running "$DIR/size-src.qmp"
check "wrong size: no exports on the destination" no_exports "$DIR/size-dst.qmp"
check "wrong size: no block jobs on the source" no_block_jobs "$DIR/size-src.qmp"
stop_qemu "$DIR/size-src.pid"
stop_qemu "$DIR/size-dst.pid"

# ---- case 3: perform fails (the NBD server listens where the source cannot
# reach: 127.0.0.1 of the destination's namespace), after prepare exported
make_images unreach 32M
start_pair unreach
if run_hook "$DIR/unreach.log" --qmp "$DIR/unreach-src.qmp" \
    --dest-qmp "$DIR/unreach-dst.qmp" --listen tcp:127.0.0.1:0 \
    --incoming tcp:10.123.0.2:4444; then
    not_ok "unreachable: hook-source.sh fails" "$DIR/unreach.log"
elif grep -q "during 'perform'" "$DIR/unreach.log" &&
    grep -q 'destination aborted' "$DIR/unreach.log"; then
    ok "unreachable: hook-source.sh fails in perform and aborts the destination"
else
    not_ok "unreachable: hook-source.sh fails in perform and aborts the destination" \
        "$DIR/unreach.log"
fi
check "unreachable: the source VM still runs" vm_running "$DIR/unreach-src.qmp"
check "unreachable: no exports on the destination" no_exports "$DIR/unreach-dst.qmp"
check "unreachable: no block jobs on the source" no_block_jobs "$DIR/unreach-src.qmp"
check "unreachable: no blkmig nodes on the source" no_blkmig_nodes "$DIR/unreach-src.qmp"

stop_qemu "$DIR/unreach-src.pid"
stop_qemu "$DIR/unreach-dst.pid"

# ---- case 4: SIGTERM to hook-source.sh (only to it) while perform mirrors at
# 1 MiB/s (about 15 s for the 36 MiB): it must stop perform at once and abort
# both sides.
make_images term 32M
start_pair term
BLKMIG_SSH="ip netns exec" BLKMIG="$BLKMIG" BLKMIG_REMOTE_HOOK="$HOOK_DST" \
    timeout --foreground 120 ip netns exec "$SRC_NS" "$HOOK_SRC" --dest "$DST_NS" --insecure \
    --qmp "$DIR/term-src.qmp" --dest-qmp "$DIR/term-dst.qmp" --listen tcp:10.123.0.2:0 \
    --incoming tcp:10.123.0.2:4444 --speed 1048576 >"$DIR/term.log" 2>&1 &
hook=$!
# blkmig holds the only QMP socket while it runs: watch its progress lines instead.
mirroring=no
for ((i = 0; i < 200; i++)); do
    if grep -q 'blkmig: vda: .*copying' "$DIR/term.log"; then
        mirroring=yes
        break
    fi
    sleep 0.05
done
sleep 0.5
start=$SECONDS
kill -TERM "$hook" 2>/dev/null
rc=0
wait "$hook" || rc=$?
if [[ $mirroring == yes ]] && ((rc == 143 && SECONDS - start < 15)); then
    ok "interrupted: hook-source.sh stops with status 143 ($((SECONDS - start)) s)"
else
    not_ok "interrupted: hook-source.sh stops with status 143" \
        "mirroring: $mirroring, status $rc after $((SECONDS - start)) s" "$DIR/term.log"
fi
if grep -q 'destination aborted' "$DIR/term.log" && grep -q 'source aborted' "$DIR/term.log"; then
    ok "interrupted: both sides aborted"
else
    not_ok "interrupted: both sides aborted" "$DIR/term.log"
fi
check "interrupted: the source VM still runs" vm_running "$DIR/term-src.qmp"
check "interrupted: no exports on the destination" no_exports "$DIR/term-dst.qmp"
check "interrupted: no block jobs on the source" no_block_jobs "$DIR/term-src.qmp"

((N == PLAN)) || bail "ran $N checks, planned $PLAN"
((FAILED == 0)) || { diag "$FAILED of $PLAN checks failed"; exit 1; }
exit 0
