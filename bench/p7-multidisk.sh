#!/bin/bash
# bench/p7-multidisk.sh: P7 eight 256 MiB disks vs one 2 GiB disk (same bytes), blkmig migrate --mode copy.
#
# Dense raw images, cache=none, destination target nodes without devices.
# Reports the median of paired ratios eight / one (target <= 1.2) and, as P7-dd, of
# eight / dd iflag=direct oflag=direct of the same bytes (lib.sh dd_limit, the
# physical limit; target <= 1.05).  P7_PER_MIB sets the size of each disk (default 256).
source "$(dirname "$0")/lib.sh"
read -r -a EXTRA <<<"${BLKMIG_ARGS:-}"
N=8 PER=${P7_PER_MIB:-256}
IDS=(vda vdb vdc vdd vde vdf vdg vdh)
for id in "${IDS[@]}"; do mk_dense "$W/$id.raw" raw "$PER"; done
mk_dense "$W/one.raw" raw $((N * PER))

# copy_set ID:IMG...: copy these disks in one migrate --mode copy; prints seconds.
copy_set() {
    local sargs=() dargs=() spec id img a d t
    for spec in "$@"; do
        id=${spec%%:*} img=${spec#*:}
        rm -f "$W/t-$id.raw"
        qemu-img create -q -f raw "$W/t-$id.raw" "$(stat -c %s "$img")"
        mapfile -t a < <(disk_args "$id" "$img" raw)
        mapfile -t d < <(node_args "$id" "$W/t-$id.raw" raw)
        sargs+=("${a[@]}") dargs+=("${d[@]}")
    done
    vm_start src "${sargs[@]}"
    vm_start dst -S "${dargs[@]}"
    wait_idle src
    drop_caches
    t=$(timed "$BLKMIG" migrate -q --mode copy --source "$W/src.qmp" --dest "$W/dst.qmp" "${EXTRA[@]}") || return 1
    vm_stop dst
    vm_stop src
    rm -f "$W"/t-*.raw
    echo "$t"
}

eight=() one=() ratio=() dd_t=() dd_r=()
specs=()
for id in "${IDS[@]}"; do specs+=("$id:$W/$id.raw"); done
for ((run = 1; run <= BENCH_RUNS; run++)); do
    e=$(copy_set "${specs[@]}") || bdie "8-disk copy failed"
    o=$(copy_set "vda:$W/one.raw") || bdie "1-disk copy failed"
    x=$(dd_limit $((N * PER * MiB)) "$W/one.raw") || bdie "dd failed"
    eight+=("$e") one+=("$o") ratio+=("$(fdiv "$e" "$o")") dd_t+=("$x") dd_r+=("$(fdiv "$e" "$x")")
    blog "run $run: 8 disks ${e} s, 1 disk ${o} s, dd ${x} s"
done
e=$(median "${eight[@]}") o=$(median "${one[@]}") r=$(median "${ratio[@]}")
x=$(median "${dd_t[@]}") rx=$(median "${dd_r[@]}")
result P7 "8 x ${PER} MiB disks vs 1 x $((N * PER)) MiB disk (copy)" "$e s" "$o s (1 disk)" "$r" "<= 1.2" "$(met "$r" le 1.2)"
dd_result P7-dd "8 x ${PER} MiB disks (copy)" "$e" "$x" "$rx" $((N * PER * MiB))
