#!/bin/bash
# bench/run-all.sh: run every blkmig benchmark (P1..P12) and print one table of the figures and their ratios.
#
# Usage: bench/run-all.sh [--quick] [--runs=N] [--only=P1,P3,...]
#   --quick      one run per benchmark (BENCH_RUNS=1), for development
#   --runs=N     N paired runs per benchmark (default BENCH_RUNS or 5)
#   --only=LIST  run only these benchmarks
# Environment: LIBVIRT_PEER (default ../shared/bench/libvirt-peer.sh relative to the
# repository), BLKMIG (default build/blkmig), BLKMIG_ARGS (extra mirror options),
# BENCH_TMP (default /var/tmp; must support O_DIRECT).  The QEMU used is the first
# qemu-system-x86_64 (and qemu-img, qemu-io, qemu-nbd) in PATH; the table's title
# names its version (`./run.sh bench --qemu 7.2|10.0|all` chooses it).
# Each row: id, what, blkmig, reference, ratio, target, met?  Ratios are medians of
# per-run ratios against a reference measured in the same run.
set -uo pipefail
SELF=$(readlink -f "$0")
cd "$(dirname "$SELF")" || exit 1

ONLY=
for a in "$@"; do
    case $a in
        --quick) export BENCH_RUNS=1 ;;
        --runs=*) export BENCH_RUNS=${a#--runs=} ;;
        --only=*) ONLY=${a#--only=} ;;
        -h|--help) sed -n '2,/^set /p' "$SELF" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "run-all.sh: unknown argument $a" >&2; exit 2 ;;
    esac
done
export BENCH_RUNS=${BENCH_RUNS:-5}
export LIBVIRT_PEER=${LIBVIRT_PEER:-$(cd .. && pwd)/../shared/bench/libvirt-peer.sh}
export BENCH_RESULTS
BENCH_RESULTS=$(mktemp)
trap 'rm -f "$BENCH_RESULTS"' EXIT

SCRIPTS=(p1-copy p2-live p3-sparse p4-wan p5-converge p6-footprint p7-multidisk p8-bw p9-merge p10-chain p11-copy-base p12-replicate tunnel)
t_start=$(date +%s)
# The QEMU every script runs is the first qemu-system-x86_64 in PATH (./run.sh bench
# --qemu puts the chosen one first); its version goes into the table's title.
QEMU_VERSION=$(qemu-system-x86_64 --version 2>/dev/null |
    sed -n 's/^QEMU emulator version \([0-9.]*\).*/\1/p')
echo "blkmig bench: BENCH_RUNS=$BENCH_RUNS, $(nproc) CPUs, $(qemu-system-x86_64 --version | head -n 1)" \
    "($(command -v qemu-system-x86_64))" >&2
if [[ -f $LIBVIRT_PEER ]]; then
    echo "libvirt peer: $LIBVIRT_PEER" >&2
else
    echo "libvirt peer not available ($LIBVIRT_PEER): P2/P8 get no libvirt ratio" >&2
fi
for s in "${SCRIPTS[@]}"; do
    id=${s%%-*}; id=${id^^}
    if [[ -n $ONLY && ,${ONLY^^}, != *,$id,* ]]; then continue; fi
    echo "== $s" >&2
    t0=$(date +%s)
    if ! bash "./$s.sh" >/dev/null; then
        printf '%s|%s|%s|%s|%s|%s|%s\n' "$id" "$s" "FAILED" "-" "-" "-" "no" >>"$BENCH_RESULTS"
    fi
    echo "   ($s took $(($(date +%s) - t0)) s)" >&2
done

echo
echo "blkmig benchmarks on QEMU ${QEMU_VERSION:-unknown} ($BENCH_RUNS paired run(s) each; medians; total $(($(date +%s) - t_start)) s)"
{
    echo "id|what|blkmig|reference|ratio|target|met?"
    echo "--|----|------|---------|-----|------|----"
    cat "$BENCH_RESULTS"
} | awk -F'|' '
    { for (i = 1; i <= NF; i++) { c[NR, i] = $i; if (length($i) > w[i]) w[i] = length($i) } n = NR; nf = NF }
    END { for (r = 1; r <= n; r++) { line = "";
            for (i = 1; i <= nf; i++) {
                v = c[r, i]; if (r == 2) { v = ""; while (length(v) < w[i]) v = v "-" }
                line = line sprintf("%-" w[i] "s", v) (i < nf ? " | " : "") }
            print line } }'
