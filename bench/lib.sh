# bench/lib.sh: shared helpers for the blkmig benchmarks (VMs, timing, medians, result rows, cleanup).
# Sourced by bench/p*.sh; not run on its own.

set -euo pipefail

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BLKMIG=${BLKMIG:-$BENCH_ROOT/build/blkmig}
# The libvirt comparison point lives outside the project.
LIBVIRT_PEER=${LIBVIRT_PEER:-$BENCH_ROOT/../shared/bench/libvirt-peer.sh}
BENCH_RUNS=${BENCH_RUNS:-5}
# Images live on disk (cache=none needs O_DIRECT, so not tmpfs).
BENCH_TMP=${BENCH_TMP:-/var/tmp}
# Where run-all.sh collects result rows (unset when a script runs alone).
BENCH_RESULTS=${BENCH_RESULTS:-}

for a in "$@"; do
    case $a in
        --quick) BENCH_RUNS=1 ;;
        --runs=*) BENCH_RUNS=${a#--runs=} ;;
        -h|--help) sed -n '2,/^[^#]/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    esac
done
export BENCH_RUNS

GiB=$((1024 * 1024 * 1024))
MiB=$((1024 * 1024))

blog() { printf '[%s] %s\n' "$(basename "$0" .sh)" "$*" >&2; }
bdie() { blog "ERROR: $*"; exit 1; }

[[ -x $BLKMIG ]] || bdie "$BLKMIG not built (./run.sh build)"
((EUID == 0)) || bdie "run as root (KVM, network namespaces)"

W=$(mktemp -d "$BENCH_TMP/blkmig-bench.XXXXXX")
BENCH_NETNS=()

