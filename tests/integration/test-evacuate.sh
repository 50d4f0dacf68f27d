#!/bin/bash
# Integration test: examples/evacuate.sh moves several live VMs between two network namespaces, queued and within a bandwidth budget, and reports a VM that cannot move.
#
# Prints TAP on stdout.  Exit 0 only if every check passed, 77 (skip) only when
# network namespaces cannot be used at all (not root, or no `ip`), 1 otherwise.
# Usage: test-evacuate.sh [BLKMIG]   (default: $BLKMIG, else build/blkmig)
# Environment: BLKMIG, QEMU (default qemu-system-x86_64), G_TEST_SRCDIR (tests/).
# shellcheck disable=SC2317,SC2034  # helpers are called indirectly; lib-netns.sh uses VETH_*
set -uo pipefail

HERE=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
ROOT=$(cd "${G_TEST_SRCDIR:-$HERE/..}/.." && pwd)
BLKMIG=${1:-${BLKMIG:-$ROOT/build/blkmig}}
QEMU=${QEMU:-qemu-system-x86_64}
EVACUATE=$ROOT/examples/evacuate.sh
PLAN_CHECKS=18

. "$HERE/lib-netns.sh"

[[ $(id -u) == 0 ]] || skip_all "network namespaces need root"
command -v ip >/dev/null || skip_all "no ip command (iproute2)"
for tool in "$QEMU" qemu-img qemu-io; do
    command -v "$tool" >/dev/null || bail "$tool not found"
done
[[ -x $BLKMIG ]] || bail "blkmig binary $BLKMIG not found"
[[ -x $EVACUATE ]] || bail "$EVACUATE not found"

SRC_NS=bm-esrc-$$ DST_NS=bm-edst-$$
VETH_SRC=bes$$ VETH_DST=bed$$
DIR=$(mktemp -d "${TMPDIR:-/tmp}/blkmig-evacuate-test.XXXXXX") || bail "mktemp failed"
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

echo "1..$PLAN_CHECKS"
netns_pair 10.124.0.1 10.124.0.2
diag "accelerator $ACCEL, namespaces $SRC_NS/$DST_NS, directory $DIR"

quietly() {     # run a command; show its output and bail out if it fails
    local out
    out=$("$@" 2>&1) || bail "$* failed: $out"
}

qmp() {         # qmp SOCKET COMMAND [ARGS-JSON]
    local sock=$1
    shift
    "$BLKMIG" qmp --qmp "$sock" "$@"
}

# start_vm NS NAME IMAGE [EXTRA...]: a daemonized QEMU with one raw disk vda.
start_vm() {
    local ns=$1 name=$2 image=$3
    shift 3
    PIDFILES+=("$DIR/$name.pid")
    ip netns exec "$ns" "$QEMU" -machine pc,accel="$ACCEL" -m 64 -nodefaults -display none "$@" \
        -blockdev driver=file,filename="$image",node-name=file-vda \
        -blockdev driver=raw,file=file-vda,node-name=drive-vda \
        -device virtio-blk-pci,drive=drive-vda,id=vda \
        -qmp unix:"$DIR/$name.qmp",server=on,wait=off \
        -daemonize -pidfile "$DIR/$name.pid" >"$DIR/$name.log" 2>&1 ||
        bail "could not start QEMU $name: $(cat "$DIR/$name.log")"
    wait_qmp "$name"
}

# vm NAME PORT DEST-SIZE: images, both QEMUs, and NAME's line in the plan.
vm() {
    local name=$1 port=$2 size=$3
    quietly qemu-img create -f raw "$DIR/$name-src.raw" 32M
    quietly qemu-io -f raw -c "write -P 0x$port 0 32M" "$DIR/$name-src.raw"
    quietly qemu-img create -f raw "$DIR/$name-dst.raw" "$size"
    start_vm "$SRC_NS" "$name-src" "$DIR/$name-src.raw"
    start_vm "$DST_NS" "$name-dst" "$DIR/$name-dst.raw" -S -incoming defer
    echo "$name $DIR/$name-src.qmp $DIR/$name-dst.qmp tcp:10.124.0.2:0 tcp:10.124.0.2:44$port" \
        >>"$DIR/plan"
}

no_exports() {      # no_exports SOCKET
    local out
    out=$(qmp "$1" query-block-exports 2>&1) || { echo "$out"; return 1; }
    [[ $out == "[]" ]] || { echo "$out"; return 1; }
}

identical() { qemu-img compare -U -f raw -F raw "$1" "$2"; }

printf '# the plan: three VMs, and vm4 whose destination disk is too small\n' >"$DIR/plan"
vm vm1 11 32M
vm vm2 22 32M
vm vm3 33 32M
vm vm4 44 16M

# Three copies, two at a time, 16 MiB/s for all: the third waits its turn.
start=$SECONDS
rc=0
BLKMIG_SSH="ip netns exec" BLKMIG="$BLKMIG" BLKMIG_STATE_DIR="$DIR/state" \
    timeout 300 ip netns exec "$SRC_NS" "$EVACUATE" --dest "$DST_NS" --plan "$DIR/plan" \
    --max-parallel 2 --host-bandwidth 16777216 --insecure >"$DIR/out" 2>&1 || rc=$?
diag "evacuate.sh: status $rc in $((SECONDS - start)) s"
if ((rc == 1)) && grep -q '^evacuate: 1 of 4 VM(s) did not move$' "$DIR/out"; then
    ok "evacuate.sh exits 1 and says one VM did not move"
else
    not_ok "evacuate.sh exits 1 and says one VM did not move" "status $rc" "$DIR/out"
fi
check "vm4 is reported not retryable, with blkmig's reason" \
    grep -q '^evacuate: vm4: failed (not retryable): blkmig prepare: vda: destination target is 16 MiB' \
    "$DIR/out"
check "vm4 was tried once" bash -c "(( \$(grep -c 'vm4: failed' '$DIR/out') == 1 ))"
check "a VM waited its turn (queued)" grep -qE '^evacuate: vm[123]: queued$' "$DIR/out"
check "the copies reported progress" grep -qE '^evacuate: vm[123]: copying [0-9]+%$' "$DIR/out"
for n in 1 2 3; do
    check "vm$n: done" grep -q "^evacuate: vm$n: done$" "$DIR/out"
    check "vm$n: runs on the destination" vm_running "$DIR/vm$n-dst.qmp"
    check "vm$n: the disk arrived whole" identical "$DIR/vm$n-src.raw" "$DIR/vm$n-dst.raw"
done
check "vm4: still runs on the source" vm_running "$DIR/vm4-src.qmp"
check "vm4: no exports left on the destination" no_exports "$DIR/vm4-dst.qmp"
check "vm4: no block jobs left on the source" no_block_jobs "$DIR/vm4-src.qmp"
check "no journal or control socket left" \
    bash -c "! ls '$DIR/state' 2>/dev/null | grep -E '\\.(json|ctl|bw)\$'"
while IFS= read -r line; do diag "$line"; done <"$DIR/out"

((N == PLAN_CHECKS)) || bail "ran $N checks, planned $PLAN_CHECKS"
((FAILED == 0)) || { diag "$FAILED of $PLAN_CHECKS checks failed"; exit 1; }
exit 0
