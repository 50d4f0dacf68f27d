#!/bin/bash
# bench/p4-wan.sh: P4 copy throughput over an emulated WAN (veth between two netns, netem 10 ms each way, 1 Gbit/s).
#
# The source QEMU runs in one network namespace, the destination in another; the
# NBD export listens on TCP at the destination's veth address and blkmig drives
# both over their UNIX QMP sockets (begin/prepare/perform/finish, copy mode).
# Reports blkmig's throughput as a share of the link (target >= 0.9); nbdcopy
# between qemu-nbd exports over the same link is measured for context.
source "$(dirname "$0")/lib.sh"
read -r -a EXTRA <<<"${BLKMIG_ARGS:-}"
MIB=${P4_MIB:-1024}
DELAY=${P4_DELAY:-10ms} RATE=${P4_RATE:-1gbit}
LINK_MIBS=$(awk 'BEGIN { printf "%.1f", 1e9 / 8 / 1048576 }')   # 1 Gbit/s in MiB/s

NA=blkmig-bench-a-$$ NB=blkmig-bench-b-$$
ip netns add "$NA"; BENCH_NETNS+=("$NA")
ip netns add "$NB"; BENCH_NETNS+=("$NB")
ip link add bbva$$ netns "$NA" type veth peer name bbvb$$ netns "$NB"
ip -n "$NA" addr add 10.254.77.1/24 dev bbva$$
ip -n "$NB" addr add 10.254.77.2/24 dev bbvb$$
SHAPE="netem ${DELAY} each way, ${RATE}"
for ns in "$NA" "$NB"; do
    ip -n "$ns" link set lo up
    dev=$([[ $ns == "$NA" ]] && echo bbva$$ || echo bbvb$$)
    ip -n "$ns" link set "$dev" up
    # limit: enough packets for the bandwidth-delay product (1 Gbit/s x 10 ms)
    if ! ip netns exec "$ns" tc qdisc add dev "$dev" root netem delay "$DELAY" rate "$RATE" limit 100000 2>"$W/tc.err"; then
        # Kernels without CONFIG_NET_SCH_NETEM (this one: "Specified qdisc kind is
        # unknown") can still shape the rate with tbf, but cannot add delay.
        blog "netem unavailable ($(head -n 1 "$W/tc.err")): rate only via tbf, NO ${DELAY} delay"
        ip netns exec "$ns" tc qdisc add dev "$dev" root tbf rate "$RATE" burst 512kb latency 20ms \
            || bdie "neither netem nor tbf works"
        SHAPE="tbf ${RATE}, no delay: kernel lacks netem"
    fi
done

# Newer blkmig refuses plaintext NBD over TCP unless told the network is trusted
# (prepare and perform); the bench's veth link is private.
INSECURE=()
"$BLKMIG" prepare --help 2>&1 | grep -q -- '--insecure' && INSECURE=(--insecure)

mk_dense "$W/src.raw" raw "$MIB"
mapfile -t a < <(disk_args vda "$W/src.raw" raw)

ours=() ref=() shares=()
for ((run = 1; run <= BENCH_RUNS; run++)); do
    rm -f "$W/dst.raw"
    qemu-img create -q -f raw "$W/dst.raw" "${MIB}M"
    mapfile -t d < <(node_args vda "$W/dst.raw" raw)
    VM_NETNS=$NA vm_start src "${a[@]}"
    VM_NETNS=$NB vm_start dst -S "${d[@]}"
    wait_idle src
    # Each phase runs on its "host": begin/perform in the source namespace,
    # prepare/finish in the destination's (prepare binds the listen address).
    ip netns exec "$NA" "$BLKMIG" begin -q --qmp "$W/src.qmp" --mode copy -o "$W/c1"
    ip netns exec "$NB" "$BLKMIG" prepare -q --qmp "$W/dst.qmp" --listen tcp:10.254.77.2:0 "${INSECURE[@]}" -c "$W/c1" -o "$W/c2"
    drop_caches
    t=$(timed ip netns exec "$NA" "$BLKMIG" perform -q --qmp "$W/src.qmp" "${INSECURE[@]}" -c "$W/c2" -o "$W/c3" "${EXTRA[@]}") \
        || bdie "perform failed"
    ip netns exec "$NB" "$BLKMIG" finish -q --qmp "$W/dst.qmp" -c "$W/c3"
    vm_stop dst
    vm_stop src
    mibs=$(awk -v m="$MIB" -v t="$t" 'BEGIN { printf "%.1f", m / t }')
    ours+=("$mibs") shares+=("$(fdiv "$mibs" "$LINK_MIBS")")

    # nbdcopy over the same link: qemu-nbd on each side, nbdcopy in the source namespace.
    rm -f "$W/dst.raw"
    qemu-img create -q -f raw "$W/dst.raw" "${MIB}M"
    ip netns exec "$NA" qemu-nbd -t -f raw --cache=none -k "$W/a.sock" "$W/src.raw" & bg_pid nbda $!
    ip netns exec "$NB" qemu-nbd -t -f raw --cache=none -b 10.254.77.2 -p 10809 "$W/dst.raw" & bg_pid nbdb $!
    for i in $(seq 50); do
        [[ -S $W/a.sock ]] && ip netns exec "$NB" ss -ltn | grep -q 10.254.77.2:10809 && break
        sleep 0.1
    done
    drop_caches
    t=$(timed ip netns exec "$NA" nbdcopy "nbd+unix:///?socket=$W/a.sock" nbd://10.254.77.2:10809) || bdie "nbdcopy failed"
    kill "$(cat "$W/nbda.pid")" "$(cat "$W/nbdb.pid")" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -f "$W/nbda.pid" "$W/nbdb.pid" "$W/a.sock"
    ref+=("$(awk -v m="$MIB" -v t="$t" 'BEGIN { printf "%.1f", m / t }')")
    blog "run $run: blkmig ${ours[-1]} MiB/s (${shares[-1]} of link), nbdcopy ${ref[-1]} MiB/s"
done
o=$(median "${ours[@]}") n=$(median "${ref[@]}") s=$(median "${shares[@]}")
result P4 "WAN copy ${MIB} MiB (${SHAPE}): share of link" "$o MiB/s" "link $LINK_MIBS MiB/s; nbdcopy $n MiB/s" "$s" ">= 0.9" "$(met "$s" ge 0.9)"
