# lib-netns.sh: shared by the shell tests that put two QEMUs in two network namespaces.
# Sourced; the caller sets SRC_NS DST_NS VETH_SRC VETH_DST and keeps NAMESPACES=()
# and a cleanup trap of its own.
# shellcheck shell=bash disable=SC2034  # ACCEL, N and FAILED are the caller's

skip_all() { echo "1..0 # SKIP $*"; exit 77; }
bail() { echo "Bail out! $*"; exit 1; }

# alive PID: the process exists and has not ended.  A daemonized QEMU's parent is
# init, which may reap it only a second or more after it exited: a zombie ('Z' in
# /proc/PID/stat) holds no files, sockets or locks any more, so it counts as gone.
alive() {
    local stat
    { stat=$(<"/proc/$1/stat"); } 2>/dev/null || return 1
    stat=${stat##*) }   # the command name may hold spaces and parentheses
    [[ ${stat:0:1} != [ZX] ]]
}

# pid_of PIDFILE: the QEMU's pid if it is still alive and still QEMU.
pid_of() {
    local pid
    [[ -s $1 ]] || return 1
    pid=$(<"$1")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/comm && $(</proc/"$pid"/comm) == qemu* ]] || return 1
    alive "$pid" || return 1
    echo "$pid"
}

stop_qemu() {   # stop_qemu PIDFILE
    local pid i
    pid=$(pid_of "$1") || return 0
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 250; i++)); do
        alive "$pid" || return 0
        sleep 0.02
    done
    kill -KILL "$pid" 2>/dev/null
    for ((i = 0; i < 100; i++)); do
        alive "$pid" || return 0
        sleep 0.02
    done
}

# ------------------------------------------------------------------------ TAP
N=0 FAILED=0
ok() {      # ok DESCRIPTION: a passed check
    N=$((N + 1))
    echo "ok $N - $1"
}
not_ok() {  # not_ok DESCRIPTION [DETAILS-FILE-OR-TEXT...]: a failed check
    local desc=$1 d
    shift
    N=$((N + 1)) FAILED=$((FAILED + 1))
    echo "not ok $N - $desc"
    for d in "$@"; do
        if [[ -f $d ]]; then sed 's/^/# /' "$d"; else printf '%s\n' "$d" | sed 's/^/# /'; fi
    done
}
check() {   # check DESCRIPTION COMMAND...: ok if the command succeeds
    local desc=$1 out
    shift
    if out=$("$@" 2>&1); then ok "$desc"; else not_ok "$desc" "$out"; fi
}
diag() { printf '# %s\n' "$*"; }

# netns_pair SRC_IP DST_IP: the two namespaces joined by a veth pair, links up.
netns_pair() {
    local ns_if
    ip netns add "$SRC_NS" || bail "ip netns add $SRC_NS failed"
    NAMESPACES+=("$SRC_NS")
    ip netns add "$DST_NS" || bail "ip netns add $DST_NS failed"
    NAMESPACES+=("$DST_NS")
    ip link add "$VETH_SRC" type veth peer name "$VETH_DST" || bail "cannot create a veth pair"
    ip link set "$VETH_SRC" netns "$SRC_NS" || bail "cannot move $VETH_SRC"
    ip link set "$VETH_DST" netns "$DST_NS" || bail "cannot move $VETH_DST"
    ip -n "$SRC_NS" addr add "$1/24" dev "$VETH_SRC" || bail "addr on $VETH_SRC"
    ip -n "$DST_NS" addr add "$2/24" dev "$VETH_DST" || bail "addr on $VETH_DST"
    for ns_if in "$SRC_NS:$VETH_SRC" "$DST_NS:$VETH_DST"; do
        ip -n "${ns_if%%:*}" link set lo up || bail "lo up in ${ns_if%%:*}"
        ip -n "${ns_if%%:*}" link set "${ns_if#*:}" up || bail "${ns_if#*:} up"
    done
}

# kvm when /dev/kvm is a device that opens, else tcg (<> alone would create a file)
ACCEL=tcg
if [[ -c /dev/kvm ]] && { exec 3<>/dev/kvm; } 2>/dev/null; then
    exec 3>&-
    ACCEL=kvm
fi

# wait_qmp NAME: QEMU NAME's QMP socket DIR/NAME.qmp appears within 10 s, or bail.
wait_qmp() {
    local i
    for ((i = 0; i < 100; i++)); do
        [[ -S $DIR/$1.qmp ]] && return 0
        sleep 0.1
    done
    bail "QEMU $1: no QMP socket"
}

# The checks below expect the caller's qmp SOCKET COMMAND [ARGS] helper and $BLKMIG.
vm_running() {  # vm_running SOCKET: the guest runs (waits up to 5 s)
    local out i
    for ((i = 0; i < 50; i++)); do
        out=$(qmp "$1" query-status 2>&1) || { echo "$out"; return 1; }
        grep -q '"status" : "running"' <<<"$out" && return 0
        sleep 0.1
    done
    echo "$out"
    return 1
}

no_block_jobs() {   # no_block_jobs SOCKET
    local out
    out=$("$BLKMIG" list --qmp "$1" 2>&1) || { echo "$out"; return 1; }
    grep -q '^Block jobs: none$' <<<"$out" || { echo "$out"; return 1; }
}

