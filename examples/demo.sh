#!/bin/bash
# Demo: live-migrate a VM with two disks (qcow2 + raw) between two local QEMUs while "guest" writes land, then prove the images identical.
#
# Needs nothing prepared: it makes its own images and VMs in a temporary
# directory under /var/tmp and removes everything it started when it exits.
# Usage: examples/demo.sh   (or ./run.sh demo, which installs and builds first)
# Environment: BLKMIG (default build/blkmig), QEMU (default qemu-system-x86_64),
#              DEMO_SPEED (bytes/s per mirror, default 268435456),
#              DEMO_ACCEL=tcg (skip KVM even where it works).
set -euo pipefail

ROOT=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
BLKMIG=${BLKMIG:-$ROOT/build/blkmig}
QEMU=${QEMU:-qemu-system-x86_64}
SPEED=${DEMO_SPEED:-268435456}

say() { printf 'demo: %s\n' "$*"; }
fail() { printf 'demo: FAILED — %s\n' "$*" >&2; exit 1; }

for tool in "$QEMU" qemu-img qemu-io; do
    command -v "$tool" >/dev/null || fail "$tool not found (run ./run.sh deps)"
done
[[ -x $BLKMIG ]] || fail "$BLKMIG not found (run ./run.sh build)"

DIR=$(mktemp -d /var/tmp/blkmig-demo.XXXXXX)
PIDFILES=()       # one per QEMU started
MIGRATE_PID=      # the background blkmig

# pid_of PIDFILE: the QEMU's pid if it is still alive and still QEMU.
pid_of() {
    local pid
    [[ -s $1 ]] || return 1
    pid=$(<"$1")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/comm && $(</proc/"$pid"/comm) == qemu* ]] || return 1
    echo "$pid"
}

