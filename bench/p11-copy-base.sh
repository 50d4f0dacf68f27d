#!/bin/bash
# bench/p11-copy-base.sh: P11 `migrate --chain copy-base` of a leaf and its base: time vs `--chain full`, destination allocation vs the source chain's.
#
# Issue 13 (its second benchmark bullet: copy-base against full).  One image pair,
# made once, the shape of P10 (bench/p10-chain.sh):
#   base.qcow2  P11_DISK_MIB (default 4096) virtual, P11_BASE_DATA_MIB (default 1024)
#               of data (pattern 0xa5) in four equal extents at 0, 1/4, 1/2 and 3/4
#               of the disk (a template: an installed system)
#   leaf.qcow2  the same size, backing file base.qcow2 (by absolute path),
#               P11_LEAF_MIB (default 256) of data (pattern 0x5a): half at offset 0
#               (over the base's first extent), half at 3/8 of the disk (a hole in
#               the base)
# Paired runs (BENCH_RUNS, default 5; --quick = 1); each run starts the source VM
# (vda = leaf.qcow2 on its base, cache=none) and two destination QEMUs (-S, no
# disks), and times, each from a cold page cache:
#   (a) blkmig migrate --mode copy --chain copy-base --create-dir D1
#       (the leaf is mirrored, sync=top, into a new D1/vda.qcow2 while blkmig copies
#       the base with libnbd into a new D1/base.qcow2; finish links the two)
#   (b) blkmig migrate --mode copy --create-dir D2    (--chain full: the whole
#       guest view, base included, into one image)
# both with --events FILE.  Outside the timing it checks that D1 holds exactly
# vda.qcow2 and base.qcow2, that D1/vda.qcow2 is a 2-layer chain on D1/base.qcow2
# (qemu-img info --backing-chain), that the source leaf (its full view through the
# base) equals D1's top and D2's target, and that D1/base.qcow2 equals the source
# base (qemu-img compare); anything else fails the script.
# Row P11t: time (a) / time (b), median of the per-run ratios; target <= 1.1.  Its
# blkmig column also gives where (a)'s time went (events: begin -> mirror, the
# mirror phase until the switch, switch -> completed).
# Row P11a: D1's allocation (the sum of its files' qemu-img actual-size) / the
# source chain's (base + leaf); target <= 1.02.
# P11_ARGS adds options to both blkmig commands.
source "$(dirname "$0")/lib.sh"

DISK_MIB=${P11_DISK_MIB:-4096}
BASE_MIB=${P11_BASE_DATA_MIB:-1024}
LEAF_MIB=${P11_LEAF_MIB:-256}
read -r -a EXTRA <<<"${P11_ARGS:-}"
((DISK_MIB >= 64 && DISK_MIB % 8 == 0)) || bdie "P11_DISK_MIB must be a multiple of 8, >= 64"
((BASE_MIB >= 4 && BASE_MIB % 4 == 0 && BASE_MIB <= DISK_MIB)) ||
    bdie "P11_BASE_DATA_MIB must be a multiple of 4 within the disk"
((LEAF_MIB >= 2 && LEAF_MIB % 2 == 0 && LEAF_MIB / 2 <= DISK_MIB / 8)) ||
    bdie "P11_LEAF_MIB must be even and at most a quarter of P11_DISK_MIB"

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
mkdir "$W/src"
qemu-img create -q -f qcow2 "$W/src/base.qcow2" "${DISK_MIB}M"
for q in 0 1 2 3; do
    write_mib "$W/src/base.qcow2" 0xa5 $((q * DISK_MIB / 4)) $((BASE_MIB / 4))
