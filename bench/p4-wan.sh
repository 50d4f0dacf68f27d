#!/bin/bash
# bench/p4-wan.sh: P4 copy throughput over an emulated WAN (veth between two netns, 10 ms each way, 1 Gbit/s).
#
# The source QEMU runs in one network namespace, the destination in another; the
# NBD export listens on TCP at the destination's veth address and blkmig drives
# both over their UNIX QMP sockets (begin/prepare/perform/finish, copy mode).
# Reports blkmig's throughput as a share of the link (target >= 0.9), with direct
# NBD (P4) and through `--tunnel` to a `tunnel-endpoint --listen` (P4-tunnel);
# nbdcopy between qemu-nbd exports over the same link is measured for context.
#
# The link is netem on both veth ends.  A kernel without netem gets the delaying
# relay instead (tests/tools/delay-relay.c, $DELAY_RELAY, default next to $BLKMIG
# in tests/): it runs in the destination's namespace on a second address of its
# veth, 10.254.77.3, with P4_DELAY each way and P4_RATE, and forwards to the real
# listener on 10.254.77.2; every connection goes through it (the source's crosses
# the veth to reach it).  Direct NBD has no option naming another address than the
# cookie's, so the bench writes the relay's into the destination's cookie.
# Environment: P4_MIB (default 1024), P4_DELAY (10ms), P4_RATE (1gbit), BLKMIG_ARGS
# (extra perform arguments), DELAY_RELAY.
source "$(dirname "$0")/lib.sh"
read -r -a EXTRA <<<"${BLKMIG_ARGS:-}"
MIB=${P4_MIB:-1024}
DELAY=${P4_DELAY:-10ms} RATE=${P4_RATE:-1gbit}
DELAY_RELAY=${DELAY_RELAY:-$(dirname "$BLKMIG")/tests/delay-relay}
DST_IP=10.254.77.2 RELAY_IP=10.254.77.3

# to_ms DELAY: tc's 10ms / 1s / 500us in whole milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        m = (u ~ /^(s|sec|secs)$/) ? 1000 : (u ~ /^(us|usec|usecs)$/) ? 0.001 : 1
        printf "%d", n * m + 0.5 }'
}
# to_bps RATE: tc's 1gbit / 100mbit / 125mbps (bytes) in bits per second.
to_bps() {
    awk -v v="$1" 'BEGIN { n = v + 0; u = tolower(v); sub(/^[0-9.]+/, "", u)
        m = (u ~ /bps$/) ? 8 : 1; sub(/(bit|bps)$/, "", u)
        m *= (u == "k") ? 1e3 : (u == "m") ? 1e6 : (u == "g") ? 1e9 : (u == "t") ? 1e12 : 1
        printf "%.0f", n * m }'
}
DELAY_MS=$(to_ms "$DELAY") RATE_BPS=$(to_bps "$RATE")
LINK_MIBS=$(awk -v b="$RATE_BPS" 'BEGIN { printf "%.1f", b / 8 / 1048576 }')   # in MiB/s

NA=blkmig-bench-a-$$ NB=blkmig-bench-b-$$
ip netns add "$NA"; BENCH_NETNS+=("$NA")
ip netns add "$NB"; BENCH_NETNS+=("$NB")
ip link add bbva$$ netns "$NA" type veth peer name bbvb$$ netns "$NB"
ip -n "$NA" addr add 10.254.77.1/24 dev bbva$$
ip -n "$NB" addr add $DST_IP/24 dev bbvb$$
SHAPE="netem ${DELAY} each way, ${RATE}"
RELAY=no
for ns in "$NA" "$NB"; do
    ip -n "$ns" link set lo up
    dev=$([[ $ns == "$NA" ]] && echo bbva$$ || echo bbvb$$)
    ip -n "$ns" link set "$dev" up
    [[ $RELAY == yes ]] && continue
    # limit: enough packets for the bandwidth-delay product (1 Gbit/s x 10 ms)
    if ! ip netns exec "$ns" tc qdisc add dev "$dev" root netem delay "$DELAY" rate "$RATE" limit 100000 2>"$W/tc.err"; then
        # Kernels without CONFIG_NET_SCH_NETEM (this one: "Specified qdisc kind is
        # unknown"): the relay delays and shapes instead, the veth stays plain.
        blog "netem unavailable ($(head -n 1 "$W/tc.err")): the link is $DELAY_RELAY"
        [[ -x $DELAY_RELAY ]] || bdie "no netem and no relay: $DELAY_RELAY not built"
        ip netns exec "$NA" tc qdisc del dev bbva$$ root 2>/dev/null || true
        ip -n "$NB" addr add $RELAY_IP/24 dev bbvb$$
        RELAY=yes
        SHAPE="delay-relay ${DELAY_MS} ms each way, ${RATE_BPS} bit/s: kernel lacks netem"
    fi
