#!/bin/bash
# bench/p5-converge.sh: P5 convergence of a copy while a writer dirties the source faster than the (--speed-limited) link.
#
# The mirror is limited with --speed (P5_SPEED, default 32 MiB/s) to stand for a
# slow link; a writer loops (over the first half of the disk) `qemu-io -d /machine/peripheral/vda/virtio-backend
# "write ..."` (through the guest device, which the mirror sees) faster than that.
# Per run: the idle copy (reference), the busy copy with --copy-mode background
# and with --copy-mode auto, the default (both first run only; given up after
# P5_CAP x the idle time), and with --copy-mode write-blocking.
# Reports write-blocking time / idle time (target <= 3), whether background
# converged, and what auto did (P5c: switched and converged, or failed on a QEMU
# without block-job-change).  Also probes the QMP schema for block-job-change (not in QEMU 7.2).
source "$(dirname "$0")/lib.sh"
read -r -a EXTRA <<<"${BLKMIG_ARGS:-}"
MIB=${P5_MIB:-256}
SPEED=${P5_SPEED:-$((64 * MiB))}
HOT=${P5_HOT_MIB:-$((MIB / 2))}   # the writer rewrites the first HOT MiB
CAP=${P5_CAP:-3}
CHUNK=4   # MiB per write

mk_dense "$W/src.raw" raw "$MIB"
mapfile -t a < <(disk_args vda "$W/src.raw" raw)

start_pair() {
    rm -f "$W/dst.raw"
    qemu-img create -q -f raw "$W/dst.raw" "${MIB}M"
    mapfile -t d < <(node_args vda "$W/dst.raw" raw)
    vm_start src "${a[@]}"
    vm_start dst -S "${d[@]}"
    wait_idle src
}
stop_pair() { vm_stop dst; vm_stop src; }

# writer: rewrite CHUNK MiB at a moving offset through the guest device, forever;
# counts the bytes written in $W/writer.count.
writer() {
    local off=0 n=0 pat
    while :; do
        pat=$(( (n % 200) + 1 ))
        "$BLKMIG" qmp --qmp "$W/src-ctl.qmp" human-monitor-command \
            "{\"command-line\": \"qemu-io -d /machine/peripheral/vda/virtio-backend \\\"write -P $pat ${off}M ${CHUNK}M\\\"\"}" \
            >/dev/null 2>&1 || true
        n=$((n + 1))
        off=$(( (off + 37 * CHUNK) % (HOT - CHUNK) ))
        echo "$n" >"$W/writer.count"
    done
}

# busy_copy MODE TIMEOUT: copy while the writer runs; prints seconds or "timeout".
busy_copy() {
    local mode=$1 cap=$2 t w0 w1 wpid rc=0 t0 t1
    start_pair
    echo 0 >"$W/writer.count"
    writer & wpid=$!
    bg_pid writer "$wpid"
    sleep 1
    t0=$(now)
    local window=()
    rm -f "$W/busy.events"
    [[ $mode == auto ]] && window=(--converge-window "${P5_WINDOW:-5}" --events "$W/busy.events")
    timeout --signal=INT "$cap" "$BLKMIG" migrate -q --mode copy --source "$W/src.qmp" --dest "$W/dst.qmp" \
        --speed "$SPEED" --copy-mode "$mode" "${window[@]}" "${EXTRA[@]}" >"$W/busy.out" 2>"$W/busy.err" || rc=$?
    grep -qs '"event":"copy-mode"' "$W/busy.events" && echo yes >"$W/switched"
    t1=$(now)
    kill "$wpid" 2>/dev/null; wait "$wpid" 2>/dev/null || true
    rm -f "$W/writer.pid"
    local writes; writes=$(cat "$W/writer.count")
    awk -v n="$writes" -v c="$CHUNK" -v t="$(fsub "$t1" "$t0")" 'BEGIN { printf "%.0f\n", n * c / (t + 1) }' \
        >"$W/writer.rate"
    stop_pair
    if ((rc == 124 || rc == 130 || rc == 5)) && ! grep -q completed "$W/busy.out"; then
        echo timeout
    elif ((rc != 0)); then
        blog "busy copy ($mode) failed ($rc): $(tail -n 2 "$W/busy.err")"
        echo failed
    else
        fsub "$t1" "$t0"
    fi
}

# block-job-change (QEMU 8.2+) would let a running mirror switch to write-blocking.
start_pair
if qmp src query-qmp-schema | jq -e '.[] | select(.name == "block-job-change")' >/dev/null; then
    BJC="block-job-change: present"
else
    BJC="block-job-change: absent in $(qmp src query-version | jq -r '"QEMU \(.qemu.major).\(.qemu.minor).\(.qemu.micro)"')"
fi
blog "$BJC"
stop_pair

idle=() wb=() bg=() ratio=() wrate=()
for ((run = 1; run <= BENCH_RUNS; run++)); do
    start_pair
    i=$(timed "$BLKMIG" migrate -q --mode copy --source "$W/src.qmp" --dest "$W/dst.qmp" --speed "$SPEED" "${EXTRA[@]}") \
        || bdie "idle copy failed"
    stop_pair
    cap=$(awk -v i="$i" -v c="$CAP" 'BEGIN { printf "%.0f", i * c + 1 }')
    b=skipped
    ((run == 1)) && b=$(busy_copy background "$cap")
    if ((run == 1)); then   # ($a holds the source's -blockdev arguments)
        rm -f "$W/switched"
        # room for the convergence window (twice: a switch, then its effect)
        auto=$(busy_copy auto $((cap + 2 * ${P5_WINDOW:-5})))
        [[ -f $W/switched ]] && auto="$auto s, switched to write-blocking"
        [[ $auto == failed ]] && grep -q 'not converging' "$W/busy.err" &&
            auto="failed after the window: not converging, no block-job-change"
    fi
    w=$(busy_copy write-blocking "$cap")
    wrate+=("$(cat "$W/writer.rate")")
    idle+=("$i") bg+=("$b") wb+=("$w")
    if [[ $w =~ ^[0-9.]+$ ]]; then ratio+=("$(fdiv "$w" "$i")"); else ratio+=(99); fi
    blog "run $run: idle ${i} s; busy background: ${b}; busy write-blocking: ${w} s (writer ~${wrate[-1]} MiB/s, link $((SPEED / MiB)) MiB/s)"
done
i=$(median "${idle[@]}") r=$(median "${ratio[@]}")
nb=0 nt=0
for b in "${bg[@]}"; do
    [[ $b == skipped ]] && continue
    nt=$((nt + 1))
    [[ $b =~ ^[0-9.]+$ ]] && nb=$((nb + 1))
done
w=$(median "${wb[@]}")
result P5a "converge under a writer (~$(median "${wrate[@]}" | cut -d. -f1) MiB/s on ${HOT} of ${MIB} MiB > $((SPEED / MiB)) MiB/s link): write-blocking vs idle" "$w s" "$i s (idle)" "$r" "<= 3" "$(met "$r" le 3)"
result P5b "same writer, --copy-mode background (cap ${CAP}x idle); $BJC" "converged $nb/$nt (${bg[0]})" "$i s (idle)" "-" "(context)" "-"
# auto (the default): converges by switching where block-job-change exists; on
# QEMU 7.2 it fails after --converge-window (P5_WINDOW, default 5 s) as documented.
result P5c "same writer, --copy-mode auto (default; window ${P5_WINDOW:-5} s); $BJC" "$auto" "$i s (idle)" "-" "(context)" "-"
