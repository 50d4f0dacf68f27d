#!/bin/bash
# bench/p9-merge.sh: P9 live active-layer merge (blkmig merge) of an overlay into its base vs offline qemu-img commit.
#
# Issue 12.  Paired runs (BENCH_RUNS, default 5; --quick = 1).  Each run takes two
# identical copies (cp --sparse=always) of the same image pair, made once:
#   base.qcow2     P9_DISK_MIB (default 1024) virtual, P9_BASE_MIB (default a quarter
#                  of the disk) of data (pattern 0xa5) at the end of the disk
#   overlay.qcow2  P9_DISK_MIB virtual, backing file base.qcow2, P9_MIB (default 512)
#                  of data (pattern 0x5a) from offset 0; each copy's header is set
#                  to its own base's absolute path (qemu-img rebase -u)
# and merges the overlay into its base twice:
#   * reference: `qemu-img commit -q -f qcow2 $P9_COMMIT_ARGS overlay.qcow2` offline
#     (P9_COMMIT_ARGS default empty: qemu-img's own writeback cache, flushed when it
#     closes the image, and it empties the overlay as it does by default;
#     P9_COMMIT_ARGS="-t none" gives it the VM's cache mode, O_DIRECT)
#   * blkmig: a VM (cache=none, -blockdev: node "base" for base.qcow2, "drive-vda"
#     for the overlay with backing=base, virtio-blk device vda) and
#     `blkmig merge -q --qmp SOCK --disk vda $P9_ARGS` (block-commit of the active
#     layer, READY, pivot); afterwards the device must run on base.qcow2
# Only the two commands are timed, each from a cold page cache (QEMU start-up and
# the idle wait excluded).  After each run the VM's merged base must equal the
# reference's committed base (qemu-img compare; the first run also checks the
# reference against the overlay it came from), or the script fails.
# Row P9: median of the per-run ratios blkmig / qemu-img commit (target <= 1.2);
# row P9b: the same against `qemu-img commit -t none` of a third copy, the VM's cache
# mode (like for like: the VM's disk is cache=none).
source "$(dirname "$0")/lib.sh"

DISK_MIB=${P9_DISK_MIB:-1024}
MIB=${P9_MIB:-512}
BASE_MIB=${P9_BASE_MIB:-$((DISK_MIB / 4))}
COMMIT_ARGS=${P9_COMMIT_ARGS:-}
read -r -a COMMIT_EXTRA <<<"$COMMIT_ARGS"
read -r -a EXTRA <<<"${P9_ARGS:-}"
((DISK_MIB >= 4 && MIB >= 1 && MIB <= DISK_MIB && BASE_MIB >= 0 && BASE_MIB <= DISK_MIB)) ||
    bdie "need P9_DISK_MIB >= 4 and P9_MIB, P9_BASE_MIB within it (MiB)"

# write_mib IMG PATTERN OFF_MIB LEN_MIB: write LEN_MIB of PATTERN at OFF_MIB into the
# qcow2 IMG (O_DIRECT, 256 MiB per qemu-io request like lib.sh mk_dense).
write_mib() {
    local img=$1 pat=$2 off=$3 len=$4 o cmds=()
    ((len > 0)) || return 0
    for ((o = 0; o < len; o += 256)); do
        cmds+=(-c "write -P $pat $((off + o))M $((len - o < 256 ? len - o : 256))M")
    done
    qemu-io -f qcow2 -t none "${cmds[@]}" "$img" >/dev/null
}

blog "creating base.qcow2 (${DISK_MIB} MiB, ${BASE_MIB} MiB of data) and overlay.qcow2 (${MIB} MiB of data)"
mkdir "$W/tmpl"
qemu-img create -q -f qcow2 "$W/tmpl/base.qcow2" "${DISK_MIB}M"
write_mib "$W/tmpl/base.qcow2" 0xa5 $((DISK_MIB - BASE_MIB)) "$BASE_MIB"
(cd "$W/tmpl" && qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 overlay.qcow2 "${DISK_MIB}M")
write_mib "$W/tmpl/overlay.qcow2" 0x5a 0 "$MIB"
blog "overlay allocation: $(($(alloc_bytes "$W/tmpl/overlay.qcow2") / MiB)) MiB," \
    "base: $(($(alloc_bytes "$W/tmpl/base.qcow2") / MiB)) MiB"

