#!/bin/bash
# bench/tunnel.sh: --tunnel throughput as a ratio to direct NBD (quiet and with a busy core), its peak memory, and compression on a slow link.
#
# T1 (quiet) and T3 (one core running a nice-0 busy loop): paired runs (BENCH_RUNS,
# default 5; --quick = 1) copy a dense TUNNEL_MIB (default 1024) raw disk (migrate
# phases, copy mode, cache=none) once directly into the destination's NBD UNIX
# socket and once through `--tunnel-command 'blkmig tunnel-endpoint ...'`; the
# median of direct_time / tunnel_time (goals: T1 >= 0.9, T3 >= 0.8).  T2: the peak
# memory (VmHWM, from the tunnel's debug trace at exit) of perform and of
# tunnel-endpoint, the larger over all those runs, quiet and busy (goal <= 32 MiB
# each).  T1-dd: the tunnelled copy vs dd O_DIRECT of the same bytes.
#
# T4: a 100 Mbit/s link (the delaying relay, tests/tools/delay-relay.c: 1 ms each
# way) between perform's --tunnel and `tunnel-endpoint --listen`; T4_MIB (default
# 256) raw disks: an ext4 image of installed files (mkfs.ext4 -d with programs,
# Python modules and documentation from the host: typical guest content) copied with
# --tunnel-compress auto, effective throughput (the disk bytes that crossed / time)
# as a multiple of the link (goal >= 2); and random data (AES-CTR keystream) with
# auto vs none (goal >= 0.95: auto no slower).
source "$(dirname "$0")/lib.sh"

MIB=${TUNNEL_MIB:-1024}
T4_MIB=${T4_MIB:-256}
T4_RATE=100000000
DELAY_RELAY=${DELAY_RELAY:-$(dirname "$BLKMIG")/tests/delay-relay}
[[ -x $DELAY_RELAY ]] || bdie "$DELAY_RELAY not built"

# start_pair SRC-IMAGE SIZE-MIB: the source VM on SRC-IMAGE, the destination (-S)
# on a new empty raw image; begin + prepare (NBD on $W/nbd.sock): cookie $W/c2.
start_pair() {
    rm -f "$W/dst.raw" "$W/c1" "$W/c2" "$W/c3" "$W/nbd.sock"
    qemu-img create -q -f raw "$W/dst.raw" "${2}M"
    mapfile -t a < <(disk_args vda "$1" raw)
    vm_start src "${a[@]}"
    mapfile -t d < <(node_args vda "$W/dst.raw" raw)
    vm_start dst -S "${d[@]}"
    wait_idle src
    "$BLKMIG" begin --qmp "$W/src.qmp" --mode copy -o "$W/c1"
    "$BLKMIG" prepare --qmp "$W/dst.qmp" --listen "unix:$W/nbd.sock" -c "$W/c1" -o "$W/c2"
    drop_caches
}
stop_pair() {
    "$BLKMIG" finish --qmp "$W/dst.qmp" -c "$W/c3"
    vm_stop dst
    vm_stop src
}

# copy_once [TUNNEL-ARGS...]: one timed perform of $W/src.raw; prints seconds.
# The tunnel's trace (peak memory) is left in $W/last.err.
copy_once() {
    start_pair "$W/src.raw" "$MIB"
    BLKMIG_DEBUG=tunnel timed "$BLKMIG" perform -q --local-destination --qmp "$W/src.qmp" \
        -c "$W/c2" -o "$W/c3" "$@"
    stop_pair
}

# peak ROLE: the peak memory (MiB) the last tunnelled run's listener (perform) or
# connector (tunnel-endpoint) reported.
peak() {
    sed -n "s/.*tunnel: $1 process peak memory \([0-9]*\) KiB.*/\1/p" "$W/last.err" |
        awk '{ printf "%.2f", $1 / 1024 }'
}

