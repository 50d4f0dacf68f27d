#!/bin/bash
# Security test: a hostile destination cookie fed to the real `blkmig perform` is refused before anything starts; the memory stream is TLS with --tls-creds.
#
# Issue 9, items 1, 2, 5 and 8.  Each forged field gets its own perform run, which
# must exit with the class's code and the exact one-line message, run nothing (no
# file created by the injected command) and leave the source VM as it was (running,
# no jobs, nodes or TLS objects).  Then the untouched cookie still migrates, and a
# replayed one is refused.  Last, a TLS live migration: during the switchover both
# QEMUs' migration parameters name blkmig's TLS objects, afterwards none do.
#
# Both QEMUs and every blkmig run in a network namespace of their own with only
# loopback, so nothing (not even the old code under test) can send a packet
# elsewhere.  Needs root (exit 77, skipped, without it).  Prints TAP.
# Usage: test-sec-source.sh [BLKMIG]   (default: $BLKMIG, else build/blkmig)
# shellcheck disable=SC2317  # helpers called indirectly
set -uo pipefail

HERE=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BLKMIG=${1:-${BLKMIG:-$ROOT/build/blkmig}}
[[ $BLKMIG == /* ]] || BLKMIG=$PWD/$BLKMIG
QEMU=${QEMU:-qemu-system-x86_64}
. "$ROOT/tests/integration/lib-netns.sh"

[[ $(id -u) == 0 ]] || skip_all "a network namespace needs root"
command -v ip >/dev/null || skip_all "no ip command (iproute2)"
for tool in "$QEMU" qemu-img qemu-io jq openssl; do
    command -v "$tool" >/dev/null || bail "$tool not found"
done
[[ -x $BLKMIG ]] || bail "blkmig binary $BLKMIG not found"

NS=bss-$$
DIR=$(mktemp -d "${TMPDIR:-/tmp}/blkmig-secsrc.XXXXXX") || bail "mktemp failed"
PIDFILES=()
NAMESPACES=()
cleanup() {
    local rc=$? pf
    trap - EXIT INT TERM HUP
    for pf in "${PIDFILES[@]}"; do stop_qemu "$pf"; done
    ip netns del "$NS" 2>/dev/null
    rm -rf "$DIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

ip netns add "$NS" || bail "ip netns add $NS failed"
ip -n "$NS" link set lo up || bail "lo up in $NS"
export BLKMIG_STATE_DIR=$DIR/state
mkdir -m 0700 "$BLKMIG_STATE_DIR"

# --local-destination exists only in the fixed blkmig; the old one runs without it.
LOCAL=()
"$BLKMIG" perform --help 2>&1 | grep -q -- --local-destination && LOCAL=(--local-destination)

qmp() { "$BLKMIG" qmp --qmp "$@"; }
in_ns() { timeout 60 ip netns exec "$NS" "$BLKMIG" "$@"; }

# start_vm NAME IMAGE [EXTRA...]: a daemonized QEMU in the namespace, QMP at DIR/NAME.qmp
# for blkmig and DIR/NAME.mon for the checks while blkmig holds the first
start_vm() {
    local name=$1 img=$2
    shift 2
    PIDFILES+=("$DIR/$name.pid")
    ip netns exec "$NS" "$QEMU" -machine pc,accel="$ACCEL" -m 64 -nodefaults -display none \
        -blockdev "driver=file,filename=$img,node-name=file-vda" \
        -blockdev "driver=qcow2,file=file-vda,node-name=drive-vda" \
        -device virtio-blk-pci,drive=drive-vda,id=vda "$@" \
        -qmp unix:"$DIR/$name.qmp",server=on,wait=off -qmp unix:"$DIR/$name.mon",server=on,wait=off \
        -daemonize -pidfile "$DIR/$name.pid" \
        >"$DIR/$name.log" 2>&1 || bail "could not start QEMU $name: $(cat "$DIR/$name.log")"
    wait_qmp "$name"
}

# start_pair P: P-src running on data, P-dst (-S -incoming defer) on an empty image
start_pair() {
    qemu-img create -q -f qcow2 "$DIR/$1-src.qcow2" 64M || bail "qemu-img"
    qemu-io -f qcow2 -c 'write -P 0x5a 0 8M' -c 'write -P 0xa5 40M 4M' "$DIR/$1-src.qcow2" \
        >/dev/null || bail "qemu-io"
    qemu-img create -q -f qcow2 "$DIR/$1-dst.qcow2" 64M || bail "qemu-img"
    start_vm "$1-src" "$DIR/$1-src.qcow2"
    start_vm "$1-dst" "$DIR/$1-dst.qcow2" -S -incoming defer
}

no_blkmig_nodes() {
    local out
    out=$(qmp "$1" query-named-block-nodes '{"flat":true}' 2>&1) || { echo "$out"; return 1; }
    ! grep -o '"node-name" : "blkmig[^"]*"' <<<"$out"
}
no_blkmig_objects() {
    local out
    out=$(qmp "$1" qom-list '{"path":"/objects"}' 2>&1) || { echo "$out"; return 1; }
    ! grep -o '"name" : "blkmig[^"]*"' <<<"$out"
}
source_intact() { vm_running "$1" && no_block_jobs "$1" && no_blkmig_nodes "$1" && no_blkmig_objects "$1"; }
no_pwned() { ! ls "$DIR"/pwned-* 2>/dev/null; }

# refused NAME COOKIE WANT-RC MESSAGE PERFORM-ARGS...: perform with COOKIE exits WANT-RC
# with exactly "blkmig perform: MESSAGE", ran nothing, left the source as it was.
refused() {
    local name=$1 cookie=$2 want=$3 msg=$4 rc=0 out
    shift 4
    in_ns perform -q --qmp "$DIR/f-src.qmp" -c "$cookie" -o "$DIR/$name.result" "$@" \
        >"$DIR/$name.log" 2>&1 || rc=$?
    out=$(<"$DIR/$name.log")
    if ((rc == want)) && [[ $out == "blkmig perform: $msg" ]]; then
        ok "$name: perform exits $want and says why"
    else
        not_ok "$name: perform exits $want with \"blkmig perform: $msg\" (status $rc)" "$out"
    fi
    check "$name: nothing ran, the source VM runs untouched" eval 'no_pwned && source_intact "$DIR/f-src.qmp"'
}

# forge NAME JQ-FILTER [JQ-ARGS...]: DIR/NAME.cookie is the real destination cookie, edited
forge() {
    local name=$1 filter=$2
    shift 2
    jq "$@" "$filter" "$DIR/f.c2" >"$DIR/$name.cookie" || bail "jq $filter"
}



# ---------------------------------------- the forged destination cookies
start_pair f
in_ns begin --qmp "$DIR/f-src.qmp" -o "$DIR/f.c1" >/dev/null 2>&1 || bail "begin failed"
in_ns prepare --qmp "$DIR/f-dst.qmp" -c "$DIR/f.c1" -o "$DIR/f.c2" \
    --listen "unix:$DIR/f-nbd.sock" >"$DIR/f-prepare.log" 2>&1 ||
    bail "prepare failed: $(cat "$DIR/f-prepare.log")"
ID=$(jq -r .id "$DIR/f.c2")
SIZE=$(jq '.disks[0]["virtual-size"]' "$DIR/f.c2")
ENDPOINT="$BLKMIG tunnel-endpoint --nbd-socket"

# item 1: no shell sees the socket path; {nbd-socket} is a whole word
inj='/tmp/$(touch '$DIR'/pwned-1)/nbd.sock'
forge subst '.destination.nbd.unix = $v' --arg v "$inj"
refused subst "$DIR/subst.cookie" 3 "cookie: destination.nbd.unix is not a plain absolute path: $inj" \
    --tunnel-command "$ENDPOINT {nbd-socket}"
inj="/tmp/x'; touch $DIR/pwned-2; echo '"
forge quoted '.destination.nbd.unix = $v' --arg v "$inj"
refused quoted "$DIR/quoted.cookie" 3 "cookie: destination.nbd.unix is not a plain absolute path: $inj" \
    --tunnel-command "$ENDPOINT '{nbd-socket}'"
refused glued "$DIR/f.c2" 2 "--tunnel-command: {nbd-socket} must be a word of its own" \
    --tunnel-command "$ENDPOINT x{nbd-socket}"

# item 2: the memory stream is the source's choice: tcp:/unix: to the disks' host only
inj="exec:touch $DIR/pwned-3; cat >/dev/null"
forge exec '.["destination"]["migrate-uri"] = $v' --arg v "$inj"
refused exec "$DIR/exec.cookie" 3 "cookie: destination.migrate-uri is not tcp:HOST:PORT or unix:PATH (choose the memory stream with --migrate-uri): $inj" \
    "${LOCAL[@]}"
forge fd '.["destination"]["migrate-uri"] = "fd:3"'
refused fd "$DIR/fd.cookie" 3 "cookie: destination.migrate-uri is not tcp:HOST:PORT or unix:PATH (choose the memory stream with --migrate-uri): fd:3" \
    "${LOCAL[@]}"
forge elsewhere '.["destination"]["migrate-uri"] = "tcp:192.0.2.7:4444"'
refused elsewhere "$DIR/elsewhere.cookie" 3 "cookie: destination.migrate-uri is not on the host the disks go to (choose the memory stream with --migrate-uri): tcp:192.0.2.7:4444" \
    "${LOCAL[@]}"
forge dotdot '.["destination"]["migrate-uri"] = "unix:/run/../etc/x.sock"'
refused dotdot "$DIR/dotdot.cookie" 3 "cookie: destination.migrate-uri is not a plain absolute path: /run/../etc/x.sock" \
    "${LOCAL[@]}"
refused plaintext "$DIR/f.c2" 2 "refusing a plaintext memory stream over TCP to 192.0.2.1: give --tls-creds DIR, or --insecure if the network is trusted" \
    "${LOCAL[@]}" --migrate-uri tcp:192.0.2.1:4444

# item 8: local targets only when the operator says so; the answer must match the offer
refused local-unix "$DIR/f.c2" 3 "cookie: destination.nbd.unix is a UNIX socket on this host (pass --local-destination if the destination runs here): $DIR/f-nbd.sock"
forge loopback '.destination.nbd = {"host": "127.0.0.1", "port": 22}'
refused loopback "$DIR/loopback.cookie" 3 "cookie: destination.nbd.host is this host (pass --local-destination if the destination runs here): 127.0.0.1"
forge hostname '.destination.nbd = {"host": "192.0.2.9", "port": 10809}'
"$HERE/../integration/make-certs.sh" "$DIR/pki" 127.0.0.1 >/dev/null 2>&1 || bail "make-certs.sh"
mkdir -p "$DIR/src-tls" "$DIR/dst-tls"
cp "$DIR/pki/ca-cert.pem" "$DIR/pki/client-cert.pem" "$DIR/pki/client-key.pem" "$DIR/src-tls/"
cp "$DIR/pki/ca-cert.pem" "$DIR/pki/server-cert.pem" "$DIR/pki/server-key.pem" "$DIR/dst-tls/"
refused tls-name "$DIR/hostname.cookie" 2 "--tls-creds needs --tls-hostname NAME, the name the destination's certificate carries (it is not taken from the destination's cookie)" \
    --tls-creds "$DIR/src-tls"
forge other-id '.id = "0123456789abcdef0123456789abcdef"'
refused other-id "$DIR/other-id.cookie" 3 "cookie: migration 0123456789abcdef0123456789abcdef was not offered by begin on this host (or its offer is gone)" \
    "${LOCAL[@]}"
forge size '.disks[0]["virtual-size"] += 65536'
refused size "$DIR/size.cookie" 3 "cookie: disk vda is $SIZE bytes on the source but $((SIZE + 65536)) bytes on the destination" \
    "${LOCAL[@]}"
forge disk '.disks[0].name = "vdz"'
refused disk "$DIR/disk.cookie" 3 "cookie: destination did not answer for disk vda" "${LOCAL[@]}"
forge mode '.mode = "copy"'
refused mode "$DIR/mode.cookie" 3 "cookie: destination answered for a copy migration, expected live" \
    "${LOCAL[@]}"

# The refusals left the offer: the real answer still migrates; then it cannot be replayed.
rc=0
in_ns perform -q "${LOCAL[@]}" --qmp "$DIR/f-src.qmp" -c "$DIR/f.c2" -o "$DIR/f.c3" \
    >"$DIR/f-perform.log" 2>&1 || rc=$?
if ((rc == 0)) && in_ns finish --qmp "$DIR/f-dst.qmp" -c "$DIR/f.c3" >>"$DIR/f-perform.log" 2>&1 &&
    qemu-img compare -U "$DIR/f-src.qcow2" "$DIR/f-dst.qcow2" >>"$DIR/f-perform.log" 2>&1; then
    ok "the untouched cookie still migrates (perform --local-destination, finish, identical)"
else
    not_ok "the untouched cookie still migrates (status $rc)" "$DIR/f-perform.log"
fi
rc=0
out=$(in_ns perform -q "${LOCAL[@]}" --qmp "$DIR/f-src.qmp" -c "$DIR/f.c2" -o "$DIR/f.c4" 2>&1) || rc=$?
if ((rc == 3)) && [[ $out == "blkmig perform: cookie: migration $ID was not offered by begin on this host (or its offer is gone)" ]]; then
    ok "a replayed destination cookie is refused (exit 3)"
else
    not_ok "a replayed destination cookie is refused (exit 3)" "status $rc: $out"
fi
check "no journal is left" eval '[[ -z $(ls "$BLKMIG_STATE_DIR") ]]'
stop_qemu "$DIR/f-src.pid"
stop_qemu "$DIR/f-dst.pid"

# ------------------------- item 5: a TLS live migration's memory stream is TLS
start_pair t
in_ns begin --qmp "$DIR/t-src.qmp" -o "$DIR/t.c1" >/dev/null 2>&1 || bail "begin failed"
PORT=$((20000 + $$ % 20000))
rc=0
in_ns prepare --qmp "$DIR/t-dst.qmp" -c "$DIR/t.c1" -o "$DIR/t.c2" --listen tcp:127.0.0.1:0 \
    --incoming "tcp:127.0.0.1:$PORT" --tls-creds "$DIR/dst-tls" \
    --tls-authz "O=blkmig,CN=blkmig-client" >"$DIR/t-prepare.log" 2>&1 || rc=$?
((rc == 0)) || bail "prepare --tls-creds failed: $(cat "$DIR/t-prepare.log")"
ID8=$(jq -r .id "$DIR/t.c2" | cut -c1-8)
params() { qmp "$1" query-migrate-parameters | jq -r "[.\"tls-creds\", .\"tls-hostname\", .\"tls-authz\"] | join(\",\")"; }
BLKMIG_TEST_PAUSE_AT=pre-switchover ip netns exec "$NS" "$BLKMIG" perform -q "${LOCAL[@]}" \
    --qmp "$DIR/t-src.qmp" -c "$DIR/t.c2" -o "$DIR/t.c3" --tls-creds "$DIR/src-tls" \
    >"$DIR/t-perform.log" 2>&1 &
perform=$!
for ((i = 0; i < 300; i++)); do
    [[ $(ps -o stat= -p "$perform" 2>/dev/null) == T* ]] && break
    sleep 0.1
done
src_params=$(params "$DIR/t-src.mon")
dst_params=$(params "$DIR/t-dst.mon")
status=$(qmp "$DIR/t-src.mon" query-migrate | jq -r .status)
kill -CONT "$perform" 2>/dev/null
rc=0
wait "$perform" || rc=$?
if [[ $status == pre-switchover && $src_params == "blkmig${ID8}c0,127.0.0.1," ]]; then
    ok "during the switchover the source migrates with tls-creds blkmig${ID8}c0, tls-hostname 127.0.0.1"
else
    not_ok "during the switchover the source migrates with TLS" "status $status, parameters $src_params"
fi
if [[ $dst_params == "blkmig${ID8}t0,,blkmig${ID8}z0" ]]; then
    ok "the destination receives with tls-creds blkmig${ID8}t0 and tls-authz blkmig${ID8}z0"
else
    not_ok "the destination receives with TLS and authz" "parameters $dst_params"
fi
if ((rc == 0)) && in_ns finish --qmp "$DIR/t-dst.qmp" -c "$DIR/t.c3" >>"$DIR/t-perform.log" 2>&1; then
    ok "perform and finish of the TLS live migration exit 0"
else
    not_ok "perform and finish of the TLS live migration exit 0 (status $rc)" "$DIR/t-perform.log"
fi
check "the destination VM runs" vm_running "$DIR/t-dst.qmp"
check "the images are identical" qemu-img compare -U "$DIR/t-src.qcow2" "$DIR/t-dst.qcow2"
check "the parameters are reset and no TLS object is left on either side" eval \
    '[[ $(params "$DIR/t-src.qmp") == ",," && $(params "$DIR/t-dst.qmp") == ",," ]] &&
     no_blkmig_objects "$DIR/t-src.qmp" && no_blkmig_objects "$DIR/t-dst.qmp"'
stop_qemu "$DIR/t-src.pid"
stop_qemu "$DIR/t-dst.pid"

# --------------- item 5: an aborted TLS prepare leaves no parameter behind either
start_pair a
in_ns begin --qmp "$DIR/a-src.qmp" -o "$DIR/a.c1" >/dev/null 2>&1 || bail "begin failed"
in_ns prepare --qmp "$DIR/a-dst.qmp" -c "$DIR/a.c1" -o "$DIR/a.c2" --listen tcp:127.0.0.1:0 \
    --incoming "tcp:127.0.0.1:$((PORT + 1))" --tls-creds "$DIR/dst-tls" >"$DIR/a.log" 2>&1 ||
    bail "prepare --tls-creds failed: $(cat "$DIR/a.log")"
ID8=$(jq -r .id "$DIR/a.c2" | cut -c1-8)
check "prepare --tls-creds: the incoming stream waits with tls-creds blkmig${ID8}t0" eval \
    '[[ $(params "$DIR/a-dst.mon") == "blkmig${ID8}t0,," ]]'
check "abort on the destination resets the parameters before the objects go" eval \
    'in_ns abort --qmp "$DIR/a-dst.qmp" -c "$DIR/a.c2" && [[ $(params "$DIR/a-dst.mon") == ",," ]] &&
     no_blkmig_objects "$DIR/a-dst.mon"'
stop_qemu "$DIR/a-src.pid"
stop_qemu "$DIR/a-dst.pid"

# ------ item 5: migrate (both sides local, UNIX sockets) with TLS and no authz list
start_pair m
rc=0
in_ns migrate -q --source "$DIR/m-src.qmp" --dest "$DIR/m-dst.qmp" --tls-creds "$DIR/pki" \
    >"$DIR/m.log" 2>&1 || rc=$?
if ((rc == 0)) && qemu-img compare -U "$DIR/m-src.qcow2" "$DIR/m-dst.qcow2" >>"$DIR/m.log" 2>&1
then
    ok "migrate --tls-creds over UNIX sockets (memory stream TLS, no authz) exits 0, identical"
else
    not_ok "migrate --tls-creds over UNIX sockets exits 0, identical (status $rc)" "$DIR/m.log"
fi
check "migrate --tls-creds: the destination runs, no parameter or TLS object is left" eval \
    'vm_running "$DIR/m-dst.mon" && [[ $(params "$DIR/m-src.mon") == ",," &&
     $(params "$DIR/m-dst.mon") == ",," ]] && no_blkmig_objects "$DIR/m-src.mon" &&
     no_blkmig_objects "$DIR/m-dst.mon"'
stop_qemu "$DIR/m-src.pid"
stop_qemu "$DIR/m-dst.pid"

echo "1..$N"
((FAILED == 0)) || { diag "$FAILED checks failed"; exit 1; }
exit 0
