#!/bin/bash
# bench/p12-replicate.sh: P12 blkmig replicate: guest pause per checkpoint, guest write throughput while replicating, resync after an outage.
#
# Issue 14.  A VM with two qcow2 disks (P12_DISK_MIB each, default 256, cache=none)
# and a qemu-storage-daemon standby on this host.  The writer (bench/qmp-writer.py)
# writes 64 KiB at a time, sequentially, alternating the two disks, through each
# disk's own BlockBackend (HMP qemu-io over its own QMP connection), one write in
# flight; the QMP round trip is in every write's time, with and without replication.
#   P12a  pause per checkpoint: `replicate start --interval P12_INTERVAL` (default
#         0.25 s) while the writer runs P12_SECONDS (default 10): median and p99 of
#         the checkpoint events' paused-ms (targets <= 20 ms, <= 50 ms)
#   P12b  writer throughput while replicating with checkpoints every P12_INTERVAL_B s
#         (default 2; a second replication after the first is stopped) / the same
#         writer before replication started (target >= 0.7); latency medians and
#         p99 are printed, and P12a's throughput ratio too (checkpoints 4 times a
#         second cost the writer their pauses)
#   P12c  resync after a P12_OUTAGE s outage (default 10): the standby is SIGKILLed
#         (blkmig exits 8), the writer runs on for the outage, a fresh standby
#         starts and `replicate resync` runs; bytes copied / bytes the writer wrote
#         since the last acknowledged checkpoint (target <= 1.2), and the resync's
#         time to the `resync` event.
# BENCH_RUNS repeats P12a/P12b (medians of the runs); P12c runs once.
source "$(dirname "$0")/lib.sh"

DISK_MIB=${P12_DISK_MIB:-256}
INTERVAL=${P12_INTERVAL:-0.25}
INTERVAL_B=${P12_INTERVAL_B:-2}
SECONDS_W=${P12_SECONDS:-10}
OUTAGE=${P12_OUTAGE:-10}
WRITER=$BENCH_ROOT/bench/qmp-writer.py
command -v python3 >/dev/null || bdie "python3 is needed for the writer"
export BLKMIG_STATE_DIR=$W/state
mkdir -m 700 "$W/state" "$W/rep"

for d in vda vdb; do mk_dense "$W/$d.qcow2" qcow2 "$DISK_MIB"; done

standby_start() {
    rm -f "$W/stb.qmp"
    qemu-storage-daemon --chardev "socket,id=m,path=$W/stb.qmp,server=on,wait=off" \
        --monitor chardev=m --daemonize --pidfile "$W/stb.pid"
}
vm_up() {
    mapfile -t args < <(disk_args vda "$W/vda.qcow2"; disk_args vdb "$W/vdb.qcow2")
    vm_start src "${args[@]}"
    wait_idle src
}
# events_wait FILE EVENT N: until FILE has N lines of EVENT (max 120 s)
events_wait() {
    local i
    for i in $(seq 1200); do
        (($(cat "$1" 2>/dev/null | grep -c "\"event\":\"$2\"" || true) >= $3)) && return 0
        sleep 0.1
    done
    bdie "no $3 '$2' events in $1"
}
# replicate SUB ARGS... &: $! is blkmig's own PID (exec), for the signals
replicate() {
    exec "$BLKMIG" replicate "$@" --primary "$W/src.qmp" --standby "$W/stb.qmp" \
        --interval "${INTERVAL_NOW:-$INTERVAL}" --events "$W/ev.json" -q
}
# replicate_writer SECONDS OFFSET_MIB: replicate both disks (from scratch) while the
# writer runs; prints the writer's JSON line, leaves the events in $W/ev.json.
replicate_writer() {
    local rpid out n0
    rm -f "$W/rep/"* "$W/ev.json" "$W/state/"*
    replicate start --replica "vda=$W/rep/vda.qcow2" --replica "vdb=$W/rep/vdb.qcow2" &
    rpid=$!; bg_pid replicate "$rpid"
    events_wait "$W/ev.json" checkpoint 1
    out=$(python3 "$WRITER" "$W/src-ctl.qmp" "$1" 65536 vda,vdb "$2")
    kill -TERM "$rpid"; wait "$rpid" || { tail -5 "$W/ev.json" >&2; bdie "replicate stop failed"; }
    echo "$out"
}
pauses=() ratios=() ratios_a=() lat0=() lat1=()
for run in $(seq "$BENCH_RUNS"); do
    rm -f "$W/rep/"* "$W/ev.json" "$W/state/"*
    standby_start
    vm_up
    base=$(python3 "$WRITER" "$W/src-ctl.qmp" "$SECONDS_W" 65536 vda,vdb)
    repl_a=$(replicate_writer "$SECONDS_W" 64)
    n1=$(grep -c '"event":"checkpoint"' "$W/ev.json")
    mapfile -t ms < <(grep '"event":"checkpoint"' "$W/ev.json" | tail -n +2 | head -n $((n1 - 2)) |
        jq '."paused-ms"')  # not the first (before the writer) nor the last (at stop)
    pauses+=("${ms[@]}")
    repl=$(INTERVAL_NOW=$INTERVAL_B replicate_writer "$SECONDS_W" 128)
    r=$(fdiv "$(jq .mbps <<<"$repl")" "$(jq .mbps <<<"$base")")
    ra=$(fdiv "$(jq .mbps <<<"$repl_a")" "$(jq .mbps <<<"$base")")
    ratios+=("$r"); ratios_a+=("$ra")
    lat0+=("$(jq .lat_median_ms <<<"$base")"); lat1+=("$(jq .lat_median_ms <<<"$repl")")
    blog "run $run: without $(jq -c '{mbps,lat_median_ms,lat_p99_ms}' <<<"$base")," \
        "every ${INTERVAL_B} s $(jq -c '{mbps,lat_median_ms,lat_p99_ms}' <<<"$repl") ratio $r," \
        "every ${INTERVAL} s $(jq -c '{mbps,lat_median_ms,lat_p99_ms}' <<<"$repl_a") ratio $ra," \
        "${#ms[@]} pauses"
    vm_stop src; kill "$(cat "$W/stb.pid")"; sleep 0.3
