#!/bin/bash
# bench/p10-chain.sh: P10 `migrate --chain top` of a leaf over a shared base: bytes sent vs the leaf's allocation, time vs `--chain full`.
#
# Issue 13 (its first benchmark bullet, which the issue calls P9).  One image pair,
# made once:
#   base.qcow2  P10_DISK_MIB (default 4096) virtual, P10_BASE_DATA_MIB (default 1024)
#               of data (pattern 0xa5) in four equal extents at 0, 1/4, 1/2 and 3/4
#               of the disk (a template: an installed system)
#   leaf.qcow2  the same size, backing file base.qcow2 (by absolute path),
#               P10_LEAF_MIB (default 256) of data (pattern 0x5a): half at offset 0
#               (over the base's first extent), half at 3/8 of the disk (a hole in
#               the base)
# and a copy of base.qcow2 in a directory B, the destination's --base-dir.  Paired
# runs (BENCH_RUNS, default 5; --quick = 1); each run starts the source VM (vda =
# leaf.qcow2 on its base, cache=none) and two destination QEMUs (-S, no disks), and
# times, each from a cold page cache:
#   (a) blkmig migrate --mode copy --chain top --create-dir D1 --base-dir B
#       (begin and prepare each hash every allocated byte of the base first, then
#       the leaf alone is mirrored, sync=top, into a new overlay D1/vda.qcow2 on
#       B/base.qcow2)
#   (b) blkmig migrate --mode copy --create-dir D2    (--chain full: the whole
#       guest view, base included, into one image)
# both with --events FILE.  Outside the timing it checks that D1's target is a
# 2-layer chain on B/base.qcow2 and that the source leaf (its full view through the
# base) equals D1's and D2's targets (qemu-img compare); anything else fails the
# script.
# Row P10: bytes sent by (a) (the `completed` event's `bytes`: what the mirrors
# copied) / the leaf's allocated bytes (qemu-img actual-size); target <= 1.05.
# Row P10t: time (a) / time (b), median of the per-run ratios; the issue sets no
# goal ("report"); its blkmig column also gives how long (a) took before its mirror
# started (events: phase begin -> mirror) minus the same for (b): the cost of
# hashing the base on both hosts, and its share of (a)'s time.  P10's reference
# column also gives what (b) sent.
# P10_ARGS adds options to both blkmig commands.
source "$(dirname "$0")/lib.sh"

DISK_MIB=${P10_DISK_MIB:-4096}
BASE_MIB=${P10_BASE_DATA_MIB:-1024}
LEAF_MIB=${P10_LEAF_MIB:-256}
read -r -a EXTRA <<<"${P10_ARGS:-}"
((DISK_MIB >= 64 && DISK_MIB % 8 == 0)) || bdie "P10_DISK_MIB must be a multiple of 8, >= 64"
((BASE_MIB >= 4 && BASE_MIB % 4 == 0 && BASE_MIB <= DISK_MIB)) ||
    bdie "P10_BASE_DATA_MIB must be a multiple of 4 within the disk"
((LEAF_MIB >= 2 && LEAF_MIB % 2 == 0 && LEAF_MIB / 2 <= DISK_MIB / 8)) ||
    bdie "P10_LEAF_MIB must be even and at most a quarter of P10_DISK_MIB"

# write_mib IMG PATTERN OFF_MIB LEN_MIB: LEN_MIB of PATTERN at OFF_MIB into the qcow2
# IMG (O_DIRECT, 256 MiB per qemu-io request like lib.sh mk_dense).
write_mib() {
    local img=$1 pat=$2 off=$3 len=$4 o cmds=()
    for ((o = 0; o < len; o += 256)); do
        cmds+=(-c "write -P $pat $((off + o))M $((len - o < 256 ? len - o : 256))M")
    done
    qemu-io -f qcow2 -t none "${cmds[@]}" "$img" >/dev/null
}

blog "creating base.qcow2 (${DISK_MIB} MiB, ${BASE_MIB} MiB of data) and leaf.qcow2 (${LEAF_MIB} MiB of data)"
mkdir "$W/src" "$W/B"
qemu-img create -q -f qcow2 "$W/src/base.qcow2" "${DISK_MIB}M"
for q in 0 1 2 3; do
    write_mib "$W/src/base.qcow2" 0xa5 $((q * DISK_MIB / 4)) $((BASE_MIB / 4))
done
qemu-img create -q -f qcow2 -b "$W/src/base.qcow2" -F qcow2 "$W/src/leaf.qcow2" "${DISK_MIB}M"
write_mib "$W/src/leaf.qcow2" 0x5a 0 $((LEAF_MIB / 2))
write_mib "$W/src/leaf.qcow2" 0x5a $((DISK_MIB * 3 / 8)) $((LEAF_MIB / 2))
# The destination's copy of the template.
cp --sparse=always "$W/src/base.qcow2" "$W/B/base.qcow2"
LEAF_ALLOC=$(alloc_bytes "$W/src/leaf.qcow2")
BASE_ALLOC=$(alloc_bytes "$W/src/base.qcow2")
blog "leaf allocation $(fdiv "$LEAF_ALLOC" "$MiB") MiB, base $(fdiv "$BASE_ALLOC" "$MiB") MiB"

# ev FILE JQ-FILTER: one value from an events file.
ev() { jq -rs "$2" "$1"; }
# pre_mirror FILE: ms from phase begin to phase mirror (begin + prepare).
pre_mirror() {
    ev "$1" '(map(select(.event == "phase" and .phase == "mirror")) | .[0].ms) -
             (map(select(.event == "phase" and .phase == "begin")) | .[0].ms)'
}
phase_ms() { ev "$1" "map(select(.event == \"phase\" and .phase == \"$2\")) | .[0].ms"; }