done

# read_port NAME: the port helper NAME (bg_pid) printed first on $W/NAME.port; sets PORT.
read_port() {
    local i
    PORT=
    for ((i = 0; i < 100; i++)); do
        PORT=$(head -n 1 "$W/$1.port" 2>/dev/null)
        [[ $PORT =~ ^[0-9]+$ ]] && return 0
        kill -0 "$(cat "$W/$1.pid")" 2>/dev/null || break
        sleep 0.05
    done
    bdie "$1 printed no port: $(cat "$W/$1.log")"
}
# relay_to NAME PORT: sets ADDR to where the source reaches DST_IP:PORT: with
# RELAY=yes a relay NAME started for it, else DST_IP:PORT itself.
relay_to() {
    ADDR=$DST_IP:$2
    [[ $RELAY == yes ]] || return 0
    ip netns exec "$NB" "$DELAY_RELAY" --listen "tcp:$RELAY_IP:0" --connect "tcp:$DST_IP:$2" \
        --delay-ms "$DELAY_MS" --rate "$RATE_BPS" >"$W/$1.port" 2>"$W/$1.log" &
    bg_pid "$1" $!
    read_port "$1"
    ADDR=$RELAY_IP:$PORT
}
# stop NAME: ends the helper NAME (bg_pid), if it runs.
stop() {
    local pid
    [[ -e $W/$1.pid ]] || return 0
    pid=$(cat "$W/$1.pid")
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -f "$W/$1.pid"
}
# via_relay COOKIE: with RELAY=yes, points the destination cookie's NBD address at a
# relay (relay-nbd) to it.
via_relay() {
    [[ $RELAY == yes ]] || return 0
    relay_to relay-nbd "$(jq -r .destination.nbd.port "$1")"
    jq --arg h "${ADDR%:*}" --argjson p "${ADDR##*:}" \
        '.destination.nbd.host = $h | .destination.nbd.port = $p' "$1" >"$1.relayed"
    mv "$1.relayed" "$1"
}

# Newer blkmig refuses plaintext NBD over TCP unless told the network is trusted
# (prepare and perform); the bench's veth link is private.
INSECURE=()
"$BLKMIG" prepare --help 2>&1 | grep -q -- '--insecure' && INSECURE=(--insecure)

mk_dense "$W/src.raw" raw "$MIB"
mapfile -t a < <(disk_args vda "$W/src.raw" raw)

# vms_start: the source QEMU and a destination QEMU on a new, empty image.
vms_start() {
    rm -f "$W/dst.raw"
    qemu-img create -q -f raw "$W/dst.raw" "${MIB}M"
    mapfile -t d < <(node_args vda "$W/dst.raw" raw)
    VM_NETNS=$NA vm_start src "${a[@]}"
    VM_NETNS=$NB vm_start dst -S "${d[@]}"
    wait_idle src
    # Each phase runs on its "host": begin/perform in the source namespace,
    # prepare/finish in the destination's (prepare binds the listen address).
    ip netns exec "$NA" "$BLKMIG" begin -q --qmp "$W/src.qmp" --mode copy -o "$W/c1"
}
# vms_finish: finish on the destination, both QEMUs stopped.
vms_finish() {
    ip netns exec "$NB" "$BLKMIG" finish -q --qmp "$W/dst.qmp" -c "$W/c3"
    vm_stop dst
    vm_stop src
}
mibs() { awk -v m="$MIB" -v t="$1" 'BEGIN { printf "%.1f", m / t }'; }