done
p50=$(printf '%s\n' "${pauses[@]}" | sort -g | awk '{ v[NR] = $1 } END { printf "%.2f", v[int((NR + 1) / 2)] }')
p99=$(printf '%s\n' "${pauses[@]}" | sort -g | awk '{ v[NR] = $1 } END { i = int(NR * 0.99); if (i < 1) i = 1; printf "%.2f", v[i] }')
blog "pauses: ${#pauses[@]} checkpoints, median $p50 ms, p99 $p99 ms"
result P12a "pause per checkpoint, median (2 disks, writer)" "$p50 ms" "-" "$p50" "<= 20 ms" "$(met "$p50" le 20)"
result P12a "pause per checkpoint, p99" "$p99 ms" "-" "$p99" "<= 50 ms" "$(met "$p99" le 50)"
r=$(median "${ratios[@]}")
result P12b "64 KiB writes while replicating (checkpoint every ${INTERVAL_B} s) / without; latency $(median "${lat1[@]}") vs $(median "${lat0[@]}") ms; every ${INTERVAL} s: $(median "${ratios_a[@]}")" \
    "-" "-" "$r" ">= 0.7" "$(met "$r" ge 0.7)"

# P12c: outage and resync
rm -f "$W/rep/"* "$W/ev.json" "$W/state/"*
standby_start
vm_up
replicate start --replica "vda=$W/rep/vda.qcow2" --replica "vdb=$W/rep/vdb.qcow2" &
rpid=$!; bg_pid replicate "$rpid"
events_wait "$W/ev.json" checkpoint 2
kill -9 "$(cat "$W/stb.pid")"
rc=0; wait "$rpid" || rc=$?
((rc == 8)) || bdie "replicate exited $rc after the standby died, not 8"
id=$(jq -r 'select(.event == "replicate") | .id' "$W/ev.json")
ack=$(jq 'select(.event == "checkpoint") | ."paused-at-us"' "$W/ev.json" | tail -1)
out=$(python3 "$WRITER" "$W/src-ctl.qmp" "$OUTAGE" 65536 vda,vdb 128)
written=$(jq .bytes <<<"$out")
standby_start
rm -f "$W/ev.json"
t0=$(now)
replicate resync --id "$id" &
rpid=$!; bg_pid replicate "$rpid"
events_wait "$W/ev.json" resync 1
t1=$(now)
events_wait "$W/ev.json" checkpoint 1
copied=$(jq 'select(.event == "resync") | .bytes' "$W/ev.json")
kill -TERM "$rpid"; wait "$rpid" || bdie "replicate stop after resync failed"
vm_stop src
for d in vda vdb; do
    qemu-img compare -q "$W/$d.qcow2" "$W/rep/$d.qcow2" || bdie "$d: replica differs after stop"
done
r=$(fdiv "$copied" "$written")
blog "outage ${OUTAGE} s: writer wrote $written bytes after checkpoint (paused at $ack us);" \
    "resync copied $copied bytes in $(fsub "$t1" "$t0") s"
result P12c "resync bytes / bytes written since the last checkpoint (${OUTAGE} s outage, $(fsub "$t1" "$t0") s)" \
    "$copied" "$written" "$r" "<= 1.2" "$(met "$r" le 1.2)"