# copy_once TAG DIR ARGS...: a fresh destination QEMU (-S, no disks) named TAG, then
# a timed `blkmig migrate --mode copy --create-dir DIR ARGS` from a cold page cache,
# events in $W/TAG.events.  Prints the seconds; the destination QEMU is stopped
# afterwards (it holds the target).
copy_once() {
    local tag=$1 dir=$2 t
    shift 2
    rm -rf "$dir" "$W/$tag.events"
    mkdir "$dir"
    vm_start "$tag" -S
    drop_caches
    t=$(timed "$BLKMIG" migrate -q --mode copy --source "$W/src.qmp" --dest "$W/$tag.qmp" \
        --create-dir "$dir" --events "$W/$tag.events" "$@" "${EXTRA[@]}") || return 1
    vm_stop "$tag"
    echo "$t"
}

# target_of DIR: the one image the copy created in DIR.
target_of() {
    local f=("$1"/*)
    if ((${#f[@]} != 1)) || [[ ! -f ${f[0]} ]]; then
        bdie "expected one target in $1, found: ${f[*]}"
    fi
    echo "${f[0]}"
}

top_t=() full_t=() tratio=() bytes=() fbytes=() bratio=() top_pre=() full_pre=() hash_s=() hash_share=()
for ((run = 1; run <= BENCH_RUNS; run++)); do
    mapfile -t a < <(disk_args vda "$W/src/leaf.qcow2" qcow2)
    vm_start src "${a[@]}"
    wait_idle src

    t=$(copy_once dtop "$W/D1" --chain top --base-dir "$W/B") || bdie "migrate --chain top failed"
    top_t+=("$t")
    t=$(copy_once dfull "$W/D2") || bdie "migrate --chain full failed"
    full_t+=("$t")
    vm_stop src

    # What was sent, and where the time went.
    b=$(ev "$W/dtop.events" 'map(select(.event == "completed")) | .[0].bytes')
    bf=$(ev "$W/dfull.events" 'map(select(.event == "completed")) | .[0].bytes')
    [[ $b =~ ^[0-9]+$ && $bf =~ ^[0-9]+$ ]] || bdie "no completed event with bytes"
    bytes+=("$b") fbytes+=("$bf") bratio+=("$(fdiv "$b" "$LEAF_ALLOC")")
    pt=$(pre_mirror "$W/dtop.events") pf=$(pre_mirror "$W/dfull.events")
    top_pre+=("$pt") full_pre+=("$pf")
    hash_s+=("$(awk -v a="$pt" -v b="$pf" 'BEGIN { printf "%.3f", (a - b) / 1000 }')")
    hash_share+=("$(fdiv "${hash_s[-1]}" "${top_t[-1]}")")
    tratio+=("$(fdiv "${top_t[-1]}" "${full_t[-1]}")")

    # Correctness: D1 is an overlay on B's base, and both copies show the guest's disk.
    d1=$(target_of "$W/D1")
    d2=$(target_of "$W/D2")
    chain=$(qemu-img info -U --backing-chain --output=json "$d1" | jq -r '.[].filename')
    [[ $chain == "$d1"$'\n'"$W/B/base.qcow2" ]] ||
        bdie "run $run: D1's target is not a 2-layer chain on $W/B/base.qcow2: ${chain//$'\n'/ }"
    qemu-img compare -q "$W/src/leaf.qcow2" "$d1" ||
        bdie "run $run: the --chain top copy differs from the source's disk"
    qemu-img compare -q "$W/src/leaf.qcow2" "$d2" ||
        bdie "run $run: the --chain full copy differs from the source's disk"
    blog "run $run: top ${top_t[-1]} s (begin $(phase_ms "$W/dtop.events" begin) ms," \
        "prepare $(phase_ms "$W/dtop.events" prepare) ms, mirror $(phase_ms "$W/dtop.events" mirror) ms;" \
        "$((b / MiB)) MiB sent, ratio ${bratio[-1]}, target alloc $(($(alloc_bytes "$d1") / MiB)) MiB)," \
        "full ${full_t[-1]} s (mirror at ${pf} ms; $((bf / MiB)) MiB, target alloc" \
        "$(($(alloc_bytes "$d2") / MiB)) MiB); top/full ${tratio[-1]}, hashing ~${hash_s[-1]} s (${hash_share[-1]} of top)"
    rm -rf "$W/D1" "$W/D2"
done

br=$(median "${bratio[@]}") bm=$(median "${bytes[@]}") bf=$(median "${fbytes[@]}")
tt=$(median "${top_t[@]}") tf=$(median "${full_t[@]}") tr=$(median "${tratio[@]}")
hs=$(median "${hash_s[@]}") hh=$(median "${hash_share[@]}")
pct() { awk -v v="$1" 'BEGIN { printf "%.0f", v * 100 }'; }
shape="${DISK_MIB} MiB leaf / ${LEAF_MIB} MiB data over a base of ${BASE_MIB} MiB data"
result P10 "chain top, $shape: bytes sent / leaf allocation" \
    "$(fdiv "$bm" "$MiB") MiB sent" "$(fdiv "$LEAF_ALLOC" "$MiB") MiB allocated (leaf; full sends $(fdiv "$bf" "$MiB") MiB)" \
    "$br" "<= 1.05" "$(met "$br" le 1.05)"
result P10t "chain top vs full, $shape: time" \
    "$tt s (hashing ~$hs s, $(pct "$hh") %)" "$tf s (--chain full)" "$tr" "report" "-"