# pairs LABEL: BENCH_RUNS paired runs; sets direct_t tunnel_t ratios dd_t dd_r
# peaks_p peaks_e.
pairs() {
    local run t x
    direct_t=() tunnel_t=() ratios=() dd_t=() dd_r=() peaks_p=() peaks_e=()
    for ((run = 1; run <= BENCH_RUNS; run++)); do
        direct_t+=("$(copy_once)") || bdie "direct copy failed"
        t=$(copy_once --tunnel-command "$BLKMIG tunnel-endpoint --nbd-socket {nbd-socket}") ||
            bdie "tunnelled copy failed"
        tunnel_t+=("$t")
        peaks_p+=("$(peak listener)") peaks_e+=("$(peak connector)")
        ratios+=("$(fdiv "${direct_t[-1]}" "$t")")
        x=$(dd_limit $((MIB * MiB)) "$W/src.raw") || bdie "dd failed"
        dd_t+=("$x") dd_r+=("$(fdiv "$t" "$x")")
        blog "$1 run $run: direct ${direct_t[-1]} s, tunnel $t s, ratio ${ratios[-1]}," \
            "peak perform ${peaks_p[-1]} MiB, endpoint ${peaks_e[-1]} MiB, dd $x s"
    done
}
fmax() { printf '%s\n' "$@" | sort -g | tail -n 1; }

mk_dense "$W/src.raw" raw "$MIB"

if [[ -z ${T4_ONLY:-} ]]; then
pairs quiet
d=$(median "${direct_t[@]}") t=$(median "${tunnel_t[@]}") r=$(median "${ratios[@]}")
x=$(median "${dd_t[@]}") rx=$(median "${dd_r[@]}")
mp=$(fmax "${peaks_p[@]}") me=$(fmax "${peaks_e[@]}")
result T1 "tunnel vs direct NBD, ${MIB} MiB dense copy, quiet host (throughput ratio)" \
    "$t s ($(fdiv "$MIB" "$t") MiB/s)" "$d s direct ($(fdiv "$MIB" "$d") MiB/s)" "$r" ">= 0.9" \
    "$(met "$r" ge 0.9)"
dd_result T1-dd "tunnel, ${MIB} MiB dense copy" "$t" "$x" "$rx" $((MIB * MiB))

bash -c 'while :; do :; done' &
busy=$!
pairs busy
kill "$busy"
d=$(median "${direct_t[@]}") t=$(median "${tunnel_t[@]}") r=$(median "${ratios[@]}")
result T3 "tunnel vs direct NBD, ${MIB} MiB, one core running a busy loop (throughput ratio)" \
    "$t s ($(fdiv "$MIB" "$t") MiB/s)" "$d s direct ($(fdiv "$MIB" "$d") MiB/s)" "$r" ">= 0.8" \
    "$(met "$r" ge 0.8)"
mp=$(fmax "$mp" "${peaks_p[@]}") me=$(fmax "$me" "${peaks_e[@]}")
m=$(fmax "$mp" "$me")
result T2 "tunnel peak memory, quiet and busy (VmHWM: perform / tunnel-endpoint)" \
    "$mp / $me MiB" "32 MiB" "$(fdiv "$m" 32)" "<= 1 (each <= 32 MiB)" "$(met "$m" le 32)"
fi

# ---- T4: compression on a 100 Mbit/s link ---------------------------------

# t4_copy IMAGE MODE: one perform through endpoint --listen and the relay; prints
# "SECONDS DATA-BYTES WIRE-BYTES" (from the tunnel event).
t4_copy() {
    local ep relay port rport t
    start_pair "$1" "$T4_MIB"
    "$BLKMIG" tunnel-endpoint --listen tcp:127.0.0.1:0 --nbd-socket "$W/nbd.sock" \
        --tunnel-compress "$2" >"$W/ep.port" 2>"$W/ep.err" &
    ep=$!
    for _ in $(seq 100); do [[ -s $W/ep.port ]] && break; sleep 0.05; done
    port=$(head -n 1 "$W/ep.port")
    "$DELAY_RELAY" --listen tcp:127.0.0.1:0 --connect "tcp:127.0.0.1:$port" --delay-ms 1 \
        --rate "$T4_RATE" >"$W/relay.port" 2>"$W/relay.err" &
    relay=$!
    for _ in $(seq 100); do [[ -s $W/relay.port ]] && break; sleep 0.05; done
    rport=$(head -n 1 "$W/relay.port")
    rm -f "$W/ev"
    t=$(BLKMIG_DEBUG=tunnel timed "$BLKMIG" perform -q --local-destination --qmp "$W/src.qmp" -c "$W/c2" \
        -o "$W/c3" --tunnel "tcp:127.0.0.1:$rport" --tunnel-compress "$2" --events "$W/ev") ||
        { kill "$ep" "$relay" 2>/dev/null; return 1; }
    wait "$ep" || true
    kill "$relay" 2>/dev/null; wait "$relay" 2>/dev/null || true
    grep -h "chunks compressed" "$W/last.err" >&2 || true
    stop_pair
    echo "$t $(jq -r 'select(.event == "tunnel") | "\(."data-bytes") \(."wire-bytes")"' "$W/ev")"
}