bench_cleanup() {
    local f pid ns
    for f in "$W"/*.pid; do
        [[ -e $f ]] || continue
        pid=$(cat "$f" 2>/dev/null) || continue
        [[ -n $pid ]] && kill "$pid" 2>/dev/null || true
    done
    sleep 0.2
    for f in "$W"/*.pid; do
        [[ -e $f ]] || continue
        pid=$(cat "$f" 2>/dev/null) || continue
        [[ -n $pid ]] && kill -9 "$pid" 2>/dev/null || true
    done
    for ns in "${BENCH_NETNS[@]}"; do
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf "$W"
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
# fsub A B: A - B with 3 decimals
fsub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }
fdiv() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "nan"; else printf "%.3f", a / b }'; }
# median V...: the median of the numbers (mean of the middle two for an even count)
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "nan"; exit }
        if (NR % 2) printf "%.3f\n", v[(NR + 1) / 2];
        else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# fle A B: exit 0 when A <= B
fle() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 <= b + 0) }'; }
fge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 >= b + 0) }'; }

# result ID WHAT BLKMIG REFERENCE RATIO TARGET MET: one row of the final table.
result() {
    local line
    line=$(printf '%s|%s|%s|%s|%s|%s|%s' "$@")
    printf 'RESULT|%s\n' "$line"
    [[ -n $BENCH_RESULTS ]] && printf '%s\n' "$line" >>"$BENCH_RESULTS"
    return 0
}
# met RATIO OP LIMIT: "yes"/"no" for RATIO <= LIMIT (OP le) or >= LIMIT (OP ge)
met() {
    [[ $1 == nan || -z $1 ]] && { echo "n/a"; return; }
    if [[ $2 == le ]]; then fle "$1" "$3" && echo yes || echo no
    else fge "$1" "$3" && echo yes || echo no; fi
}

# ---- images -------------------------------------------------------------

# mk_dense PATH FORMAT MIB: an image whose every byte is data (pattern 0x5a, never zero).
mk_dense() {
    local path=$1 fmt=$2 mib=$3 off cmds=()
    qemu-img create -q -f "$fmt" "$path" "${mib}M"
    for ((off = 0; off < mib; off += 256)); do
        cmds+=(-c "write -P 0x5a ${off}M $((mib - off < 256 ? mib - off : 256))M")
    done
    qemu-io -f "$fmt" -t none "${cmds[@]}" "$path" >/dev/null
}
# mk_p2 PATH SIZE: the libvirt peer's disk shape: qcow2, 256 MiB at 0 and 256 MiB at 1 GiB.
mk_p2() {
    qemu-img create -q -f qcow2 "$1" "${2:-4G}"
    qemu-io -f qcow2 -t none -c 'write -P 0xab 0 256M' -c 'write -P 0xcd 1G 256M' "$1" >/dev/null
}
# alloc_bytes IMG: host allocation of an image (qemu-img actual-size)
alloc_bytes() { qemu-img info -U --output=json "$1" | jq '."actual-size"'; }
img_fmt() { qemu-img info -U --output=json "$1" | jq -r '.format'; }

# ---- QEMU ---------------------------------------------------------------

# disk_args ID IMG [FMT]: -blockdev/-device arguments for one cache=none virtio disk.
disk_args() {
    local id=$1 img=$2 fmt=${3:-$(img_fmt "$2")}
    printf '%s\n' -blockdev "driver=file,filename=$img,node-name=file-$id,cache.direct=on" \
        -blockdev "driver=$fmt,file=file-$id,node-name=drive-$id,cache.direct=on" \
        -device "virtio-blk-pci,drive=drive-$id,id=$id"
}
# node_args ID IMG [FMT [OPTS]]: a format node named ID without a device (a copy
# destination).  OPTS (e.g. discard=unmap) is added to both the file and the format
# node.
node_args() {
    local id=$1 img=$2 fmt=${3:-$(img_fmt "$2")} opts=${4:+,$4}
    printf '%s\n' -blockdev "driver=file,filename=$img,node-name=file-$id,cache.direct=on$opts" \
        -blockdev "driver=$fmt,file=file-$id,node-name=$id,cache.direct=on$opts"
}

# KVM when /dev/kvm is a device; else TCG (absolute figures then mean less: the
# guests' idle vCPUs compete with the copy for the host's CPUs).
if [[ -z ${BENCH_ACCEL:-} ]]; then
    if [[ -c /dev/kvm ]]; then BENCH_ACCEL=kvm; else BENCH_ACCEL=tcg; fi
fi

# vm_start NAME [ARGS...]: start a daemonized QEMU with two QMP sockets
# ($W/NAME.qmp for blkmig, $W/NAME-ctl.qmp for the bench).  Prefix with
# VM_NETNS=ns to run it inside a network namespace.
vm_start() {
    local name=$1
    shift
    rm -f "$W/$name.qmp" "$W/$name-ctl.qmp" "$W/$name.pid"
    local pre=()
    [[ -n ${VM_NETNS:-} ]] && pre=(ip netns exec "$VM_NETNS")
    "${pre[@]}" qemu-system-x86_64 -machine pc,accel="$BENCH_ACCEL" -m 256 -nodefaults -display none \
        "$@" \
        -qmp "unix:$W/$name.qmp,server=on,wait=off" \
        -qmp "unix:$W/$name-ctl.qmp,server=on,wait=off" \
        -daemonize -pidfile "$W/$name.pid" >/dev/null 2>"$W/$name.log" || {
        blog "QEMU $name did not start:"; cat "$W/$name.log" >&2; return 1; }
}
vm_pid() { cat "$W/$1.pid"; }
qmp() { "$BLKMIG" qmp --qmp "$W/$1-ctl.qmp" "${@:2}"; }

# vm_stop NAME: quit and wait for the process to go away.
vm_stop() {
    local name=$1 pid i
    [[ -e $W/$name.pid ]] || return 0
    pid=$(cat "$W/$name.pid")
    qmp "$name" quit >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$W/$name.pid"
}

# wait_idle NAME: wait until the (guest-less) VM stops burning CPU in SeaBIOS,
# like the libvirt peer does before it times a migration (max 20 s).
wait_idle() {
    local pid t0 t1 i hz
    pid=$(vm_pid "$1")
    hz=$(getconf CLK_TCK)
    for i in $(seq 40); do
        t0=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
        sleep 0.5
        t1=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
        # < 10 % of one CPU over 0.5 s
        (((t1 - t0) * 100 < hz * 5 / 10)) && return 0
    done
    blog "warning: $1 still busy after 20 s"
}

# bg_pid NAME PID: register a helper process for cleanup.
bg_pid() { echo "$2" >"$W/$1.pid"; }

# ---- blkmig -------------------------------------------------------------

# timed CMD...: run CMD, print its wall time in seconds on stdout; its own output goes
# to $W/last.out / $W/last.err.  Fails when CMD fails.
timed() {
    local t0 t1 rc=0
    t0=$(now)
    "$@" >"$W/last.out" 2>"$W/last.err" || rc=$?
    t1=$(now)
    if ((rc != 0)); then
        blog "command failed ($rc): $*"
        sed 's/^/    /' "$W/last.err" >&2
        return "$rc"
    fi
    fsub "$t1" "$t0"
}

# drop_caches: start every timed copy from the same cold page cache.
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# ---- the physical limit: dd with O_DIRECT ----------------------------------

# dd_limit BYTES [SRC]: seconds for `dd bs=4M iflag=direct oflag=direct conv=fsync`
# to copy BYTES (a multiple of 1 MiB) from SRC into a new file in $W (the same
# filesystem as the benchmark's images, BENCH_TMP), from a cold page cache.  SRC
# is a raw file holding at least BYTES of data; without it a dense file of BYTES
# is made once in $W and reused.  This is the storage's own copy rate, the
# physical limit a copy of BYTES of data can approach.
dd_limit() {
    local bytes=$1 src=${2:-} t
    if [[ -z $src ]]; then
        src=$W/dd-src-$bytes.raw
        [[ -e $src ]] || mk_dense "$src" raw $(((bytes + MiB - 1) / MiB))
    fi
    rm -f "$W/dd-dst.raw"
    drop_caches
    t=$(timed dd if="$src" of="$W/dd-dst.raw" bs=4M count="$bytes" iflag=direct,count_bytes \
        oflag=direct conv=fsync status=none) || return 1
    rm -f "$W/dd-dst.raw"
    echo "$t"
}

# dd_result ID WHAT SECONDS DD-SECONDS RATIO BYTES: the row "WHAT vs dd O_DIRECT
# (physical limit)", from medians of the blkmig and dd times and of their paired
# ratios; target <= 1.05 (issue 11: copies should come within 5 % of dd).
dd_result() {
    local rate
    rate=$(awk -v b="$6" -v t="$4" 'BEGIN { if (t > 0) printf "%.0f", b / t / 1048576; else print "?" }')
    result "$1" "$2 vs dd O_DIRECT (physical limit)" "$3 s" "$4 s (dd, $rate MiB/s)" "$5" \
        "<= 1.05" "$(met "$5" le 1.05)"
}

# peer_available: whether the libvirt peer script is there.
peer_available() { [[ -x $LIBVIRT_PEER || -r $LIBVIRT_PEER ]] && [[ -f $LIBVIRT_PEER ]]; }

# peer_run N ARGS...: run the libvirt peer, print its per-run seconds (one a line).
# The peer's start-up check `virsh capabilities | grep -q` under pipefail fails
# now and then (SIGPIPE into virsh: "host uuid check failed"), so a failed start
# is retried up to 4 times.
peer_run() {
    local n=$1 try
    shift
    for try in 1 2 3 4; do
        blog "libvirt peer: $LIBVIRT_PEER $n $* (attempt $try)"
        # libvirt runs the system's QEMU (7.2) even when blkmig's is first in PATH
        if PATH=${BENCH_SYSTEM_PATH:-$PATH} bash "$LIBVIRT_PEER" "$n" "$@" 2>"$W/peer.err" \
                >"$W/peer.out"; then
            break
        fi
        blog "libvirt peer failed: $(grep -v '^# +' "$W/peer.err" | grep ERROR | tail -n 1)"
        if ((try == 4)); then
            grep -v '^# +' "$W/peer.err" | tail -n 15 >&2
            return 1
        fi
        sleep 1
    done
    sed 's/^/    /' "$W/peer.out" >&2
    if grep -q 'failed=yes\|identical=no' "$W/peer.out"; then
        blog "libvirt peer reports a failed or non-identical run"
    fi
    sed -n 's/^libvirt_copy_storage_all[a-z0-9_]*_s=\([0-9.]*\).*/\1/p' "$W/peer.out"
}

