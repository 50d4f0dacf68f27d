#!/bin/bash
# Hostile-peer tests of tunnel-endpoint's door (issue 9, item 4): plaintext off
# loopback is refused, and with TLS an anonymous client, another CA's client or a
# certificate not in --tls-authz neither gets the stream nor uses up the endpoint.
#
# Prints TAP.  A real qemu-storage-daemon serves the NBD socket; a client "gets the
# stream" when the OPEN frame it sends comes back as a DATA frame carrying the NBD
# server's greeting (NBDMAGIC).  Only loopback and one network namespace of the
# test's own are used.  Exit 77 (skip) without root (the namespace case needs it).
# Usage: test-sec-tunnel.sh [BLKMIG]
# shellcheck disable=SC2317,SC2015,SC2059  # trap-called cleanup; A && B || bail; frames as printf formats
set -uo pipefail

HERE=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BLKMIG=${1:-${BLKMIG:-$ROOT/build/blkmig}}
MAKE_CERTS=$ROOT/tests/integration/make-certs.sh
CLIENT_DN="O=blkmig,CN=blkmig-client"
REFUSAL="refusing plaintext NBD over TCP to %s: give --tls-creds DIR, or --insecure if the network is trusted"
OPEN_FRAME='\000\000\000\001\001\000\000\000\000'   # channel 1, OPEN, no payload

. "$ROOT/tests/integration/lib-netns.sh"   # ok, not_ok, check, bail, skip_all

[[ $(id -u) == 0 ]] || skip_all "the network namespace case needs root"
for tool in qemu-storage-daemon qemu-img openssl ip systemd-socket-activate; do
    command -v "$tool" >/dev/null || bail "$tool not found"
done
[[ -x $BLKMIG ]] || bail "blkmig binary $BLKMIG not found"

DIR=$(mktemp -d "${TMPDIR:-/tmp}/blkmig-sec-tunnel.XXXXXX") || bail "mktemp failed"
NS=bst-$$
PIDS=()
cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM HUP
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    ip netns del "$NS" 2>/dev/null
    rm -rf "$DIR"
    exit "$rc"
}
trap cleanup EXIT INT TERM HUP

# ------------------------------------------------------------------ fixtures
"$MAKE_CERTS" "$DIR/ca" 127.0.0.1 >/dev/null || bail "make-certs failed"
"$MAKE_CERTS" "$DIR/other-ca" 127.0.0.1 >/dev/null || bail "make-certs failed"
# intruder: a client certificate from the right CA with a DN not in --tls-authz
mkdir -p "$DIR/intruder" && cp "$DIR/ca/ca-cert.pem" "$DIR/intruder/"
openssl req -newkey rsa:2048 -nodes -keyout "$DIR/intruder/client-key.pem" \
    -out "$DIR/intruder.csr" -subj "/O=blkmig/CN=intruder" 2>/dev/null &&
printf 'extendedKeyUsage=clientAuth\n' > "$DIR/intruder.ext" &&
openssl x509 -req -in "$DIR/intruder.csr" -CA "$DIR/ca/ca-cert.pem" -CAkey "$DIR/ca/ca-key.pem" \
    -CAcreateserial -out "$DIR/intruder/client-cert.pem" -days 2 -extfile "$DIR/intruder.ext" \
    2>/dev/null || bail "cannot issue the intruder's certificate"

qemu-img create -q -f raw "$DIR/disk.raw" 16M || bail "qemu-img failed"
NBD=$DIR/nbd.sock
qemu-storage-daemon --blockdev driver=file,filename="$DIR/disk.raw",node-name=disk \
    --nbd-server addr.type=unix,addr.path="$NBD" \
    --export type=nbd,id=e0,node-name=disk,name=disk,writable=on 2>"$DIR/qsd.log" &
PIDS+=($!)
for ((i = 0; i < 100; i++)); do [[ -S $NBD ]] && break; sleep 0.05; done
[[ -S $NBD ]] || bail "qemu-storage-daemon did not start: $(cat "$DIR/qsd.log")"