# copy_direct: QEMU's NBD client to the export on DST_IP; sets T (seconds).
copy_direct() {
    vms_start
    ip netns exec "$NB" "$BLKMIG" prepare -q --qmp "$W/dst.qmp" --listen "tcp:$DST_IP:0" "${INSECURE[@]}" -c "$W/c1" -o "$W/c2"
    via_relay "$W/c2"
    drop_caches
    T=$(timed ip netns exec "$NA" "$BLKMIG" perform -q --qmp "$W/src.qmp" "${INSECURE[@]}" -c "$W/c2" -o "$W/c3" "${EXTRA[@]}") \
        || bdie "perform failed"
    vms_finish
    stop relay-nbd
}

# copy_tunnel: the same through --tunnel to a tunnel-endpoint --listen on DST_IP in
# front of the export's UNIX socket; sets T.  Uncompressed: the 0x5a image would
# shrink to nothing and the row would measure zstd, not the link.
copy_tunnel() {
    vms_start
    ip netns exec "$NB" "$BLKMIG" prepare -q --qmp "$W/dst.qmp" --listen "unix:$W/nbd.sock" "${INSECURE[@]}" -c "$W/c1" -o "$W/c2"
    ip netns exec "$NB" "$BLKMIG" tunnel-endpoint -q --listen "tcp:$DST_IP:0" --nbd-socket "$W/nbd.sock" \
        --insecure --tunnel-compress none >"$W/endpoint.port" 2>"$W/endpoint.log" &
    bg_pid endpoint $!
    read_port endpoint
    relay_to relay-tunnel "$PORT"
    drop_caches
    T=$(timed ip netns exec "$NA" "$BLKMIG" perform -q --qmp "$W/src.qmp" --insecure -c "$W/c2" -o "$W/c3" \
        --tunnel "tcp:$ADDR" --tunnel-compress none "${EXTRA[@]}") || bdie "tunnelled perform failed"
    vms_finish
    stop endpoint   # it ends by itself with the stream
    stop relay-tunnel
}

# copy_nbdcopy: nbdcopy between qemu-nbd on each side, from the source namespace; sets T.
copy_nbdcopy() {
    rm -f "$W/dst.raw"
    qemu-img create -q -f raw "$W/dst.raw" "${MIB}M"
    ip netns exec "$NA" qemu-nbd -t -f raw --cache=none -k "$W/a.sock" "$W/src.raw" & bg_pid nbda $!
    ip netns exec "$NB" qemu-nbd -t -f raw --cache=none -b "$DST_IP" -p 10809 "$W/dst.raw" & bg_pid nbdb $!
    for i in $(seq 50); do
        [[ -S $W/a.sock ]] && ip netns exec "$NB" ss -ltn | grep -q "$DST_IP:10809" && break
        sleep 0.1
    done
    relay_to relay-nbdcopy 10809
    drop_caches
    T=$(timed ip netns exec "$NA" nbdcopy "nbd+unix:///?socket=$W/a.sock" "nbd://$ADDR") || bdie "nbdcopy failed"
    stop nbda
    stop nbdb
    stop relay-nbdcopy
    rm -f "$W/a.sock"
}

ours=() tun=() ref=() shares=() tshares=()
for ((run = 1; run <= BENCH_RUNS; run++)); do
    copy_direct
    ours+=("$(mibs "$T")")
    shares+=("$(fdiv "${ours[-1]}" "$LINK_MIBS")")
    copy_tunnel
    tun+=("$(mibs "$T")")
    tshares+=("$(fdiv "${tun[-1]}" "$LINK_MIBS")")
    copy_nbdcopy
    ref+=("$(mibs "$T")")
    blog "run $run: blkmig ${ours[-1]} MiB/s (${shares[-1]} of link), through --tunnel" \
        "${tun[-1]} MiB/s (${tshares[-1]}), nbdcopy ${ref[-1]} MiB/s"
done
o=$(median "${ours[@]}") n=$(median "${ref[@]}") s=$(median "${shares[@]}")
ot=$(median "${tun[@]}") st=$(median "${tshares[@]}")
result P4 "WAN copy ${MIB} MiB (${SHAPE}): share of link" "$o MiB/s" "link $LINK_MIBS MiB/s; nbdcopy $n MiB/s" "$s" ">= 0.9" "$(met "$s" ge 0.9)"
result P4-tunnel "WAN copy ${MIB} MiB through --tunnel (${SHAPE}): share of link" "$ot MiB/s" "link $LINK_MIBS MiB/s; direct NBD $o MiB/s" "$st" ">= 0.9" "$(met "$st" ge 0.9)"
