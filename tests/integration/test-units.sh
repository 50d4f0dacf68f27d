#!/bin/bash
# Integration test: the systemd tunnel units are valid, and their command carries a TLS tunnel migration as systemd would run it.
#
# Prints TAP.  The service's ExecStart runs under systemd-socket-activate --accept
# --inetd, which hands each connection over on stdin/stdout exactly like a socket
# unit with Accept=yes.
# Usage: test-units.sh   (environment: BLKMIG, G_TEST_SRCDIR)
set -uo pipefail

HERE=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
ROOT=$(cd "${G_TEST_SRCDIR:-$HERE/..}/.." && pwd)
BLKMIG=${BLKMIG:-$ROOT/build/blkmig}
DIR=$(mktemp -d /tmp/blkmig-units.XXXXXX)
PIDS=()
N=0 FAILED=0

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    for f in "$DIR"/*.pid; do [[ -s $f ]] && kill "$(<"$f")" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$DIR"
}
trap cleanup EXIT
ok() { N=$((N + 1)); echo "ok $N - $1"; }
not_ok() { N=$((N + 1)); FAILED=$((FAILED + 1)); echo "not ok $N - $1"; shift; printf '# %s\n' "$@"; }
check() { local d=$1 out; shift; if out=$("$@" 2>&1); then ok "$d"; else not_ok "$d" "$out"; fi; }

for tool in systemd-analyze systemd-socket-activate openssl qemu-system-x86_64; do
    command -v "$tool" >/dev/null || { echo "Bail out! $tool not found"; exit 1; }
done

# 1. The units, as installed but pointing at this build and a local settings file.
sed -e "s|/usr/local/bin/blkmig|$BLKMIG|" -e "s|/etc/default/blkmig-tunnel|$DIR/env|" \
    "$ROOT/examples/blkmig-tunnel@.service" > "$DIR/blkmig-tunnel@.service"
cp "$ROOT/examples/blkmig-tunnel.socket" "$DIR/"
"$HERE/make-certs.sh" "$DIR/certs" 127.0.0.1 >/dev/null
printf 'BLKMIG_NBD_SOCKET=%s\nBLKMIG_TLS_CREDS=%s\nBLKMIG_TLS_AUTHZ=%s\n' "$DIR/nbd.sock" \
    "$DIR/certs" "O=blkmig,CN=blkmig-client" > "$DIR/env"
check "systemd-analyze verify accepts the socket and service units" \
    systemd-analyze verify --man=no "$DIR/blkmig-tunnel.socket" "$DIR/blkmig-tunnel@.service"

# 2. Two QEMUs and a phases migration whose NBD traffic goes through the unit's command.
ACCEL=tcg; [[ -c /dev/kvm ]] && { exec 3<>/dev/kvm; } 2>/dev/null && { exec 3>&-; ACCEL=kvm; }
vm() {  # vm NAME IMAGE [EXTRA...]
    local name=$1 img=$2; shift 2
    qemu-system-x86_64 -machine pc,accel=$ACCEL -m 64 -nodefaults -display none "$@" \
        -blockdev driver=file,filename="$img",node-name=file-vda \
        -blockdev driver=qcow2,file=file-vda,node-name=drive-vda \
        -device virtio-blk-pci,drive=drive-vda,id=vda \
        -qmp unix:"$DIR/$name.qmp",server=on,wait=off -daemonize -pidfile "$DIR/$name.pid" 2>/dev/null
}
qemu-img create -q -f qcow2 "$DIR/src.qcow2" 64M
qemu-io -f qcow2 -c 'write -P 0x42 0 16M' "$DIR/src.qcow2" >/dev/null
qemu-img create -q -f qcow2 "$DIR/dst.qcow2" 64M
vm src "$DIR/src.qcow2" && vm dst "$DIR/dst.qcow2" -S -incoming defer || { echo "Bail out! QEMU"; exit 1; }

# ExecStart's command line, read from the unit itself (variables expanded from env).
set -a; . "$DIR/env"; set +a
exec_start=$(sed -n 's/^ExecStart=//p' "$DIR/blkmig-tunnel@.service" | envsubst)
PORT=$((20000 + $$ % 20000))
# shellcheck disable=SC2086  # the command line is word-split as systemd would
systemd-socket-activate -l 127.0.0.1:$PORT --accept --inetd $exec_start 2>"$DIR/endpoint.log" &
PIDS+=($!)

"$BLKMIG" begin --qmp "$DIR/src.qmp" -o "$DIR/c1" &&
"$BLKMIG" prepare --qmp "$DIR/dst.qmp" --listen "unix:$DIR/nbd.sock" -c "$DIR/c1" -o "$DIR/c2" &&
"$BLKMIG" perform -q --local-destination --qmp "$DIR/src.qmp" -c "$DIR/c2" -o "$DIR/c3" \
    --tunnel "tcp:127.0.0.1:$PORT" --tls-creds "$DIR/certs" &&
"$BLKMIG" finish --qmp "$DIR/dst.qmp" -c "$DIR/c3" > "$DIR/phases.log" 2>&1
rc=$?
if [[ $rc == 0 ]]; then ok "a live migration through the unit's endpoint (TLS) completes"
else not_ok "a live migration through the unit's endpoint (TLS) completes" "exit $rc" \
    "$(cat "$DIR/phases.log" "$DIR/endpoint.log")"; fi
check "the destination runs" grep -q '"status" : "running"' <("$BLKMIG" qmp --qmp "$DIR/dst.qmp" query-status)
check "the images are identical" qemu-img compare -U "$DIR/src.qcow2" "$DIR/dst.qcow2"
echo "1..$N"
[[ $FAILED == 0 ]]