# start_endpoint NAME ARGS...: tunnel-endpoint --listen in the background; sets
# EP_PID and EP_PORT (empty when it printed none within 5 s).
start_endpoint() {
    local name=$1 i
    shift
    "$BLKMIG" tunnel-endpoint --nbd-socket "$NBD" "$@" >"$DIR/$name.port" 2>"$DIR/$name.err" &
    EP_PID=$!
    PIDS+=("$EP_PID")
    EP_PORT=
    for ((i = 0; i < 100; i++)); do
        EP_PORT=$(head -n1 "$DIR/$name.port")
        [[ -n $EP_PORT ]] && return 0
        kill -0 "$EP_PID" 2>/dev/null || return 0
        sleep 0.05
    done
}

# tls_client CERT-DIR PORT OUT: sends OPEN over TLS with CERT-DIR's client
# certificate and keeps what comes back in OUT; true if it holds the NBD greeting.
tls_client() {
    { printf "$OPEN_FRAME"; sleep 1; } |
        timeout 10 openssl s_client -quiet -no_ign_eof -connect "127.0.0.1:$2" \
            -CAfile "$1/ca-cert.pem" -cert "$1/client-cert.pem" -key "$1/client-key.pem" \
            >"$3" 2>"$3.err"
    grep -qa NBDMAGIC "$3"
}

# expect_exit NAME PID RC MESSAGE: PID ends within 5 s with RC and exactly MESSAGE on stderr.
expect_exit() {
    local name=$1 pid=$2 want=$3 msg=$4 rc i
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        not_ok "$name: exits $want" "still running after 5 s"
        return
    fi
    wait "$pid"
    rc=$?
    if [[ $rc == "$want" && $(cat "$DIR/$name.err") == "$msg" ]]; then
        ok "$name: exits $want saying: $msg"
    else
        not_ok "$name: exits $want saying: $msg" "exit $rc" "$DIR/$name.err"
    fi
}