# fresh_pair DIR: DIR/base.qcow2 and DIR/overlay.qcow2, copies of the templates, the
# overlay's backing file set to DIR/base.qcow2 (absolute: with a relative name in the
# header and -blockdev's explicit backing QEMU names the overlay json:{...}).
fresh_pair() {
    rm -rf "$1"
    mkdir "$1"
    cp --sparse=always "$W/tmpl/base.qcow2" "$W/tmpl/overlay.qcow2" "$1/"
    qemu-img rebase -q -u -f qcow2 -b "$1/base.qcow2" -F qcow2 "$1/overlay.qcow2"
}

# vm_args DIR: -blockdev/-device arguments for the overlay in DIR on its base, both
# cache=none; the device is vda, the base node "base".
vm_args() {
    printf '%s\n' -blockdev "driver=file,filename=$1/base.qcow2,node-name=file-base,cache.direct=on" \
        -blockdev "driver=qcow2,file=file-base,node-name=base,cache.direct=on" \
        -blockdev "driver=file,filename=$1/overlay.qcow2,node-name=file-vda,cache.direct=on" \
        -blockdev "driver=qcow2,file=file-vda,backing=base,node-name=drive-vda,cache.direct=on" \
        -device "virtio-blk-pci,drive=drive-vda,id=vda"
}

ours=() refs=() ratios=() drefs=() dratios=()
for ((run = 1; run <= BENCH_RUNS; run++)); do
    fresh_pair "$W/ref"
    fresh_pair "$W/refd"
    fresh_pair "$W/vm"

    # reference: qemu-img commit of the overlay, offline.
    drop_caches
    t=$(timed qemu-img commit -q -f qcow2 "${COMMIT_EXTRA[@]}" "$W/ref/overlay.qcow2") ||
        bdie "qemu-img commit failed"
    refs+=("$t")
    if ((run == 1)); then
        qemu-img compare -q -f qcow2 -F qcow2 "$W/ref/base.qcow2" "$W/tmpl/overlay.qcow2" ||
            bdie "qemu-img commit's base differs from the overlay it committed"
    fi
    # like for like (P9b): the same commit in the VM's cache mode, O_DIRECT.
    drop_caches
    t=$(timed qemu-img commit -q -f qcow2 -t none "$W/refd/overlay.qcow2") ||
        bdie "qemu-img commit -t none failed"
    drefs+=("$t")

    # blkmig merge of the running VM's active layer into its base.
    mapfile -t a < <(vm_args "$W/vm")
    vm_start vm "${a[@]}"
    wait_idle vm
    drop_caches
    t=$(timed "$BLKMIG" merge -q --qmp "$W/vm.qmp" --disk vda "${EXTRA[@]}") ||
        bdie "blkmig merge failed"
    ours+=("$t")
    file=$(qmp vm query-block | jq -r '.[] | select(.inserted != null) | .inserted.file') ||
        bdie "query-block failed after the merge"
    vm_stop vm
    [[ $file == "$W/vm/base.qcow2" ]] ||
        bdie "after the merge the disk runs on '$file', not $W/vm/base.qcow2"
    qemu-img compare -q -f qcow2 -F qcow2 "$W/vm/base.qcow2" "$W/ref/base.qcow2" ||
        bdie "run $run: the merged base differs from qemu-img commit's"

    ratios+=("$(fdiv "${ours[-1]}" "${refs[-1]}")")
    dratios+=("$(fdiv "${ours[-1]}" "${drefs[-1]}")")
    blog "run $run: blkmig merge ${ours[-1]} s, qemu-img commit ${refs[-1]} s (ratio ${ratios[-1]})," \
        "-t none ${drefs[-1]} s (ratio ${dratios[-1]})"
    rm -rf "$W/ref" "$W/refd" "$W/vm"
done

mbs() { awk -v b=$((MIB * MiB)) -v t="$1" 'BEGIN { if (t > 0) printf "%.0f", b / t / 1048576; else print "?" }'; }
o=$(median "${ours[@]}") c=$(median "${refs[@]}") r=$(median "${ratios[@]}")
result P9 "active merge: ${DISK_MIB} MiB overlay / ${MIB} MiB data into its base vs qemu-img commit" \
    "$o s ($(mbs "$o") MiB/s)" "$c s (qemu-img commit${COMMIT_ARGS:+ $COMMIT_ARGS}, $(mbs "$c") MiB/s)" \
    "$r" "<= 1.2" "$(met "$r" le 1.2)"
d=$(median "${drefs[@]}") rd=$(median "${dratios[@]}")
result P9b "active merge: ${DISK_MIB} MiB overlay / ${MIB} MiB data, like for like" \
    "$o s ($(mbs "$o") MiB/s)" "$d s (qemu-img commit -t none, $(mbs "$d") MiB/s)" \
    "$rd" "<= 1.2" "$(met "$rd" le 1.2)"
