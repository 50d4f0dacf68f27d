#!/bin/bash
# bench/p8-bw.sh: P8 live migration of the P2 disk limited to 256 MiB/s, vs libvirt --bandwidth 256.
#
# QEMU charges zeroes against the limit when the target cannot unmap, so libvirt
# takes virtual size / limit (~16.5 s); blkmig should follow the data (512 MiB /
# limit ~ 2 s).  Reports the median of the paired ratios (target <= 0.15).
source "$(dirname "$0")/lib.sh"
live_bench P8 "live migration at --speed 256 MiB/s (P2 disk)" $((256 * MiB)) 0.15 --modes bw --bandwidth 256
