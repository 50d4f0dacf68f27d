#!/bin/bash
# bench/p3-sparse.sh: P3 copy of a sparse 64 GiB qcow2 holding 512 MiB vs a dense 512 MiB qcow2, and the copy's allocation.
#
# Both with blkmig migrate --mode copy into an empty qcow2 target node (cache=none).
# Reports the median of paired time ratios sparse / dense (target <= 1.2) and the
# destination's host allocation as a ratio of the source's (target <= 1.02).
source "$(dirname "$0")/lib.sh"
read -r -a EXTRA <<<"${BLKMIG_ARGS:-}"

blog "creating images: 64 GiB qcow2 with 8 x 64 MiB of data, dense 512 MiB qcow2"
qemu-img create -q -f qcow2 "$W/sparse.qcow2" 64G
cmds=()
for i in $(seq 0 7); do cmds+=(-c "write -P 0x5a $((i * 8))G 64M"); done
qemu-io -f qcow2 -t none "${cmds[@]}" "$W/sparse.qcow2" >/dev/null
mk_dense "$W/dense.qcow2" qcow2 512

# copy_one SRC SIZE: one copy into a fresh target; prints seconds, leaves the allocation ratio in $W/alloc-ratio.
copy_one() {
    local src=$1 size=$2 a d t
    rm -f "$W/tgt.qcow2"
    qemu-img create -q -f qcow2 "$W/tgt.qcow2" "$size"
    mapfile -t a < <(disk_args vda "$src" qcow2)
    mapfile -t d < <(node_args vda "$W/tgt.qcow2" qcow2)
    vm_start src "${a[@]}"
    vm_start dst -S "${d[@]}"
    wait_idle src
    drop_caches
    t=$(timed "$BLKMIG" migrate -q --mode copy --source "$W/src.qmp" --dest "$W/dst.qmp" "${EXTRA[@]}") || return 1
    vm_stop dst
    vm_stop src
    qemu-img compare -q "$src" "$W/tgt.qcow2" || blog "warning: copy of $src differs"
    fdiv "$(alloc_bytes "$W/tgt.qcow2")" "$(alloc_bytes "$src")" >"$W/alloc-ratio"
    echo "$t"
}

st=() dt=() rt=() ar=()
for ((run = 1; run <= BENCH_RUNS; run++)); do
    s=$(copy_one "$W/sparse.qcow2" 64G) || bdie "sparse copy failed"
    sa=$(cat "$W/alloc-ratio")
    d=$(copy_one "$W/dense.qcow2" 512M) || bdie "dense copy failed"
    st+=("$s") dt+=("$d") rt+=("$(fdiv "$s" "$d")") ar+=("$sa")
    blog "run $run: sparse ${s} s (alloc ratio $sa), dense ${d} s"
done
s=$(median "${st[@]}") d=$(median "${dt[@]}") r=$(median "${rt[@]}") a=$(median "${ar[@]}")
src_mib=$(( $(alloc_bytes "$W/sparse.qcow2") / MiB ))
result P3a "copy 64 GiB sparse (512 MiB data) vs 512 MiB dense" "$s s" "$d s (dense)" "$r" "<= 1.2" "$(met "$r" le 1.2)"
result P3b "sparse copy: destination / source allocation" "ratio $a" "source ${src_mib} MiB" "$a" "<= 1.02" "$(met "$a" le 1.02)"
