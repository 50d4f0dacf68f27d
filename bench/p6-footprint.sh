#!/bin/bash
# bench/p6-footprint.sh: P6 blkmig's own peak RSS and CPU share while it copies a dense 2 GiB disk.
#
# Samples /proc/PID/status VmHWM and /proc/PID/stat utime+stime of the blkmig
# process every 20 ms during `migrate --mode copy`; CPU share = CPU time / wall
# time (of one CPU).  The reference column is the target (10 MiB, 2 %).
source "$(dirname "$0")/lib.sh"
read -r -a EXTRA <<<"${BLKMIG_ARGS:-}"
MIB=${P6_MIB:-2048}
mk_dense "$W/src.raw" raw "$MIB"
HZ=$(getconf CLK_TCK)

rss=() cpu=() anons=()
for ((run = 1; run <= BENCH_RUNS; run++)); do
    rm -f "$W/dst.raw"
    qemu-img create -q -f raw "$W/dst.raw" "${MIB}M"
    mapfile -t a < <(disk_args vda "$W/src.raw" raw)
    mapfile -t d < <(node_args vda "$W/dst.raw" raw)
    vm_start src "${a[@]}"
    vm_start dst -S "${d[@]}"
    wait_idle src
    drop_caches
    t0=$(now)
    "$BLKMIG" migrate -q --mode copy --source "$W/src.qmp" --dest "$W/dst.qmp" "${EXTRA[@]}" &
    pid=$!
    hwm=0 ticks=0 anon=0
    while kill -0 "$pid" 2>/dev/null; do
        h=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status" 2>/dev/null) || true
        an=$(awk '/^RssAnon:/ { print $2 }' "/proc/$pid/status" 2>/dev/null) || true
        [[ -n $an ]] && ((an > anon)) && anon=$an
        k=$(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null) || true
        [[ -n $h ]] && ((h > hwm)) && hwm=$h
        [[ -n $k ]] && ((k > ticks)) && ticks=$k
        sleep 0.02
    done
    wait "$pid" || bdie "blkmig copy failed"
    t1=$(now)
    wall=$(fsub "$t1" "$t0")
    vm_stop dst
    vm_stop src
    rss+=("$(awk -v k="$hwm" 'BEGIN { printf "%.2f", k / 1024 }')")
    anons+=("$(awk -v k="$anon" 'BEGIN { printf "%.2f", k / 1024 }')")
    cpu+=("$(awk -v t="$ticks" -v hz="$HZ" -v w="$wall" 'BEGIN { printf "%.2f", 100 * t / hz / w }')")
    blog "run $run: VmHWM ${rss[-1]} MiB (peak RssAnon ${anons[-1]} MiB), CPU ${cpu[-1]} % over ${wall} s"
done
r=$(median "${rss[@]}") c=$(median "${cpu[@]}") an=$(median "${anons[@]}")
rr=$(fdiv "$r" 10) cr=$(fdiv "$c" 2)
result P6a "blkmig peak RSS (VmHWM) during a ${MIB} MiB copy" "$r MiB (anon $an)" "10 MiB (target)" "$rr" "<= 1.0" "$(met "$rr" le 1.0)"
result P6b "blkmig CPU share (utime+stime / wall) during the copy" "$c %" "2 % (target)" "$cr" "<= 1.0" "$(met "$cr" le 1.0)"
