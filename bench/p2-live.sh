#!/bin/bash
# bench/p2-live.sh: P2 whole live migration (4 GiB qcow2, 512 MiB data, cache=none) vs libvirt --copy-storage-all.
#
# Runs the libvirt peer (LIBVIRT_PEER, default ../shared/bench/libvirt-peer.sh) for
# BENCH_RUNS runs, then BENCH_RUNS blkmig live migrations of the same VM shape, and
# reports the median of the paired ratios blkmig / libvirt (target <= 0.15).
# Without the peer it says "libvirt peer not available" and gives no ratio.  Row
# P2-dd: the same migrations vs dd iflag=direct oflag=direct of 512 MiB (lib.sh
# dd_limit, the physical limit for the disk's data; target <= 1.05).
source "$(dirname "$0")/lib.sh"
live_bench P2 "live migration, 4 GiB qcow2 / 512 MiB data" 0 0.15 --modes plain