# ------------------------------------------ 1. plaintext off loopback is refused
for host in 0.0.0.0 '[::]'; do
    start_endpoint "plain-$host" --listen "tcp:$host:0"
    # shellcheck disable=SC2059
    expect_exit "plain-$host" "$EP_PID" 2 \
        "blkmig tunnel-endpoint: $(printf "$REFUSAL" "${host//[\[\]]/}")"
    check "plain-$host: printed no port (never listened)" test -z "$EP_PORT"
done
start_endpoint authz-alone --listen tcp:127.0.0.1:0 --tls-authz "$CLIENT_DN"
expect_exit authz-alone "$EP_PID" 2 "blkmig tunnel-endpoint: --tls-authz needs --tls-creds"

# ------------------------- 2. --insecure off loopback: allowed, first client wins
ip netns add "$NS" && ip -n "$NS" link set lo up &&
ip -n "$NS" link add v0 type veth peer name v1 && ip -n "$NS" addr add 10.126.0.1/24 dev v0 &&
ip -n "$NS" link set v0 up && ip -n "$NS" link set v1 up || bail "cannot set up network namespace $NS"
ip netns exec "$NS" "$BLKMIG" tunnel-endpoint --nbd-socket "$NBD" \
    --listen tcp:10.126.0.1:0 --insecure >"$DIR/insecure.port" 2>"$DIR/insecure.err" &
EP_PID=$!
PIDS+=("$EP_PID")
for ((i = 0; i < 100; i++)); do [[ -s $DIR/insecure.port ]] && break; sleep 0.05; done
EP_PORT=$(head -n1 "$DIR/insecure.port")
# shellcheck disable=SC2016
ip netns exec "$NS" bash -c 'exec 3<>/dev/tcp/10.126.0.1/$1 || exit 1
    printf "$2" >&3; timeout 3 dd bs=1 count=27 <&3 >"$3" 2>/dev/null; exit 0' _ "$EP_PORT" "$OPEN_FRAME" \
    "$DIR/insecure.out" 2>/dev/null
check "insecure: --listen tcp:10.126.0.1:0 --insecure carries a plaintext client's stream" \
    grep -qa NBDMAGIC "$DIR/insecure.out"
# shellcheck disable=SC2016
check "insecure: the first client took it, a second one is refused" \
    ip netns exec "$NS" bash -c '! { exec 3<>/dev/tcp/10.126.0.1/$1; } 2>/dev/null' _ "$EP_PORT"
expect_exit insecure "$EP_PID" 0 ""
# the same rule when stdin is the TCP connection (inetd, systemd Accept=yes)
ip netns exec "$NS" systemd-socket-activate -l 10.126.0.1:7000 --accept --inetd \
    "$BLKMIG" tunnel-endpoint --nbd-socket "$NBD" 2>"$DIR/inetd-plain.err" &
PIDS+=($!)
sleep 0.3
# shellcheck disable=SC2016
ip netns exec "$NS" bash -c 'exec 3<>/dev/tcp/10.126.0.1/7000 || exit 1
    printf "$1" >&3; timeout 3 dd bs=1 count=27 <&3 >"$2" 2>/dev/null; exit 0' _ "$OPEN_FRAME" \
    "$DIR/inetd-plain.out" 2>/dev/null
if grep -qa NBDMAGIC "$DIR/inetd-plain.out"; then
    not_ok "stdio: a plaintext TCP stdin on 10.126.0.1 gets no stream"
else ok "stdio: a plaintext TCP stdin on 10.126.0.1 gets no stream"; fi
# shellcheck disable=SC2059
check "stdio: and its endpoint refuses it as --listen would" grep -qxF \
    "blkmig tunnel-endpoint: $(printf "$REFUSAL" 10.126.0.1)" "$DIR/inetd-plain.err"

# --------- 3. TLS with --tls-authz: the wrong clients come first and are turned away
start_endpoint tls --listen tcp:127.0.0.1:0 --tls-creds "$DIR/ca" \
    --tls-authz "O=blkmig,CN=someone-else" --tls-authz "$CLIENT_DN"
[[ -n $EP_PORT ]] || bail "tls: the endpoint printed no port: $(cat "$DIR/tls.err")"
exec 5<>"/dev/tcp/127.0.0.1/$EP_PORT" || bail "tls: cannot connect"   # idle, says nothing
{ exec 6<>"/dev/tcp/127.0.0.1/$EP_PORT"; printf 'GET / HTTP/1.0\r\n\r\n' >&6; exec 6>&-; } ||
    bail "tls: cannot connect"
if tls_client "$DIR/other-ca" "$EP_PORT" "$DIR/other.out"; then
    not_ok "tls: a client certificate from another CA gets no stream"
else ok "tls: a client certificate from another CA gets no stream"; fi
if tls_client "$DIR/intruder" "$EP_PORT" "$DIR/intruder.out"; then
    not_ok "tls: a certificate of our CA whose DN is not in --tls-authz gets no stream"
else ok "tls: a certificate of our CA whose DN is not in --tls-authz gets no stream"; fi
check "tls: the endpoint still waits after four clients were turned away" kill -0 "$EP_PID"
start=$SECONDS
if tls_client "$DIR/ca" "$EP_PORT" "$DIR/good.out"; then
    ok "tls: then the listed client gets the stream ($((SECONDS - start)) s; the idle one still connected)"
else not_ok "tls: then the listed client gets the stream" "$DIR/good.out.err" "$DIR/tls.err"; fi
exec 5>&-
expect_exit tls "$EP_PID" 0 ""

# ------------- 4. over stdin/stdout (systemd Accept=yes): authz, one client per process
PORT=$((20000 + ($$ + 7) % 20000))
systemd-socket-activate -l "127.0.0.1:$PORT" --accept --inetd "$BLKMIG" tunnel-endpoint \
    --nbd-socket "$NBD" --tls-creds "$DIR/ca" --tls-authz "$CLIENT_DN" 2>"$DIR/inetd.err" &
PIDS+=($!)
sleep 0.3
if tls_client "$DIR/intruder" "$PORT" "$DIR/inetd-intruder.out"; then
    not_ok "stdio: the intruder's certificate gets no stream"
else ok "stdio: the intruder's certificate gets no stream"; fi
sleep 0.5
check "stdio: its endpoint says why, on one line" grep -qxF \
    "blkmig tunnel-endpoint: tunnel: client certificate O=blkmig,CN=intruder is not in --tls-authz" \
    "$DIR/inetd.err"
check "stdio: the listed client gets the stream" tls_client "$DIR/ca" "$PORT" "$DIR/inetd-good.out"

echo "1..$N"
[[ $FAILED == 0 ]]
