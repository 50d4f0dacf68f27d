#!/bin/bash
# bench/tunnel.sh: --tunnel throughput as a ratio to direct NBD on the same disk, and the tunnel's peak memory.
#
# Paired runs (BENCH_RUNS, default 5; --quick = 1): a dense TUNNEL_MIB (default 1024)
# raw disk is copied (migrate phases, copy mode, cache=none) once directly into the
# destination's NBD UNIX socket and once through `--tunnel-command 'blkmig
# tunnel-endpoint ...'` (one stream, per-connection flow control).  Reports the median
# of direct_time / tunnel_time (goal >= 0.85) and the largest VmHWM of the two blkmig
# processes that carry the tunnel (perform and tunnel-endpoint).  T1-dd: the
# tunnelled copy vs dd iflag=direct oflag=direct of the same bytes (lib.sh dd_limit,
# the physical limit; target <= 1.05).
source "$(dirname "$0")/lib.sh"

MIB=${TUNNEL_MIB:-1024}
mk_dense "$W/src.raw" raw "$MIB"

# descendants PID: every process below PID (children, theirs, ...).
descendants() {
    local c
    for c in $(pgrep -P "$1"); do
        echo "$c"
        descendants "$c"
    done
}
# peak_hwm PATTERN: the largest VmHWM (KiB) of this script's own processes whose
# command line matches PATTERN, sampled until the marker file disappears.  Not
# `pgrep -f`: that counts every blkmig on the host (it once reported 1549 MiB from
# an unrelated process, issue 15).
peak_hwm() {
    local peak=0 pid h
    while [[ -e $W/sampling ]]; do
        for pid in $(descendants $$); do
            tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qE "$1" || continue
            h=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status" 2>/dev/null) || continue
            ((h > peak)) && peak=$h
        done
        sleep 0.05
    done
    echo "$peak"
}

# copy_once [TUNNEL-ARGS...]: one timed perform; prints seconds.
copy_once() {
    rm -f "$W/dst.raw" "$W/c1" "$W/c2" "$W/c3" "$W/nbd.sock"
    qemu-img create -q -f raw "$W/dst.raw" "${MIB}M"
    mapfile -t a < <(disk_args vda "$W/src.raw" raw)
    vm_start src "${a[@]}"
    mapfile -t d < <(node_args vda "$W/dst.raw" raw)
    vm_start dst -S "${d[@]}"
    wait_idle src
    "$BLKMIG" begin --qmp "$W/src.qmp" --mode copy -o "$W/c1"
    "$BLKMIG" prepare --qmp "$W/dst.qmp" --listen "unix:$W/nbd.sock" -c "$W/c1" -o "$W/c2"
    drop_caches
    timed "$BLKMIG" perform -q --local-destination --qmp "$W/src.qmp" -c "$W/c2" -o "$W/c3" "$@"
    "$BLKMIG" finish --qmp "$W/dst.qmp" -c "$W/c3"
    vm_stop dst
    vm_stop src
}

direct_t=() tunnel_t=() ratios=() peaks=() dd_t=() dd_r=()
for ((run = 1; run <= BENCH_RUNS; run++)); do
    direct_t+=("$(copy_once)") || bdie "direct copy failed"
    touch "$W/sampling"
    peak_hwm "(^| )(perform|tunnel-endpoint)( |$)" >"$W/peak" &
    sampler=$!
    t=$(copy_once --tunnel-command "$BLKMIG tunnel-endpoint --nbd-socket {nbd-socket}") ||
        bdie "tunnelled copy failed"
    rm -f "$W/sampling"
    wait "$sampler"
    tunnel_t+=("$t")
    peaks+=("$(awk -v k="$(cat "$W/peak")" 'BEGIN { printf "%.2f", k / 1024 }')")
    ratios+=("$(fdiv "${direct_t[-1]}" "$t")")
    x=$(dd_limit $((MIB * MiB)) "$W/src.raw") || bdie "dd failed"
    dd_t+=("$x") dd_r+=("$(fdiv "$t" "$x")")
    blog "run $run: direct ${direct_t[-1]} s, tunnel $t s, ratio ${ratios[-1]}, peak ${peaks[-1]} MiB, dd $x s"
done

d=$(median "${direct_t[@]}")
t=$(median "${tunnel_t[@]}")
r=$(median "${ratios[@]}")
p=$(median "${peaks[@]}")
x=$(median "${dd_t[@]}") rx=$(median "${dd_r[@]}")
result T1 "tunnel vs direct NBD, ${MIB} MiB dense copy (throughput ratio)" \
    "$t s ($(fdiv "$MIB" "$t") MiB/s)" "$d s direct ($(fdiv "$MIB" "$d") MiB/s)" "$r" ">= 0.85" \
    "$(met "$r" ge 0.85)"
result T2 "tunnel peak memory (VmHWM of perform / tunnel-endpoint)" "$p MiB" "(context)" "-" \
    "(context)" "-"
dd_result T1-dd "tunnel, ${MIB} MiB dense copy" "$t" "$x" "$rx" $((MIB * MiB))