cleanup() {
    local rc=$? pf pid i
    trap - EXIT INT TERM
    if [[ -n $MIGRATE_PID ]] && kill -0 "$MIGRATE_PID" 2>/dev/null; then
        kill -TERM "$MIGRATE_PID" 2>/dev/null || true
        wait "$MIGRATE_PID" 2>/dev/null || true
    fi
    for pf in "${PIDFILES[@]}"; do
        pid=$(pid_of "$pf") || continue
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$DIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# qmp SOCKET COMMAND [ARGS-JSON]: one QMP command through blkmig's helper.
qmp() {
    local sock=$1
    shift
    "$BLKMIG" qmp --qmp "$sock" "$@"
}

# stop_qemu NAME: quit over QMP, wait up to 10 s, then kill -9.
stop_qemu() {
    local name=$1 pid i
    pid=$(pid_of "$DIR/$name.pid") || return 0
    qmp "$DIR/$name-ctl.qmp" quit >/dev/null 2>&1 || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    say "$name: QEMU $pid did not quit in 10 s, killing it"
    kill -KILL "$pid" 2>/dev/null || true
}

# ---------------------------------------------------------------- accelerator
ACCEL=tcg
if [[ ${DEMO_ACCEL:-} == tcg ]]; then
    :   # forced
elif [[ -r /dev/kvm && -w /dev/kvm ]] &&
   "$QEMU" -machine pc,accel=kvm -nodefaults -display none -S \
        -daemonize -pidfile "$DIR/probe.pid" >/dev/null 2>&1; then
    ACCEL=kvm
    PIDFILES+=("$DIR/probe.pid")
    if pid=$(pid_of "$DIR/probe.pid"); then
        kill -TERM "$pid" 2>/dev/null || true
    fi
fi
if [[ $ACCEL == kvm ]]; then
    say "accelerator: kvm"
else
    say "accelerator: tcg (KVM not usable here)"
fi
say "work directory: $DIR"

# --------------------------------------------------------------------- images
SRC_VDA=$DIR/src-vda.qcow2 SRC_VDB=$DIR/src-vdb.raw
DST_VDA=$DIR/dst-vda.qcow2 DST_VDB=$DIR/dst-vdb.raw

quietly() {     # run a command, show its output only if it fails
    local out
    if ! out=$("$@" 2>&1); then
        printf '%s\n' "$out" >&2
        fail "$*"
    fi
}
say "creating source images: vda 4 GiB qcow2 with 1 GiB of data, vdb 1 GiB raw with 256 MiB"
quietly qemu-img create -f qcow2 "$SRC_VDA" 4G
quietly qemu-io -f qcow2 -c 'write -P 0xab 0 512M' -c 'write -P 0xcd 2G 512M' "$SRC_VDA"
quietly qemu-img create -f raw "$SRC_VDB" 1G
quietly qemu-io -f raw -c 'write -P 0x11 0 128M' -c 'write -P 0x22 768M 128M' "$SRC_VDB"
say "creating empty destination images"
quietly qemu-img create -f qcow2 "$DST_VDA" 4G
quietly qemu-img create -f raw "$DST_VDB" 1G

# ----------------------------------------------------------------------- VMs
# start_vm NAME VDA VDB [EXTRA...]: both sides use -blockdev only (QEMU 7.2
# cannot export -drive disks of an incoming VM, and mixing the two breaks
# migration).  NAME.qmp is blkmig's socket, NAME-ctl.qmp the demo's.
start_vm() {
    local name=$1 vda=$2 vdb=$3 i
    shift 3
    PIDFILES+=("$DIR/$name.pid")
    "$QEMU" -machine pc,accel="$ACCEL" -m 128 -nodefaults -display none "$@" \
        -blockdev driver=file,filename="$vda",node-name=file-vda,cache.direct=off \
        -blockdev driver=qcow2,file=file-vda,node-name=drive-vda \
        -device virtio-blk-pci,drive=drive-vda,id=vda \
        -blockdev driver=file,filename="$vdb",node-name=file-vdb \
        -blockdev driver=raw,file=file-vdb,node-name=drive-vdb \
        -device virtio-blk-pci,drive=drive-vdb,id=vdb \
        -qmp unix:"$DIR/$name.qmp",server=on,wait=off \
        -qmp unix:"$DIR/$name-ctl.qmp",server=on,wait=off \
        -daemonize -pidfile "$DIR/$name.pid" ||
        fail "could not start the $name QEMU"
    for ((i = 0; i < 100; i++)); do
        [[ -S $DIR/$name.qmp && -S $DIR/$name-ctl.qmp ]] && break
        sleep 0.1
    done
    [[ -S $DIR/$name.qmp && -S $DIR/$name-ctl.qmp ]] ||
        fail "$name: QMP sockets did not appear"
    say "$name VM started (pid $(<"$DIR/$name.pid"))"
}
start_vm src "$SRC_VDA" "$SRC_VDB"
start_vm dst "$DST_VDA" "$DST_VDB" -S -incoming defer

# ------------------------------------------------------------------ migration
say "migrating: $BLKMIG migrate --source src.qmp --dest dst.qmp --speed $SPEED"
"$BLKMIG" migrate --source "$DIR/src.qmp" --dest "$DIR/dst.qmp" --speed "$SPEED" \
    >"$DIR/migrate.out" &
MIGRATE_PID=$!

# The source is still copying its disks: block jobs exist, the guest runs and
# the memory migration has not begun.  Only then is a write certain to reach
# the destination through the mirror — a real guest cannot write once QEMU has
# stopped its vCPUs for the switch-over, but the monitor could.
src_copying() {
    local jobs status mig
    kill -0 "$MIGRATE_PID" 2>/dev/null || return 1
    status=$(qmp "$DIR/src-ctl.qmp" query-status 2>/dev/null) || return 1
    grep -Eq '"status"[[:space:]]*:[[:space:]]*"running"' <<<"$status" || return 1
    jobs=$(qmp "$DIR/src-ctl.qmp" query-block-jobs 2>/dev/null) || return 1
    grep -q '"device"' <<<"$jobs" || return 1
    mig=$(qmp "$DIR/src-ctl.qmp" query-migrate 2>/dev/null) || return 1
    ! grep -Eq '"status"[[:space:]]*:[[:space:]]*"[a-z-]+"' <<<"$mig" ||
        grep -Eq '"status"[[:space:]]*:[[:space:]]*"none"' <<<"$mig"
}

# guest_write DEV PATTERN OFFSET LENGTH: a write through the guest device's own
# BlockBackend, as the guest would issue it.  qemu-io -d takes a qdev id or QOM
# path; for virtio-blk-pci the BlockBackend belongs to the proxy's child
# "DEV/virtio-backend" (QEMU 7.2 answers "Device does not have a block device
# backend" for plain "DEV").
guest_write() {
    local cmd="qemu-io -d $1/virtio-backend \"write -P $2 $3 $4\""
    local out
    out=$(qmp "$DIR/src-ctl.qmp" human-monitor-command \
        "{\"command-line\":\"${cmd//\"/\\\"}\"}" 2>&1) ||
        fail "guest write on $1 failed: $out"
    if grep -qiE 'error|fail|denied' <<<"$out"; then
        fail "guest write on $1 failed: $out"
    fi
    say "guest wrote $4 of $2 at $3 on $1 while blkmig copies"
}

WRITES=0
for ((round = 0; round < 8 && WRITES < 5; round++)); do
    sleep 1
    src_copying || continue
    guest_write vda 0x5a "$((100 + round * 300))M" 8M
    guest_write vdb 0x5b "$((50 + round * 100))M" 4M
    WRITES=$((WRITES + 1))
done
((WRITES > 0)) || say "warning: blkmig finished before any guest write could be made"

MIGRATE_RC=0
wait "$MIGRATE_PID" || MIGRATE_RC=$?
MIGRATE_PID=
if ((MIGRATE_RC != 0)); then
    cat "$DIR/migrate.out"
    fail "blkmig migrate exited with status $MIGRATE_RC"
fi

# --------------------------------------------------------------------- checks
running=no
for ((i = 0; i < 50; i++)); do
    status=$(qmp "$DIR/dst-ctl.qmp" query-status 2>&1) || fail "dst query-status: $status"
    if grep -Eq '"status"[[:space:]]*:[[:space:]]*"running"' <<<"$status"; then
        running=yes
        break
    fi
    sleep 0.1
done
[[ $running == yes ]] || fail "destination VM is not running: $status"
say "destination VM is running"

# Have the destination guest flush its disks, as a guest would before anyone
# reads its images from outside; the source flushed when it handed over.
for dev in vda vdb; do
    out=$(qmp "$DIR/dst-ctl.qmp" human-monitor-command \
        "{\"command-line\":\"qemu-io -d $dev/virtio-backend flush\"}" 2>&1) ||
        fail "flush on the destination's $dev failed: $out"
    if grep -qiE 'error|fail|denied' <<<"$out"; then
        fail "flush on the destination's $dev failed: $out"
    fi
done

compare() {
    local fmt=$1 a=$2 b=$3 out
    if ! out=$(qemu-img compare -U -f "$fmt" -F "$fmt" "$a" "$b" 2>&1); then
        printf '%s\n' "$out" >&2
        fail "$(basename "$a") and $(basename "$b") differ"
    fi
    say "$(basename "$a") vs $(basename "$b"): $out"
}
compare qcow2 "$SRC_VDA" "$DST_VDA"
compare raw "$SRC_VDB" "$DST_VDB"

summary=$(grep '^blkmig: completed' "$DIR/migrate.out" || true)
[[ -n $summary ]] || fail "blkmig printed no 'blkmig: completed' line"

stop_qemu src
stop_qemu dst

echo
echo "$summary"
say "$WRITES rounds of guest writes during the copy"
echo "demo: OK — images identical"
