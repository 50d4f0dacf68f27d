#!/bin/bash
# Integration test: the transports between two network namespaces — TLS for NBD (and
# who may connect), the refusal of plaintext NBD to non-loopback addresses, and
# --tunnel over TCP (with TLS) and over a command, including a tunnel that breaks and
# one whose link has an outage (the delaying relay, tests/tools/delay-relay.c).
#
# Prints TAP on stdout.  Exit 0 only if every check passed, 77 (skip) only when
# network namespaces cannot be used at all (not root, no `ip` or `nsenter`), 1 otherwise.
# Usage: test-transport.sh [BLKMIG]   (default: $BLKMIG, else build/blkmig)
# Environment: BLKMIG, QEMU (default qemu-system-x86_64), G_TEST_SRCDIR (tests/),
# DELAY_RELAY (default: tests/delay-relay next to BLKMIG).
#
# The tunnel cases put the destination QEMU's NBD socket on a tmpfs mounted only in
# that QEMU's mount namespace: the source cannot reach it except through the tunnel
# (the endpoint joins the QEMU's namespaces with nsenter).
# shellcheck disable=SC2317  # the check helpers and cleanup are called indirectly
set -uo pipefail

HERE=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
ROOT=$(cd "${G_TEST_SRCDIR:-$HERE/..}/.." && pwd)
BLKMIG=${1:-${BLKMIG:-$ROOT/build/blkmig}}
[[ $BLKMIG == /* ]] || BLKMIG=$PWD/$BLKMIG   # nsenter -m changes the directory
QEMU=${QEMU:-qemu-system-x86_64}
MAKE_CERTS=$HERE/make-certs.sh
DELAY_RELAY=${DELAY_RELAY:-$(dirname "$BLKMIG")/tests/delay-relay}
PLAN=74
SRC_IP=10.124.0.1 DST_IP=10.124.0.2
CLIENT_DN="O=blkmig,CN=blkmig-client"
PLAINTEXT_MSG="refusing plaintext NBD over TCP to $DST_IP: give --tls-creds DIR, or --insecure"
PLAINTEXT_MSG+=" if the network is trusted"

# ---------------------------------------------------------------- skip / bail
. "$HERE/lib-netns.sh"

[[ $(id -u) == 0 ]] || skip_all "network namespaces need root"
command -v ip >/dev/null || skip_all "no ip command (iproute2)"
command -v nsenter >/dev/null || skip_all "no nsenter (util-linux)"
for tool in "$QEMU" qemu-img qemu-io openssl; do
    command -v "$tool" >/dev/null || bail "$tool not found"
done
[[ -x $BLKMIG ]] || bail "blkmig binary $BLKMIG not found"
[[ -x $MAKE_CERTS ]] || bail "$MAKE_CERTS not found"
[[ -x $DELAY_RELAY ]] || bail "delay-relay $DELAY_RELAY not found (DELAY_RELAY)"

# ------------------------------------------------------------------- cleanup
SRC_NS=bt-src-$$ DST_NS=bt-dst-$$
VETH_SRC=bts$$ VETH_DST=btd$$
DIR=$(mktemp -d "${TMPDIR:-/tmp}/blkmig-transport.XXXXXX") || bail "mktemp failed"
PIDFILES=()
NAMESPACES=()
BG_PIDS=()      # tunnel endpoints, relays and perform runs started in the background


cleanup() {
    local rc=$? pf ns pid
    trap - EXIT INT TERM HUP
    # TERM first: `timeout` passes it on to the blkmig it runs
    for pid in "${BG_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pf in "${PIDFILES[@]}"; do stop_qemu "$pf"; done
    for pid in "${BG_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    for pid in "${BG_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
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
netns_pair "$SRC_IP" "$DST_IP"
diag "accelerator $ACCEL, namespaces $SRC_NS/$DST_NS, directory $DIR"

# -------------------------------------------------------------------- helpers
quietly() {     # run a command; show its output and bail out if it fails
    local out
    out=$("$@" 2>&1) || bail "$* failed: $out"
}

# ------------------------------------------------------------- certificates
# pki/: the CA, its server and client (O=blkmig,CN=blkmig-client); dst/ and src/ hold
# what each side needs.  rogue/: a client certificate from ANOTHER CA (the source
# trusts both CAs: QEMU checks its own certificate against ca-cert.pem); nocert/: only
# the CA; intruder/: a client the right CA signed, but with CN=intruder.
quietly "$MAKE_CERTS" "$DIR/pki" "$DST_IP"
quietly "$MAKE_CERTS" "$DIR/other-pki" "$DST_IP"
mkdir -p "$DIR/dst" "$DIR/src" "$DIR/rogue" "$DIR/nocert" "$DIR/intruder"
cp "$DIR/pki/ca-cert.pem" "$DIR/pki/server-cert.pem" "$DIR/pki/server-key.pem" "$DIR/dst/"
cp "$DIR/pki/ca-cert.pem" "$DIR/pki/client-cert.pem" "$DIR/pki/client-key.pem" "$DIR/src/"
cat "$DIR/pki/ca-cert.pem" "$DIR/other-pki/ca-cert.pem" >"$DIR/rogue/ca-cert.pem"
cp "$DIR/other-pki/client-cert.pem" "$DIR/other-pki/client-key.pem" "$DIR/rogue/"
cp "$DIR/pki/ca-cert.pem" "$DIR/nocert/"
cp "$DIR/pki/ca-cert.pem" "$DIR/intruder/"
quietly openssl req -newkey rsa:2048 -nodes -keyout "$DIR/intruder/client-key.pem" \
    -out "$DIR/intruder/client.csr" -subj "/O=blkmig/CN=intruder"
printf 'extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n' \
    >"$DIR/intruder/client.ext"
quietly openssl x509 -req -in "$DIR/intruder/client.csr" -CA "$DIR/pki/ca-cert.pem" \
    -CAkey "$DIR/pki/ca-key.pem" -CAcreateserial -out "$DIR/intruder/client-cert.pem" -days 2 \
    -extfile "$DIR/intruder/client.ext"
rm -f "$DIR/intruder/client.csr" "$DIR/intruder/client.ext"

# ------------------------------------------------------------------- images
DISKS3=(vda vdb vdc)

# make_images PREFIX NDISKS: source images with data (vda qcow2 24 MiB of 64, vdb raw
# 12 MiB of 32, vdc qcow2 8 MiB of 32), empty destination images of the same sizes.
make_images() {
    local p=$1 n=$2
    quietly qemu-img create -f qcow2 "$DIR/$p-src-vda.qcow2" 64M
    quietly qemu-io -f qcow2 -c 'write -P 0xab 0 16M' -c 'write -P 0xcd 40M 8M' \
        "$DIR/$p-src-vda.qcow2"
    quietly qemu-img create -f raw "$DIR/$p-src-vdb.raw" 32M
    quietly qemu-io -f raw -c 'write -P 0x11 0 8M' -c 'write -P 0x22 20M 4M' \
        "$DIR/$p-src-vdb.raw"
    quietly qemu-img create -f qcow2 "$DIR/$p-dst-vda.qcow2" 64M
    quietly qemu-img create -f raw "$DIR/$p-dst-vdb.raw" 32M
    if ((n == 3)); then
        quietly qemu-img create -f qcow2 "$DIR/$p-src-vdc.qcow2" 32M
        quietly qemu-io -f qcow2 -c 'write -P 0x5a 4M 8M' "$DIR/$p-src-vdc.qcow2"
        quietly qemu-img create -f qcow2 "$DIR/$p-dst-vdc.qcow2" 32M
    fi
}

disk_file() {   # disk_file PREFIX SIDE DISK
    case $3 in
        vdb) echo "$DIR/$1-$2-vdb.raw" ;;
        *) echo "$DIR/$1-$2-$3.qcow2" ;;
    esac
}
disk_format() { [[ $1 == vdb ]] && echo raw || echo qcow2; }

# start_vm NS NAME PREFIX SIDE NDISKS PRIVATE-DIR [EXTRA...]: a daemonized QEMU inside
# namespace NS on PREFIX-SIDE's images, QMP at $DIR/NAME.qmp.  With a PRIVATE-DIR
# (not "-") the QEMU runs with a tmpfs there that only its mount namespace sees.
start_vm() {
    local ns=$1 name=$2 p=$3 side=$4 n=$5 private=$6 d fmt args=()
    shift 6
    for d in vda vdb vdc; do
        [[ $d == vdc ]] && ((n < 3)) && break
        fmt=$(disk_format "$d")
        args+=(-blockdev "driver=file,filename=$(disk_file "$p" "$side" "$d"),node-name=file-$d"
            -blockdev "driver=$fmt,file=file-$d,node-name=drive-$d"
            -device "virtio-blk-pci,drive=drive-$d,id=$d")
    done
    PIDFILES+=("$DIR/$name.pid")
    if [[ $private != - ]]; then
        mkdir -p "$private"
        # `ip netns exec` gives the command a mount namespace of its own
        # shellcheck disable=SC2016  # expanded by that sh
        set -- sh -c 'mount -t tmpfs blkmig-private "$0" && exec "$@"' "$private" "$QEMU" "$@"
    else
        set -- "$QEMU" "$@"
    fi
    ip netns exec "$ns" "$@" -machine pc,accel="$ACCEL" -m 64 -nodefaults -display none \
        "${args[@]}" -qmp unix:"$DIR/$name.qmp",server=on,wait=off \
        -daemonize -pidfile "$DIR/$name.pid" >"$DIR/$name.log" 2>&1 ||
        bail "could not start QEMU $name: $(cat "$DIR/$name.log")"
    wait_qmp "$name"
}

# start_pair PREFIX NDISKS [PRIVATE-DIR]: source QEMU PREFIX-src in SRC_NS, destination
# PREFIX-dst (-S -incoming defer) in DST_NS, on PREFIX's images.
start_pair() {
    local p=$1 n=$2 private=${3:--}
    CASE_T0=$SECONDS
    start_vm "$SRC_NS" "$p-src" "$p" src "$n" -
    start_vm "$DST_NS" "$p-dst" "$p" dst "$n" "$private" -S -incoming defer
}

stop_pair() {
    stop_qemu "$DIR/$1-src.pid"
    stop_qemu "$DIR/$1-dst.pid"
    diag "$1: $((SECONDS - CASE_T0)) s"
}

qmp() {         # qmp SOCKET COMMAND [ARGS-JSON]
    local sock=$1
    shift
    "$BLKMIG" qmp --qmp "$sock" "$@"
}

# in_src / in_dst ARGS...: blkmig inside the namespace, with a time limit.
in_src() { timeout 60 ip netns exec "$SRC_NS" "$BLKMIG" "$@"; }
in_dst() { timeout 60 ip netns exec "$DST_NS" "$BLKMIG" "$@"; }
# in_dst_vm PIDFILE ARGS...: blkmig in the destination QEMU's network AND mount
# namespaces (prepare makes the NBD socket itself and hands QEMU its fd).
in_dst_vm() {
    local qpid
    qpid=$(pid_of "$1") || { echo "the QEMU of $1 is gone"; return 1; }
    shift
    timeout 60 nsenter -t "$qpid" -n -m "$BLKMIG" "$@"
}

# run LOG COMMAND...: COMMAND's stdout and stderr to LOG; sets RC to its status.
run() {
    local log=$1
    shift
    RC=0
    "$@" >"$log" 2>&1 || RC=$?
}

no_exports() {      # no_exports SOCKET: query-block-exports answers []
    local out
    out=$(qmp "$1" query-block-exports 2>&1) || { echo "$out"; return 1; }
    [[ $out == "[]" ]] || { echo "$out"; return 1; }
}

no_blkmig_nodes() { # no_blkmig_nodes SOCKET: nothing blkmig added is left in the graph
    local out
    out=$(qmp "$1" query-named-block-nodes '{"flat":true}' 2>&1) || { echo "$out"; return 1; }
    ! grep -o '"node-name" : "blkmig[^"]*"' <<<"$out"
}

no_blkmig_objects() {   # no_blkmig_objects SOCKET: no TLS credentials or authz left
    local out
    out=$(qmp "$1" qom-list '{"path":"/objects"}' 2>&1) || { echo "$out"; return 1; }
    ! grep -o '"name" : "blkmig[^"]*"' <<<"$out"
}

source_intact() {   # source_intact SOCKET: running, no jobs, no nodes or objects of ours
    vm_running "$1" && no_block_jobs "$1" && no_blkmig_nodes "$1" && no_blkmig_objects "$1"
}

dest_clean() {      # dest_clean SOCKET: no exports, no nodes or objects of ours
    no_exports "$1" && no_blkmig_nodes "$1" && no_blkmig_objects "$1"
}

identical() {       # identical FORMAT A B
    qemu-img compare -U -f "$1" -F "$1" "$2" "$3"
}

# check_identical CASE PREFIX DISK...: one check per disk
check_identical() {
    local c=$1 p=$2 d fmt
    shift 2
    for d in "$@"; do
        fmt=$(disk_format "$d")
        check "$c: $d ($fmt) identical" identical "$fmt" "$(disk_file "$p" src "$d")" \
            "$(disk_file "$p" dst "$d")"
    done
}

# expect_status CASE WHAT WANT LOG [TEXT]: WHAT exited WANT (RC) and LOG contains TEXT
expect_status() {
    local c=$1 what=$2 want=$3 log=$4 text=${5:-}
    if ((RC == want)) && { [[ -z $text ]] || grep -qF -- "$text" "$log"; }; then
        ok "$c: $what exits $want${text:+ and says so}"
    else
        not_ok "$c: $what exits $want${text:+ and says \"$text\"} (status $RC)" "$log"
    fi
}

rx_bytes() {        # rx_bytes: bytes the destination's veth has received
    ip netns exec "$DST_NS" cat "/sys/class/net/$VETH_DST/statistics/rx_bytes"
}

# start_endpoint NAME QEMU-PIDFILE SOCKET [ARGS...]: `tunnel-endpoint --listen` in the
# destination QEMU's network and mount namespaces; sets EP_PID and EP_PORT.
start_endpoint() {
    local name=$1 qpid i
    qpid=$(pid_of "$2") || bail "$name: the destination QEMU is gone"
    shift 2
    nsenter -t "$qpid" -n -m "$BLKMIG" tunnel-endpoint --nbd-socket "$@" \
        >"$DIR/$name.port" 2>"$DIR/$name.log" &
    EP_PID=$!
    BG_PIDS+=("$EP_PID")
    EP_PORT=
    for ((i = 0; i < 100; i++)); do
        EP_PORT=$(head -n 1 "$DIR/$name.port" 2>/dev/null)
        [[ $EP_PORT =~ ^[0-9]+$ ]] && return 0
        kill -0 "$EP_PID" 2>/dev/null || break
        sleep 0.05
    done
    EP_PORT=
}

# wait_exit PID SECONDS: waits for a background child; sets RC (124 if still running).
wait_exit() {
    local pid=$1 i
    for ((i = 0; i < $2 * 20; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
        RC=124
        return 1
    fi
    RC=0
    wait "$pid" || RC=$?
}

T0=$SECONDS

# ------------------ case 1: a live migration whose NBD traffic is TLS with authz
c=tls
make_images $c 2
start_pair $c 2
in_src begin --qmp "$DIR/$c-src.qmp" -o "$DIR/$c-src.cookie" >/dev/null 2>&1 ||
    bail "$c: begin failed"
run "$DIR/$c-prepare.log" in_dst prepare --qmp "$DIR/$c-dst.qmp" -c "$DIR/$c-src.cookie" \
    -o "$DIR/$c-dst.cookie" --listen "tcp:$DST_IP:0" --incoming "tcp:$DST_IP:4601" \
    --tls-creds "$DIR/dst" --tls-authz "$CLIENT_DN"
expect_status $c "prepare --tls-creds --tls-authz" 0 "$DIR/$c-prepare.log"
start=$SECONDS
run "$DIR/$c-perform.log" in_src perform --qmp "$DIR/$c-src.qmp" -c "$DIR/$c-dst.cookie" \
    -o "$DIR/$c-result.cookie" --tls-creds "$DIR/src" --tls-hostname "$DST_IP"
expect_status $c "perform --tls-creds ($((SECONDS - start)) s)" 0 "$DIR/$c-perform.log"
run "$DIR/$c-finish.log" in_dst finish --qmp "$DIR/$c-dst.qmp" -c "$DIR/$c-result.cookie"
expect_status $c "finish" 0 "$DIR/$c-finish.log"
check "$c: the destination VM is running" vm_running "$DIR/$c-dst.qmp"
check_identical $c $c vda vdb
check "$c: no block jobs left on the source" no_block_jobs "$DIR/$c-src.qmp"
check "$c: nothing left on the destination (exports, nodes, TLS objects)" \
    dest_clean "$DIR/$c-dst.qmp"
stop_pair $c

# --------- case 2: clients the TLS NBD server must refuse (copy mode, one pair)
c=refuse
make_images $c 2
start_pair $c 2
# refused_client WHAT NAME PERFORM-ARGS...  (a rolled-back perform withdraws its offer:
# one begin each)
refused_client() {
    local what=$1 t=$c-$2
    shift 2
    in_src begin --qmp "$DIR/$c-src.qmp" --mode copy -o "$DIR/$c-src.cookie" >/dev/null 2>&1 ||
        bail "$c: begin failed"
    run "$DIR/$t-prepare.log" in_dst prepare --qmp "$DIR/$c-dst.qmp" -c "$DIR/$c-src.cookie" \
        -o "$DIR/$t-dst.cookie" --listen "tcp:$DST_IP:0" --tls-creds "$DIR/dst" \
        --tls-authz "$CLIENT_DN"
    if ((RC != 0)); then
        not_ok "$c: $what: prepare exits 0 (status $RC)" "$DIR/$t-prepare.log"
    else
        run "$DIR/$t-perform.log" in_src perform --qmp "$DIR/$c-src.qmp" \
            -c "$DIR/$t-dst.cookie" -o "$DIR/$t-result.cookie" "$@"
        expect_status $c "$what: perform" 5 "$DIR/$t-perform.log" \
            "cannot connect to the destination export"
    fi
    check "$c: $what: the source runs, no jobs, nodes or credentials left" \
        source_intact "$DIR/$c-src.qmp"
    if in_src abort --qmp "$DIR/$c-src.qmp" -c "$DIR/$t-dst.cookie" >"$DIR/$t-abort.log" 2>&1 &&
        in_dst abort --qmp "$DIR/$c-dst.qmp" -c "$DIR/$t-dst.cookie" >>"$DIR/$t-abort.log" 2>&1 &&
        dest_clean "$DIR/$c-dst.qmp" >>"$DIR/$t-abort.log" 2>&1 &&
        source_intact "$DIR/$c-src.qmp" >>"$DIR/$t-abort.log" 2>&1; then
        ok "$c: $what: abort on both sides leaves no exports"
    else
        not_ok "$c: $what: abort on both sides leaves no exports" "$DIR/$t-abort.log"
    fi
}
refused_client "a client certificate from another CA" rogue --tls-creds "$DIR/rogue" \
    --tls-hostname "$DST_IP"
refused_client "a client without a certificate" nocert --tls-creds "$DIR/nocert" \
    --tls-hostname "$DST_IP"
refused_client "a client whose DN is not in --tls-authz" intruder --tls-creds "$DIR/intruder" \
    --tls-hostname "$DST_IP"
refused_client "a plaintext client" plain --insecure
stop_pair $c

# ------------ case 3: plaintext NBD to a non-loopback address needs --insecure
c=plain
make_images $c 2
start_pair $c 2
in_src begin --qmp "$DIR/$c-src.qmp" --mode copy -o "$DIR/$c-src.cookie" >/dev/null 2>&1 ||
    bail "$c: begin failed"
run "$DIR/$c-prepare-refused.log" in_dst prepare --qmp "$DIR/$c-dst.qmp" \
    -c "$DIR/$c-src.cookie" -o "$DIR/$c-dst.cookie" --listen "tcp:$DST_IP:0"
if ((RC == 2)) && [[ $(<"$DIR/$c-prepare-refused.log") == "blkmig prepare: "*"$PLAINTEXT_MSG" ]]
then
    ok "$c: prepare without --insecure exits 2 and says why"
else
    not_ok "$c: prepare without --insecure exits 2 and says \"$PLAINTEXT_MSG\" (status $RC)" \
        "$DIR/$c-prepare-refused.log"
fi
check "$c: the refused prepare started nothing (query-block-exports is [])" \
    dest_clean "$DIR/$c-dst.qmp"
run "$DIR/$c-prepare.log" in_dst prepare --qmp "$DIR/$c-dst.qmp" -c "$DIR/$c-src.cookie" \
    -o "$DIR/$c-dst.cookie" --listen "tcp:$DST_IP:0" --insecure
expect_status $c "prepare --insecure" 0 "$DIR/$c-prepare.log"
run "$DIR/$c-perform-refused.log" in_src perform --qmp "$DIR/$c-src.qmp" \
    -c "$DIR/$c-dst.cookie" -o "$DIR/$c-result.cookie"
expect_status $c "perform without --insecure" 2 "$DIR/$c-perform-refused.log" "$PLAINTEXT_MSG"
check "$c: the refused perform left the source as it was" source_intact "$DIR/$c-src.qmp"
run "$DIR/$c-perform.log" in_src perform --qmp "$DIR/$c-src.qmp" -c "$DIR/$c-dst.cookie" \
    -o "$DIR/$c-result.cookie" --insecure
expect_status $c "perform --insecure" 0 "$DIR/$c-perform.log"
run "$DIR/$c-finish.log" in_dst finish --qmp "$DIR/$c-dst.qmp" -c "$DIR/$c-result.cookie"
expect_status $c "finish" 0 "$DIR/$c-finish.log"
check_identical $c $c vda vdb
check "$c: the source VM still runs, no jobs left" source_intact "$DIR/$c-src.qmp"
check "$c: no exports left on the destination" dest_clean "$DIR/$c-dst.qmp"
stop_pair $c

# ------------------- case 4: three disks through ONE TCP tunnel stream with TLS
c=tcptun
make_images $c 3
start_pair $c 3 "$DIR/$c-private"
in_src begin --qmp "$DIR/$c-src.qmp" -o "$DIR/$c-src.cookie" >/dev/null 2>&1 ||
    bail "$c: begin failed"
run "$DIR/$c-prepare.log" in_dst_vm "$DIR/$c-dst.pid" prepare --qmp "$DIR/$c-dst.qmp" \
    -c "$DIR/$c-src.cookie" -o "$DIR/$c-dst.cookie" --listen "unix:$DIR/$c-private/nbd.sock" \
    --incoming "tcp:$DST_IP:4604" --insecure
expect_status $c "prepare --listen unix:PATH" 0 "$DIR/$c-prepare.log"
if [[ ! -e $DIR/$c-private/nbd.sock ]] &&
    ip netns exec "$SRC_NS" test ! -e "$DIR/$c-private/nbd.sock"; then
    ok "$c: the destination's NBD socket is out of the source's reach"
else
    not_ok "$c: the destination's NBD socket is out of the source's reach" \
        "$(ls -l "$DIR/$c-private")"
fi
start_endpoint $c-endpoint "$DIR/$c-dst.pid" "$DIR/$c-private/nbd.sock" \
    --listen "tcp:$DST_IP:0" --tls-creds "$DIR/dst"
if [[ -n $EP_PORT ]]; then
    ok "$c: tunnel-endpoint --listen tcp:$DST_IP:0 prints its port ($EP_PORT)"
else
    not_ok "$c: tunnel-endpoint --listen tcp:$DST_IP:0 prints its port" \
        "$DIR/$c-endpoint.port" "$DIR/$c-endpoint.log"
    EP_PORT=1
fi
rx_before=$(rx_bytes)
start=$SECONDS
run "$DIR/$c-perform.log" in_src perform --qmp "$DIR/$c-src.qmp" -c "$DIR/$c-dst.cookie" \
    -o "$DIR/$c-result.cookie" --tunnel "tcp:$DST_IP:$EP_PORT" --tls-creds "$DIR/src" --insecure \
    --tunnel-compress none  # the patterns would shrink: the check below counts the bytes
expect_status $c "perform --tunnel tcp:... --tls-creds ($((SECONDS - start)) s)" 0 \
    "$DIR/$c-perform.log"
rx_after=$(rx_bytes)
# 44 MiB of disk data must have crossed the veth (the memory stream is small)
if ((rx_after - rx_before >= 44 * 1024 * 1024)); then
    ok "$c: the data crossed the veth ($(((rx_after - rx_before) / 1048576)) MiB received)"
else
    not_ok "$c: the data crossed the veth" "only $((rx_after - rx_before)) bytes received"
fi
wait_exit "$EP_PID" 10
expect_status $c "tunnel-endpoint, once the stream ended," 0 "$DIR/$c-endpoint.log"
run "$DIR/$c-finish.log" in_dst_vm "$DIR/$c-dst.pid" finish --qmp "$DIR/$c-dst.qmp" \
    -c "$DIR/$c-result.cookie"
expect_status $c "finish" 0 "$DIR/$c-finish.log"
check "$c: the destination VM is running" vm_running "$DIR/$c-dst.qmp"
check_identical $c $c "${DISKS3[@]}"
check "$c: no block jobs left on the source" no_block_jobs "$DIR/$c-src.qmp"
check "$c: nothing left on the destination" dest_clean "$DIR/$c-dst.qmp"
stop_pair $c

# ------------------------------- case 5: three disks through a command's stdio
c=cmdtun
make_images $c 3
start_pair $c 3 "$DIR/$c-private"
in_src begin --qmp "$DIR/$c-src.qmp" -o "$DIR/$c-src.cookie" >/dev/null 2>&1 ||
    bail "$c: begin failed"
run "$DIR/$c-prepare.log" in_dst_vm "$DIR/$c-dst.pid" prepare --qmp "$DIR/$c-dst.qmp" \
    -c "$DIR/$c-src.cookie" -o "$DIR/$c-dst.cookie" --listen "unix:$DIR/$c-private/nbd.sock" \
    --incoming "tcp:$DST_IP:4605" --insecure
expect_status $c "prepare --listen unix:PATH" 0 "$DIR/$c-prepare.log"
check "$c: the destination's NBD socket is out of the source's reach" \
    ip netns exec "$SRC_NS" test ! -e "$DIR/$c-private/nbd.sock"
qpid=$(pid_of "$DIR/$c-dst.pid") || bail "$c: the destination QEMU is gone"
rx_before=$(rx_bytes)
start=$SECONDS
run "$DIR/$c-perform.log" in_src perform --qmp "$DIR/$c-src.qmp" -c "$DIR/$c-dst.cookie" \
    -o "$DIR/$c-result.cookie" --migrate-uri "tcp:$DST_IP:4605" --insecure \
    --tunnel-command "nsenter -t $qpid -n -m $BLKMIG tunnel-endpoint --nbd-socket {nbd-socket}"
expect_status $c "perform --tunnel-command ($((SECONDS - start)) s)" 0 "$DIR/$c-perform.log"
rx_after=$(rx_bytes)
# the disks went through the command's pipes: only the memory stream used the veth
if ((rx_after - rx_before < 16 * 1024 * 1024)); then
    ok "$c: the disk data did not cross the veth ($(((rx_after - rx_before) / 1024)) KiB received)"
else
    not_ok "$c: the disk data did not cross the veth" "$((rx_after - rx_before)) bytes received"
fi
run "$DIR/$c-finish.log" in_dst_vm "$DIR/$c-dst.pid" finish --qmp "$DIR/$c-dst.qmp" \
    -c "$DIR/$c-result.cookie"
expect_status $c "finish" 0 "$DIR/$c-finish.log"
check "$c: the destination VM is running" vm_running "$DIR/$c-dst.qmp"
check_identical $c $c "${DISKS3[@]}"
check "$c: no block jobs left on the source" no_block_jobs "$DIR/$c-src.qmp"
check "$c: nothing left on the destination" dest_clean "$DIR/$c-dst.qmp"
check "$c: no tunnel-endpoint left running" \
    sh -c "! pgrep -f '[t]unnel-endpoint --nbd-socket $DIR/$c-private/'"
stop_pair $c

# ---------------------------- case 6: the tunnel breaks while the disks copy
c=broken
make_images $c 3
start_pair $c 3 "$DIR/$c-private"
in_src begin --qmp "$DIR/$c-src.qmp" -o "$DIR/$c-src.cookie" >/dev/null 2>&1 ||
    bail "$c: begin failed"
run "$DIR/$c-prepare.log" in_dst_vm "$DIR/$c-dst.pid" prepare --qmp "$DIR/$c-dst.qmp" \
    -c "$DIR/$c-src.cookie" -o "$DIR/$c-dst.cookie" --listen "unix:$DIR/$c-private/nbd.sock" \
    --incoming "tcp:$DST_IP:4606" --insecure
expect_status $c "prepare --listen unix:PATH" 0 "$DIR/$c-prepare.log"
start_endpoint $c-endpoint "$DIR/$c-dst.pid" "$DIR/$c-private/nbd.sock" \
    --listen "tcp:$DST_IP:0" --tls-creds "$DIR/dst"
[[ -n $EP_PORT ]] || bail "$c: tunnel-endpoint printed no port: $(cat "$DIR/$c-endpoint.log")"
# 1 MiB/s per mirror: vda's 24 MiB take about 24 s
in_src perform --qmp "$DIR/$c-src.qmp" -c "$DIR/$c-dst.cookie" -o "$DIR/$c-result.cookie" \
    --tunnel "tcp:$DST_IP:$EP_PORT" --tls-creds "$DIR/src" --insecure --speed 1048576 \
    >"$DIR/$c-perform.log" 2>&1 &
perform=$!
BG_PIDS+=("$perform")
mirroring=no
for ((i = 0; i < 200; i++)); do
    # vdc, the last disk: every mirror runs through the tunnel (on a loaded host the
    # last NBD connection can take more than the second below)
    if grep -q 'blkmig: vdc: .*copying' "$DIR/$c-perform.log"; then
        mirroring=yes
        break
    fi
    sleep 0.05
done
start=$SECONDS
kill -KILL "$EP_PID" 2>/dev/null
wait "$EP_PID" 2>/dev/null
wait_exit "$perform" 30
took=$((SECONDS - start))
if [[ $mirroring == yes ]] && ((RC == 6 && took <= 5)) &&
    grep -qF 'the tunnel to the destination broke' "$DIR/$c-perform.log"; then
    ok "$c: perform exits 6 ($took s after the endpoint died) and says the tunnel broke"
else
    not_ok "$c: perform exits 6 within 5 s and says the tunnel broke" \
        "mirroring: $mirroring, status $RC after $took s" "$DIR/$c-perform.log"
fi
check "$c: the source VM still runs, no jobs, nodes or credentials left" \
    source_intact "$DIR/$c-src.qmp"
run "$DIR/$c-abort.log" in_dst_vm "$DIR/$c-dst.pid" abort --qmp "$DIR/$c-dst.qmp" \
    -c "$DIR/$c-dst.cookie"
expect_status $c "abort on the destination" 0 "$DIR/$c-abort.log"
check "$c: no exports left on the destination" dest_clean "$DIR/$c-dst.qmp"
stop_pair $c

# ------ case 7: the link between the hosts goes down while the disks copy (plain
# TCP, --insecure): back within --nbd-reconnect-delay, the copy just goes on; down
# for good, the stall watchdog ends it cleanly instead of hanging.
link() { ip -n "$SRC_NS" link set "$VETH_SRC" "$1"; }
# link_case NAME DOWN-SECONDS EXTRA-PERFORM-ARGS...: prepare, perform (background),
# cut the link once vda copies; sets RC and TOOK.
link_case() {
    local c=$1 down=$2 perform i
    shift 2
    make_images $c 2
    start_pair $c 2
    in_src begin --qmp "$DIR/$c-src.qmp" --mode copy -o "$DIR/$c-src.cookie" >/dev/null 2>&1 ||
        bail "$c: begin failed"
    run "$DIR/$c-prepare.log" in_dst prepare --qmp "$DIR/$c-dst.qmp" -c "$DIR/$c-src.cookie" \
        -o "$DIR/$c-dst.cookie" --listen "tcp:$DST_IP:0" --insecure
    [[ $RC == 0 ]] || bail "$c: prepare failed: $(cat "$DIR/$c-prepare.log")"
    in_src perform --qmp "$DIR/$c-src.qmp" -c "$DIR/$c-dst.cookie" -o "$DIR/$c-result.cookie" \
        --insecure --speed 4194304 "$@" >"$DIR/$c-perform.log" 2>&1 &
    perform=$!
    BG_PIDS+=("$perform")
    # both disks' mirrors run (their NBD connections are up) when the link goes down
    for ((i = 0; i < 200; i++)); do
        grep -q 'blkmig: vda: .*copying' "$DIR/$c-perform.log" &&
            grep -q 'blkmig: vdb: .*copying' "$DIR/$c-perform.log" && break
        sleep 0.05
    done
    link down
    START=$SECONDS
    if [[ $down == forever ]]; then
        wait_exit "$perform" 60
    else
        sleep "$down"
        link up
        wait_exit "$perform" 60
    fi
    TOOK=$((SECONDS - START))
    link up
}
c=blip
link_case $c 2 --nbd-reconnect-delay 15
if ((RC == 0)); then ok "$c: a 2 s link outage: perform still succeeds ($TOOK s)"
else not_ok "$c: a 2 s link outage: perform still succeeds" "status $RC" "$DIR/$c-perform.log"; fi
run "$DIR/$c-finish.log" in_dst finish --qmp "$DIR/$c-dst.qmp" -c "$DIR/$c-result.cookie"
if ((RC == 0)) && identical qcow2 "$DIR/$c-src-vda.qcow2" "$DIR/$c-dst-vda.qcow2" >/dev/null &&
    identical raw "$DIR/$c-src-vdb.raw" "$DIR/$c-dst-vdb.raw" >/dev/null; then
    ok "$c: finish, and both disks are identical"
else not_ok "$c: finish, and both disks are identical" "$DIR/$c-finish.log"; fi
stop_pair $c
c=cut
link_case $c forever --nbd-reconnect-delay 2 --stall-timeout 3
if ((RC == 6 || RC == 5)) && ((TOOK <= 40)) && grep -q 'blkmig perform: ' "$DIR/$c-perform.log"; then
    ok "$c: the link stays down: perform gives up after $TOOK s (exit $RC)"
else not_ok "$c: the link stays down: perform gives up within 40 s" "status $RC after $TOOK s" \
    "$DIR/$c-perform.log"; fi
run "$DIR/$c-abort.log" in_dst abort --qmp "$DIR/$c-dst.qmp" -c "$DIR/$c-dst.cookie"
if ((RC == 0)) && source_intact "$DIR/$c-src.qmp" >>"$DIR/$c-abort.log" 2>&1 &&
    dest_clean "$DIR/$c-dst.qmp" >>"$DIR/$c-abort.log" 2>&1; then
    ok "$c: the source runs untouched, abort leaves nothing on the destination"
else not_ok "$c: the source runs untouched, abort leaves nothing on the destination" \
    "$DIR/$c-abort.log" "$DIR/$c-perform.log"; fi
stop_pair $c

# ---- case 8: the tunnel's link (the delaying relay: 5 ms each way, 200 Mbit/s) has a
# 2 s outage while the disks copy: nothing is lost or closed, the copy just goes on.
c=outage
make_images $c 2
start_pair $c 2 "$DIR/$c-private"
in_src begin --qmp "$DIR/$c-src.qmp" --mode copy -o "$DIR/$c-src.cookie" >/dev/null 2>&1 ||
    bail "$c: begin failed"
run "$DIR/$c-prepare.log" in_dst_vm "$DIR/$c-dst.pid" prepare --qmp "$DIR/$c-dst.qmp" \
    -c "$DIR/$c-src.cookie" -o "$DIR/$c-dst.cookie" --listen "unix:$DIR/$c-private/nbd.sock" \
    --insecure
expect_status $c "prepare --listen unix:PATH" 0 "$DIR/$c-prepare.log"
start_endpoint $c-endpoint "$DIR/$c-dst.pid" "$DIR/$c-private/nbd.sock" \
    --listen "tcp:$DST_IP:0" --insecure
[[ -n $EP_PORT ]] || bail "$c: tunnel-endpoint printed no port: $(cat "$DIR/$c-endpoint.log")"
# the relay on the destination's side of the veth, in front of the endpoint
ip netns exec "$DST_NS" "$DELAY_RELAY" --listen "tcp:$DST_IP:0" --connect "tcp:$DST_IP:$EP_PORT" \
    --delay-ms 5 --rate 200000000 >"$DIR/$c-relay.port" 2>"$DIR/$c-relay.log" &
relay=$!
BG_PIDS+=("$relay")
for ((i = 0; i < 100; i++)); do
    relay_port=$(head -n 1 "$DIR/$c-relay.port" 2>/dev/null)
    [[ $relay_port =~ ^[0-9]+$ ]] && break
    sleep 0.05
done
[[ $relay_port =~ ^[0-9]+$ ]] || bail "$c: the relay printed no port: $(cat "$DIR/$c-relay.log")"
# 8 MiB/s per mirror: vda's 24 MiB take 3 s; uncompressed, so the data is all there
start=$SECONDS
in_src perform --qmp "$DIR/$c-src.qmp" -c "$DIR/$c-dst.cookie" -o "$DIR/$c-result.cookie" \
    --tunnel "tcp:$DST_IP:$relay_port" --tunnel-compress none --insecure --speed 8388608 \
    >"$DIR/$c-perform.log" 2>&1 &
perform=$!
BG_PIDS+=("$perform")
for ((i = 0; i < 200; i++)); do
    grep -q 'blkmig: vda: .*copying' "$DIR/$c-perform.log" &&
        grep -q 'blkmig: vdb: .*copying' "$DIR/$c-perform.log" && break
    sleep 0.05
done
kill -USR1 "$relay"
sleep 2
# mid-copy: perform still runs when the outage ends
mid=no
kill -0 "$perform" 2>/dev/null && mid=yes
kill -USR1 "$relay"
wait_exit "$perform" 40
if [[ $mid == yes ]] && ((RC == 0)); then
    ok "$c: a 2 s outage mid-copy: perform exits 0 ($((SECONDS - start)) s)"
else
    not_ok "$c: a 2 s outage mid-copy: perform exits 0" "running through the outage: $mid," \
        "status $RC" "$DIR/$c-perform.log" "$DIR/$c-relay.log"
fi
wait_exit "$EP_PID" 10
expect_status $c "tunnel-endpoint, once the stream ended," 0 "$DIR/$c-endpoint.log"
run "$DIR/$c-finish.log" in_dst_vm "$DIR/$c-dst.pid" finish --qmp "$DIR/$c-dst.qmp" \
    -c "$DIR/$c-result.cookie"
expect_status $c "finish" 0 "$DIR/$c-finish.log"
check_identical $c $c vda vdb
check "$c: the source VM still runs, no jobs, nodes or credentials left" \
    source_intact "$DIR/$c-src.qmp"
check "$c: nothing left on the destination" dest_clean "$DIR/$c-dst.qmp"
if grep -q 'outage begins' "$DIR/$c-relay.log" && grep -q 'outage ends' "$DIR/$c-relay.log"; then
    ok "$c: the relay had the outage"
else
    not_ok "$c: the relay had the outage" "$DIR/$c-relay.log"
fi
kill -TERM "$relay" 2>/dev/null
wait "$relay" 2>/dev/null
stop_pair $c

diag "all cases took $((SECONDS - T0)) s"
((N == PLAN)) || bail "ran $N checks, planned $PLAN"
((FAILED == 0)) || { diag "$FAILED of $PLAN checks failed"; exit 1; }
exit 0
