#!/bin/bash
# bench/p1-copy.sh: P1 copy throughput of a dense 2 GiB disk, blkmig vs nbdcopy and qemu-img convert.
#
# Paired runs (BENCH_RUNS, default 5; --quick = 1).  Each run copies the same dense
# raw image (cache=none everywhere, cold page cache) with:
#   * blkmig migrate --mode copy  (source VM -> destination QEMU, NBD over UNIX socket)
#   * blkmig move                 (same-host mirror to a new image)
#   * nbdcopy between two qemu-nbd exports (--cache=none) of the same images
#   * qemu-img convert -t none -T none
#   * dd iflag=direct oflag=direct bs=4M of the same bytes (the physical limit, lib.sh
#     dd_limit)
# and reports the median of the per-run ratios blkmig / nbdcopy (target <= 1.0) and
# blkmig / dd (rows P1a-dd, P1b-dd; target <= 1.05).
# P1_MIB sets the disk size (default 2048); BLKMIG_ARGS adds options to blkmig.
source "$(dirname "$0")/lib.sh"

MIB=${P1_MIB:-2048}
BYTES=$((MIB * MiB))
read -r -a EXTRA <<<"${BLKMIG_ARGS:-}"

blog "creating a dense ${MIB} MiB raw image"
mk_dense "$W/src.raw" raw "$MIB"

copy_t=() move_t=() nbd_t=() conv_t=() dd_t=() r_copy=() r_move=() r_conv=() r_cdd=() r_mdd=()
for ((run = 1; run <= BENCH_RUNS; run++)); do
    # blkmig migrate --mode copy: running source VM, destination QEMU holding an
    # empty target node "vda" (cache=none), no device.
    rm -f "$W/dst.raw"
    qemu-img create -q -f raw "$W/dst.raw" "${MIB}M"
    mapfile -t a < <(disk_args vda "$W/src.raw" raw)
    vm_start src "${a[@]}"
    mapfile -t d < <(node_args vda "$W/dst.raw" raw)
    vm_start dst -S "${d[@]}"
    wait_idle src
    drop_caches
    t=$(timed "$BLKMIG" migrate -q --mode copy --source "$W/src.qmp" --dest "$W/dst.qmp" "${EXTRA[@]}")
    copy_t+=("$t")
    vm_stop dst

    # blkmig move: the same VM's disk to a new image on this host.
    rm -f "$W/moved.raw"
    drop_caches
    t=$(timed "$BLKMIG" move -q --qmp "$W/src.qmp" --disk vda --to "$W/moved.raw" "${EXTRA[@]}")
    move_t+=("$t")
    vm_stop src
    rm -f "$W/moved.raw"

    # nbdcopy between two qemu-nbd exports.
    rm -f "$W/dst.raw"
    qemu-img create -q -f raw "$W/dst.raw" "${MIB}M"
    qemu-nbd -t -f raw --cache=none -k "$W/a.sock" "$W/src.raw" & bg_pid nbda $!
    qemu-nbd -t -f raw --cache=none -k "$W/b.sock" "$W/dst.raw" & bg_pid nbdb $!
    for i in $(seq 50); do [[ -S $W/a.sock && -S $W/b.sock ]] && break; sleep 0.1; done
    drop_caches
    t=$(timed nbdcopy "nbd+unix:///?socket=$W/a.sock" "nbd+unix:///?socket=$W/b.sock")
    nbd_t+=("$t")
    kill "$(cat "$W/nbda.pid")" "$(cat "$W/nbdb.pid")" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -f "$W/nbda.pid" "$W/nbdb.pid" "$W/a.sock" "$W/b.sock"

    # qemu-img convert (file to file).
    rm -f "$W/dst.raw"
    drop_caches
    t=$(timed qemu-img convert -t none -T none -f raw -O raw "$W/src.raw" "$W/dst.raw")
    conv_t+=("$t")

    # dd with O_DIRECT both ways: the storage's own rate for these bytes.
    t=$(dd_limit "$BYTES" "$W/src.raw") || bdie "dd failed"
    dd_t+=("$t")

    r_copy+=("$(fdiv "${copy_t[-1]}" "${nbd_t[-1]}")")
    r_move+=("$(fdiv "${move_t[-1]}" "${nbd_t[-1]}")")
    r_conv+=("$(fdiv "${copy_t[-1]}" "${conv_t[-1]}")")
    r_cdd+=("$(fdiv "${copy_t[-1]}" "${dd_t[-1]}")")
    r_mdd+=("$(fdiv "${move_t[-1]}" "${dd_t[-1]}")")
    blog "run $run: copy ${copy_t[-1]} s, move ${move_t[-1]} s, nbdcopy ${nbd_t[-1]} s, convert ${conv_t[-1]} s, dd ${dd_t[-1]} s"
done

mbs() { awk -v b="$BYTES" -v t="$1" 'BEGIN { printf "%.0f", b / t / 1048576 }'; }
c=$(median "${copy_t[@]}") m=$(median "${move_t[@]}") n=$(median "${nbd_t[@]}") v=$(median "${conv_t[@]}")
rc=$(median "${r_copy[@]}") rm_=$(median "${r_move[@]}") rv=$(median "${r_conv[@]}")
dd=$(median "${dd_t[@]}") rcd=$(median "${r_cdd[@]}") rmd=$(median "${r_mdd[@]}")
result P1a "copy ${MIB} MiB dense: migrate --mode copy vs nbdcopy" "$c s ($(mbs "$c") MiB/s)" "$n s ($(mbs "$n") MiB/s)" "$rc" "<= 1.0" "$(met "$rc" le 1.0)"
result P1b "copy ${MIB} MiB dense: move vs nbdcopy" "$m s ($(mbs "$m") MiB/s)" "$n s ($(mbs "$n") MiB/s)" "$rm_" "<= 1.0" "$(met "$rm_" le 1.0)"
result P1c "copy ${MIB} MiB dense: migrate --mode copy vs qemu-img convert" "$c s" "$v s ($(mbs "$v") MiB/s)" "$rv" "(context)" "-"
dd_result P1a-dd "copy ${MIB} MiB dense: migrate --mode copy" "$c" "$dd" "$rcd" "$BYTES"
dd_result P1b-dd "copy ${MIB} MiB dense: move" "$m" "$dd" "$rmd" "$BYTES"