# ---- live migration of the libvirt peer's VM shape (P2, P8) ---------------

# live_once SPEED: one live migration of a VM with a 4 GiB qcow2 holding 512 MiB
# (cache=none both sides, destination -incoming defer -S); prints the wall time of
# `blkmig migrate` (it returns once the destination runs) and checks the result.
live_once() {
    local speed=$1 t st a d sopt=()
    [[ -e $W/p2-src.qcow2 ]] || mk_p2 "$W/p2-src.qcow2"
    rm -f "$W/p2-dst.qcow2"
    qemu-img create -q -f qcow2 "$W/p2-dst.qcow2" 4G
    mapfile -t a < <(disk_args vda "$W/p2-src.qcow2" qcow2)
    mapfile -t d < <(disk_args vda "$W/p2-dst.qcow2" qcow2)
    vm_start lsrc "${a[@]}"
    vm_start ldst -S -incoming defer "${d[@]}"
    wait_idle lsrc
    drop_caches
    ((speed > 0)) && sopt=(--speed "$speed")
    t=$(timed "$BLKMIG" migrate -q --source "$W/lsrc.qmp" --dest "$W/ldst.qmp" "${sopt[@]}" ${BLKMIG_ARGS:-}) || return 1
    st=$(qmp ldst query-status | jq -r .status)
    [[ $st == running ]] || blog "warning: destination is $st, not running"
    vm_stop ldst
    vm_stop lsrc
    if ! qemu-img compare -q -U "$W/p2-src.qcow2" "$W/p2-dst.qcow2"; then
        blog "warning: destination image differs from the source"
    fi
    alloc_bytes "$W/p2-dst.qcow2" >"$W/live-alloc"
    echo "$t"
}

