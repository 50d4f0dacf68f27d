#!/bin/bash
# bench/p3-sparse.sh: P3 copies of sparse and thick disks: time vs a dense copy and dd, and the copy's allocation.
#
# All with blkmig migrate --mode copy into an empty target node (cache=none),
# BENCH_RUNS paired runs (--quick = 1), medians of per-run ratios.
#   P3a     a sparse 64 GiB qcow2 holding 512 MiB (8 x 64 MiB spread out) vs a dense
#           512 MiB qcow2: time sparse / dense (target <= 1.2)
#   P3b     the sparse copy's host allocation / the source's (target <= 1.02)
#   P3a-dd  the sparse copy vs dd iflag=direct oflag=direct of its 512 MiB of data
#           (lib.sh dd_limit, the physical limit; target <= 1.05)
#   P3c     a THICK raw source (2 GiB written with zeros as data, so every block is
#           allocated, holding 4 x 64 MiB of non-zero data) copied into an empty raw
#           target whose file and format nodes have discard=unmap: the target
#           file's allocation (st_blocks) / the 256 MiB of data (target <= 1.05;
#           the zeros should travel as unmapping zero writes, not as data)
#   P3d     that thick copy's time / the time of copying a sparse raw source with the
#           same data at the same offsets (target <= 1.2)
# Sizes: P3_GIB (sparse qcow2 virtual size, default 64), P3_MIB (its data and the
# dense image, a multiple of 8, default 512), P3C_MIB (the thick raw, a multiple of
# 4, at least 256, default 2048).  BLKMIG_ARGS adds options to blkmig.
source "$(dirname "$0")/lib.sh"
read -r -a EXTRA <<<"${BLKMIG_ARGS:-}"

GIB=${P3_GIB:-64}
DMIB=${P3_MIB:-512}
TMIB=${P3C_MIB:-2048}
((GIB >= 1 && DMIB >= 8 && DMIB % 8 == 0)) || bdie "P3_GIB must be >= 1, P3_MIB a multiple of 8"
((DMIB / 8 <= GIB * 1024 / 8)) || bdie "P3_MIB / 8 must fit in P3_GIB / 8"
((TMIB >= 256 && TMIB % 4 == 0)) || bdie "P3C_MIB must be a multiple of 4, at least 256"
TDATA=$((4 * 64 * MiB))

# file_alloc PATH: the host allocation of a file in bytes (st_blocks x block unit).
file_alloc() { stat -c '%b %B' "$1" | awk '{ printf "%.0f\n", $1 * $2 }'; }

blog "creating images: ${GIB} GiB qcow2 with 8 x $((DMIB / 8)) MiB of data, dense ${DMIB} MiB qcow2"
qemu-img create -q -f qcow2 "$W/sparse.qcow2" "${GIB}G"
cmds=()
for i in $(seq 0 7); do cmds+=(-c "write -P 0x5a $((i * GIB * 1024 / 8))M $((DMIB / 8))M"); done
qemu-io -f qcow2 -t none "${cmds[@]}" "$W/sparse.qcow2" >/dev/null
mk_dense "$W/dense.qcow2" qcow2 "$DMIB"

blog "creating a thick ${TMIB} MiB raw (zeros written as data) and a sparse one, both with 4 x 64 MiB of data"
dd if=/dev/zero of="$W/thick.raw" bs=4M count=$((TMIB / 4)) conv=fsync status=none ||
    bdie "could not write $W/thick.raw"
thick_alloc=$(file_alloc "$W/thick.raw")
((thick_alloc >= TMIB * MiB)) ||
    bdie "thick.raw is not fully allocated ($thick_alloc of $((TMIB * MiB)) bytes)"
qemu-img create -q -f raw "$W/thin.raw" "${TMIB}M"
cmds=()
for i in 0 1 2 3; do cmds+=(-c "write -P 0x5a $((i * TMIB / 4))M 64M"); done
qemu-io -f raw -t none "${cmds[@]}" "$W/thick.raw" >/dev/null
qemu-io -f raw -t none "${cmds[@]}" "$W/thin.raw" >/dev/null
blog "thick.raw: $(($(file_alloc "$W/thick.raw") / MiB)) MiB allocated, thin.raw: $(($(file_alloc "$W/thin.raw") / MiB)) MiB"