# mk_installed IMAGE: an ext4 image (T4_MIB) holding installed files, a fifth of
# it each of programs (/usr/bin), Python modules and documentation, as found on the
# host (by sorted path: the same files on the same host).
mk_installed() {
    local root=$W/root budget=$((T4_MIB * MiB / 5)) dir
    mkdir -p "$root"
    for dir in /usr/bin /usr/lib/python3 /usr/share/doc; do
        find "$dir" -type f -printf '%s %p\n' | sort -k 2 |
            awk -v b="$budget" '{ if ((u += $1 + 4096) > b) exit; print substr($0, index($0, " ") + 2) }' ||
            true  # awk stops early: sort's SIGPIPE is expected
    done >"$W/files"
    # relative names (usr/bin/...): extracted below $root, never over the host's files
    tar -cf - -C / -T "$W/files" 2>/dev/null | tar -xf - -C "$root" 2>/dev/null
    rm -f "$1"
    mkfs.ext4 -q -F -b 4096 -d "$root" "$1" "${T4_MIB}M" || bdie "mkfs.ext4 -d failed"
    rm -rf "$root"
}
mk_installed "$W/installed.raw"
openssl enc -aes-128-ctr -K 00112233445566778899aabbccddeeff -iv 0 -nosalt </dev/zero 2>/dev/null |
    head -c $((T4_MIB * MiB)) >"$W/random.raw" || true  # openssl's SIGPIPE
(($(stat -c %s "$W/random.raw") == T4_MIB * MiB)) || bdie "cannot make the random image"

LINK_MIBS=$(awk -v r="$T4_RATE" 'BEGIN { printf "%.3f", r / 8 / 1048576 }')
eff=() wire=() rnd=()
for ((run = 1; run <= BENCH_RUNS; run++)); do
    read -r t data w < <(t4_copy "$W/installed.raw" "${T4_MODE:-auto}") || bdie "T4 copy failed"
    eff+=("$(awk -v d="$data" -v t="$t" -v l="$LINK_MIBS" 'BEGIN { printf "%.3f", d / 1048576 / t / l }')")
    wire+=("$(fdiv "$w" "$data")")
    read -r ta _ _ < <(t4_copy "$W/random.raw" auto) || bdie "T4 copy failed"
    read -r tn _ _ < <(t4_copy "$W/random.raw" none) || bdie "T4 copy failed"
    rnd+=("$(fdiv "$tn" "$ta")")
    blog "T4 run $run: installed files $(awk -v d="$data" 'BEGIN { printf "%.0f", d / 1048576 }') MiB" \
        "in $t s (${eff[-1]}x the link, wire/data ${wire[-1]}); random: auto $ta s, none $tn s"
done
e=$(median "${eff[@]}") wr=$(median "${wire[@]}") rr=$(median "${rnd[@]}")
result T4 "compression auto, ${T4_MIB} MiB ext4 of installed files, 100 Mbit/s link (effective / link)" \
    "${e}x the link (wire/data $wr)" "$LINK_MIBS MiB/s link" "$e" ">= 2" "$(met "$e" ge 2)"
result T4-random "compression auto vs none on random data, 100 Mbit/s (time none / time auto)" \
    "auto" "none" "$rr" ">= 0.95" "$(met "$rr" ge 0.95)"