done
qemu-img create -q -f qcow2 -b "$W/src/base.qcow2" -F qcow2 "$W/src/leaf.qcow2" "${DISK_MIB}M"
write_mib "$W/src/leaf.qcow2" 0x5a 0 $((LEAF_MIB / 2))
write_mib "$W/src/leaf.qcow2" 0x5a $((DISK_MIB * 3 / 8)) $((LEAF_MIB / 2))
LEAF_ALLOC=$(alloc_bytes "$W/src/leaf.qcow2")
BASE_ALLOC=$(alloc_bytes "$W/src/base.qcow2")
SRC_ALLOC=$((LEAF_ALLOC + BASE_ALLOC))
blog "leaf allocation $(fdiv "$LEAF_ALLOC" "$MiB") MiB, base $(fdiv "$BASE_ALLOC" "$MiB") MiB"

# ev FILE JQ-FILTER: one value from an events file.
ev() { jq -rs "$2" "$1"; }
# phase_ms FILE PHASE: ms of the first `phase` event PHASE.
phase_ms() { ev "$1" "map(select(.event == \"phase\" and .phase == \"$2\")) | .[0].ms"; }
# ready_ms FILE: ms of the last mirror reaching READY (`disk` state ready).
ready_ms() { ev "$1" 'map(select(.event == "disk" and .state == "ready")) | last | .ms'; }
# base_done FILE MIRROR_MS: when the base layers were copied, from the `progress`
# events with part base (every 2 s, and once when the wait for them ends): "+A..+B"
# seconds after MIRROR_MS, A the last report with done < total, B the first with
# done == total.
base_done() {
    local a b
    a=$(ev "$1" 'map(select(.event == "progress" and .part == "base" and .done < .total)) |
                 if length > 0 then last.ms else "" end')
    b=$(ev "$1" 'map(select(.event == "progress" and .part == "base" and .done == .total)) |
                 if length > 0 then .[0].ms else "" end')
    echo "+$([[ -n $a ]] && span "$2" "$a")..+$([[ -n $b ]] && span "$2" "$b")"
}
completed_ms() { ev "$1" 'map(select(.event == "completed")) | .[0].ms'; }
# sent_mib FILE: the `completed` event's bytes (what the mirrors copied) in MiB.
sent_mib() { ev "$1" 'map(select(.event == "completed")) | .[0].bytes / 1048576 | floor'; }
# span A B: (B - A) / 1000 in seconds, 3 decimals
span() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1000 }'; }

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

# dir_alloc DIR: the sum of the allocation (qemu-img actual-size) of DIR's files.
dir_alloc() {
    local f sum=0
    for f in "$1"/*; do
        sum=$((sum + $(alloc_bytes "$f")))
    done
    echo "$sum"
}

cb_t=() full_t=() tratio=() aratio=() allocs=() pre_s=() mir_s=() post_s=()
for ((run = 1; run <= BENCH_RUNS; run++)); do
    mapfile -t a < <(disk_args vda "$W/src/leaf.qcow2" qcow2)
    vm_start src "${a[@]}"
    wait_idle src

    t=$(copy_once dcb "$W/D1" --chain copy-base) || bdie "migrate --chain copy-base failed"
    cb_t+=("$t")
    t=$(copy_once dfull "$W/D2") || bdie "migrate --chain full failed"
    full_t+=("$t")
    vm_stop src
    tratio+=("$(fdiv "${cb_t[-1]}" "${full_t[-1]}")")

    # Correctness: D1 holds the chain, vda.qcow2 on base.qcow2, and every copy shows
    # the guest's disk.
    mapfile -t files < <(cd "$W/D1" && ls -A)
    [[ ${files[*]} == "base.qcow2 vda.qcow2" ]] ||
        bdie "run $run: expected base.qcow2 and vda.qcow2 in D1, found: ${files[*]}"
    d1=$W/D1/vda.qcow2
    d2=("$W"/D2/*)
    if ((${#d2[@]} != 1)) || [[ ! -f ${d2[0]} ]]; then
        bdie "run $run: expected one target in D2, found: ${d2[*]}"
    fi
    chain=$(qemu-img info -U --backing-chain --output=json "$d1" | jq -r '.[].filename' |
        while read -r f; do readlink -f "$f"; done)
    [[ $chain == "$(readlink -f "$d1")"$'\n'"$(readlink -f "$W/D1/base.qcow2")" ]] ||
        bdie "run $run: D1/vda.qcow2 is not a 2-layer chain on D1/base.qcow2: ${chain//$'\n'/ }"
    qemu-img compare -q "$W/src/leaf.qcow2" "$d1" ||
        bdie "run $run: the --chain copy-base copy differs from the source's disk"
    qemu-img compare -q "$W/src/base.qcow2" "$W/D1/base.qcow2" ||
        bdie "run $run: D1/base.qcow2 differs from the source's base"
    qemu-img compare -q "$W/src/leaf.qcow2" "${d2[0]}" ||
        bdie "run $run: the --chain full copy differs from the source's disk"

    # Allocation, and where (a)'s time went.
    al=$(dir_alloc "$W/D1")
    allocs+=("$al") aratio+=("$(fdiv "$al" "$SRC_ALLOC")")
    e=$W/dcb.events
    pb=$(phase_ms "$e" begin) pm=$(phase_ms "$e" mirror) ps=$(phase_ms "$e" switch)
    pc=$(completed_ms "$e") rd=$(ready_ms "$e") bd=$(base_done "$e" "$pm")
    pre_s+=("$(span "$pb" "$pm")") mir_s+=("$(span "$pm" "$ps")") post_s+=("$(span "$ps" "$pc")")
    fe=$W/dfull.events
    blog "run $run: copy-base ${cb_t[-1]} s (begin->mirror ${pre_s[-1]} s, mirror->switch" \
        "${mir_s[-1]} s [leaf READY at +$(span "$pm" "$rd") s, base layers done at" \
        "$bd s], switch->completed ${post_s[-1]} s;" \
        "mirror sent $(sent_mib "$e") MiB; D1 $((al / MiB)) MiB: top $(($(alloc_bytes "$d1") / MiB)) MiB, base" \
        "$(($(alloc_bytes "$W/D1/base.qcow2") / MiB)) MiB; alloc ratio ${aratio[-1]})," \
        "full ${full_t[-1]} s (begin->mirror $(span "$(phase_ms "$fe" begin)" "$(phase_ms "$fe" mirror)") s," \
        "mirror->switch $(span "$(phase_ms "$fe" mirror)" "$(phase_ms "$fe" switch)") s," \
        "switch->completed $(span "$(phase_ms "$fe" switch)" "$(completed_ms "$fe")") s;" \
        "sent $(sent_mib "$fe") MiB, target alloc $(($(alloc_bytes "${d2[0]}") / MiB)) MiB); copy-base/full ${tratio[-1]}"
    rm -rf "$W/D1" "$W/D2"
done

tc=$(median "${cb_t[@]}") tf=$(median "${full_t[@]}") tr=$(median "${tratio[@]}")
ar=$(median "${aratio[@]}") am=$(median "${allocs[@]}")
ps=$(median "${pre_s[@]}") ms=$(median "${mir_s[@]}") qs=$(median "${post_s[@]}")
shape="${DISK_MIB} MiB leaf / ${LEAF_MIB} MiB data over a base of ${BASE_MIB} MiB data"
result P11t "chain copy-base vs full, $shape: time" \
    "$tc s (before mirror $ps s, mirror $ms s, after $qs s)" "$tf s (--chain full)" \
    "$tr" "<= 1.1" "$(met "$tr" le 1.1)"
result P11a "chain copy-base, $shape: destination allocation / source chain's" \
    "$(fdiv "$am" "$MiB") MiB (D1: top + base)" \
    "$(fdiv "$SRC_ALLOC" "$MiB") MiB (leaf $(fdiv "$LEAF_ALLOC" "$MiB") + base $(fdiv "$BASE_ALLOC" "$MiB"))" \
    "$ar" "<= 1.02" "$(met "$ar" le 1.02)"