# live_bench ID WHAT SPEED TARGET PEER-ARGS...: paired blkmig / libvirt runs.  An
# unlimited run (SPEED 0) also gets the row ID-dd: blkmig vs dd O_DIRECT of the
# disk's 512 MiB of data (dd_limit), measured in the same run.
live_bench() {
    local id=$1 what=$2 speed=$3 target=$4 i
    shift 4
    local peer=() ours=() ratios=() dd_t=() dd_r=() p o r x alloc peer_msg="libvirt peer not available"
    if peer_available; then
        peer_msg="libvirt peer failed (see stderr)"
        mapfile -t peer < <(peer_run "$BENCH_RUNS" "$@" || true)
    else
        blog "libvirt peer not available ($LIBVIRT_PEER; set LIBVIRT_PEER=PATH)"
    fi
    for ((i = 0; i < BENCH_RUNS; i++)); do
        o=$(live_once "$speed") || bdie "blkmig live migration failed"
        ours+=("$o")
        alloc=$(($(cat "$W/live-alloc") / MiB))
        blog "run $((i + 1)): blkmig ${o} s (dst alloc ${alloc} MiB), libvirt ${peer[i]:-n/a} s"
        if ((speed == 0)); then
            x=$(dd_limit $((512 * MiB))) || bdie "dd failed"
            dd_t+=("$x") dd_r+=("$(fdiv "$o" "$x")")
            blog "run $((i + 1)): dd of the 512 MiB of data ${x} s"
        fi
        [[ -n ${peer[i]:-} ]] && ratios+=("$(fdiv "$o" "${peer[i]}")")
    done
    o=$(median "${ours[@]}")
    if ((${#ratios[@]} > 0)); then
        p=$(median "${peer[@]}") r=$(median "${ratios[@]}")
        result "$id" "$what" "$o s" "$p s (libvirt)" "$r" "<= $target" "$(met "$r" le "$target")"
    else
        result "$id" "$what" "$o s" "$peer_msg" "n/a" "<= $target" "n/a"
    fi
    if ((${#dd_t[@]} > 0)); then
        dd_result "$id-dd" "$what" "$o" "$(median "${dd_t[@]}")" "$(median "${dd_r[@]}")" $((512 * MiB))
    fi
}