# copy_one SRC FMT SIZE [NODE-OPTS]: one copy of SRC (format FMT) into a fresh empty
# target $W/tgt.FMT of SIZE whose node gets NODE-OPTS (lib.sh node_args); prints
# seconds, leaves the target file's allocation in bytes in $W/tgt-alloc.
copy_one() {
    local src=$1 fmt=$2 size=$3 opts=${4:-} tgt=$W/tgt.$2 sargs dargs t
    rm -f "$tgt"
    qemu-img create -q -f "$fmt" "$tgt" "$size"
    mapfile -t sargs < <(disk_args vda "$src" "$fmt")
    mapfile -t dargs < <(node_args vda "$tgt" "$fmt" "$opts")
    vm_start src "${sargs[@]}"
    vm_start dst -S "${dargs[@]}"
    wait_idle src
    drop_caches
    t=$(timed "$BLKMIG" migrate -q --mode copy --source "$W/src.qmp" --dest "$W/dst.qmp" "${EXTRA[@]}") || return 1
    vm_stop dst
    vm_stop src
    qemu-img compare -q -f "$fmt" -F "$fmt" "$src" "$tgt" || blog "warning: copy of $src differs"
    file_alloc "$tgt" >"$W/tgt-alloc"
    rm -f "$tgt"
    echo "$t"
}

sparse_t=() dense_t=() ratio=() alloc=() dd_t=() dd_r=() thick_t=() thin_t=() thick_r=()
thick_a=() thin_a=()
src_alloc=$(file_alloc "$W/sparse.qcow2")
for ((run = 1; run <= BENCH_RUNS; run++)); do
    s=$(copy_one "$W/sparse.qcow2" qcow2 "${GIB}G") || bdie "sparse copy failed"
    sa=$(fdiv "$(cat "$W/tgt-alloc")" "$src_alloc")
    d=$(copy_one "$W/dense.qcow2" qcow2 "${DMIB}M") || bdie "dense copy failed"
    x=$(dd_limit $((DMIB * MiB))) || bdie "dd failed"
    sparse_t+=("$s") dense_t+=("$d") ratio+=("$(fdiv "$s" "$d")") alloc+=("$sa")
    dd_t+=("$x") dd_r+=("$(fdiv "$s" "$x")")
    blog "run $run: sparse ${s} s (alloc ratio $sa), dense ${d} s, dd ${x} s"

    k=$(copy_one "$W/thick.raw" raw "${TMIB}M" discard=unmap) || bdie "thick raw copy failed"
    thick_a+=("$(fdiv "$(cat "$W/tgt-alloc")" "$TDATA")")
    n=$(copy_one "$W/thin.raw" raw "${TMIB}M" discard=unmap) || bdie "sparse raw copy failed"
    thin_a+=("$(fdiv "$(cat "$W/tgt-alloc")" "$TDATA")")
    thick_t+=("$k") thin_t+=("$n") thick_r+=("$(fdiv "$k" "$n")")
    blog "run $run: thick raw ${k} s (target alloc / data ${thick_a[-1]}), sparse raw ${n} s (${thin_a[-1]})"
done
s=$(median "${sparse_t[@]}") d=$(median "${dense_t[@]}") r=$(median "${ratio[@]}")
sa=$(median "${alloc[@]}") x=$(median "${dd_t[@]}") rx=$(median "${dd_r[@]}")
result P3a "copy ${GIB} GiB sparse (${DMIB} MiB data) vs ${DMIB} MiB dense" "$s s" "$d s (dense)" "$r" "<= 1.2" "$(met "$r" le 1.2)"
result P3b "sparse copy: destination / source allocation" "ratio $sa" "source $((src_alloc / MiB)) MiB" "$sa" "<= 1.02" "$(met "$sa" le 1.02)"
dd_result P3a-dd "copy ${GIB} GiB sparse (${DMIB} MiB data)" "$s" "$x" "$rx" $((DMIB * MiB))

k=$(median "${thick_t[@]}") n=$(median "${thin_t[@]}") rk=$(median "${thick_r[@]}")
ka=$(median "${thick_a[@]}") na=$(median "${thin_a[@]}")
result P3c "thick ${TMIB} MiB raw (256 MiB data) to discard=unmap raw: target allocation / data" \
    "$(awk -v r="$ka" 'BEGIN { printf "%.0f", r * 256 }') MiB" "data 256 MiB (sparse source: ratio $na)" \
    "$ka" "<= 1.05" "$(met "$ka" le 1.05)"
result P3d "copy thick ${TMIB} MiB raw vs sparse raw (same 256 MiB data)" "$k s" "$n s (sparse raw)" \
    "$rk" "<= 1.2" "$(met "$rk" le 1.2)"
