#!/bin/bash
# run.sh — install what is missing, build, test and demo blkmig (Debian 12).
set -euo pipefail

cd "$(dirname "$(readlink -f "$0")")"

# Everything the build, the tests, the demo and this script use.
DEPS=(
    qemu-system-x86 qemu-utils qemu-block-extra
    libglib2.0-dev libjson-glib-dev libnbd-dev libnbd-bin
    meson ninja-build pkg-config gcc libc6-dev
    iproute2 procps util-linux coreutils grep sed
    glib-networking openssl gettext-base systemd jq
)

usage() {
    cat <<'EOF'
Usage: ./run.sh COMMAND [ARGS...]

Commands:
  deps          install the Debian 12 packages that are missing (apt-get, as root)
  build         deps, then meson setup build --werror and ninja -C build
  test [ARGS]   deps + build, then all test suites (unit, integration), then a
                sanitizer build (ASan+UBSan) running the unit suite; ARGS go to
                the first `meson test`.  Ends with "N passed, N failed[, N skipped]".
                BLKMIG_TEST_SLOW=1 also runs the slow suite.
  demo          deps + build, then examples/demo.sh (a live migration between two
                local QEMUs, checked with qemu-img compare)
  bench [ARGS]  deps + build, then bench/run-all.sh ARGS (P1..P8 performance
                benchmarks, not part of `test`; --quick for one run each); prints
                one table, see docs/performance.md
  -h, --help    this text
EOF
}

log() { printf 'run.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

cmd_deps() {
    local missing=() p status
    for p in "${DEPS[@]}"; do
        status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
        [[ $status == installed ]] || missing+=("$p")
    done
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    log "installing: ${missing[*]}"
    local sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null || die "missing packages (${missing[*]}) and not root"
        sudo=(sudo)
    fi
    "${sudo[@]}" apt-get update || return 1
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}" || return 1
}

# setup_dir DIR ARGS...: meson setup, or reconfigure when DIR is already set up.
setup_dir() {
    local dir=$1
    shift
    if [[ -e $dir/meson-private/coredata.dat ]]; then
        meson setup --reconfigure "$dir" "$@"
    else
        meson setup "$dir" "$@"
    fi
}

# Explicit returns: cmd_test calls this in an `if`, where set -e does not apply.
cmd_build() {
    cmd_deps || return 1
    setup_dir build --werror || return 1
    ninja -C build || return 1
}

# Totals over every `meson test` run.
PASSED=0 FAILED=0 SKIPPED=0 STATUS=0

# summary_count LOG LABEL: the number meson printed after "LABEL:" (0 if absent).
summary_count() {
    local n
    n=$(sed -n "s/^$2:[[:space:]]*\([0-9][0-9]*\).*/\1/p" "$1" | tail -n 1)
    echo "${n:-0}"
}

# run_meson_test NAME ARGS...: run `meson test ARGS`, show its output, add its
# summary to the totals.  A run that fails without reporting a failed test (a
# build error, a meson error) counts as one failure.
run_meson_test() {
    local name=$1 out rc=0
    shift
    out=$(mktemp)
    log "$name: meson test $*"
    meson test "$@" 2>&1 | tee "$out" || rc=${PIPESTATUS[0]}

    local ok xfail fail upass skip tmo
    ok=$(summary_count "$out" 'Ok')
    xfail=$(summary_count "$out" 'Expected Fail')
    fail=$(summary_count "$out" 'Fail')
    upass=$(summary_count "$out" 'Unexpected Pass')
    skip=$(summary_count "$out" 'Skipped')
    tmo=$(summary_count "$out" 'Timeout')
    local failed=$((fail + tmo + upass))

    if ((rc != 0)) && grep -q '^No suitable tests defined' "$out"; then
        rc=0    # an empty suite is not a failure
    fi
    if ((rc != 0)); then
        STATUS=1
        if ((failed == 0)); then
            log "$name: meson test exited with status $rc (counted as 1 failure)"
            failed=1
        fi
    fi
    PASSED=$((PASSED + ok + xfail))
    FAILED=$((FAILED + failed))
    SKIPPED=$((SKIPPED + skip))
    rm -f "$out"
}

print_totals() {
    if ((SKIPPED > 0)); then
        echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
    else
        echo "$PASSED passed, $FAILED failed"
    fi
}

cmd_test() {
    if ! cmd_build; then
        log "build failed"
        FAILED=1
        print_totals
        exit 1
    fi

    # 1. Every suite but slow (unit + integration), extra arguments appended.
    run_meson_test tests -C build --print-errorlogs --no-suite slow "$@"

    # 2. Optionally the slow suite.
    if [[ ${BLKMIG_TEST_SLOW:-0} == 1 ]]; then
        run_meson_test slow -C build --print-errorlogs --suite slow
    fi

    # 3. Unit tests under AddressSanitizer + UndefinedBehaviorSanitizer.
    if setup_dir build-asan -Db_sanitize=address,undefined -Db_lundef=false \
            -Dintegration=false --werror; then
        ASAN_OPTIONS=detect_leaks=1 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
            run_meson_test sanitizers -C build-asan --suite unit --print-errorlogs
    else
        log "sanitizers: meson setup build-asan failed (counted as 1 failure)"
        STATUS=1
        FAILED=$((FAILED + 1))
    fi

    print_totals
    if ((STATUS != 0 || FAILED > 0)); then
        exit 1
    fi
}

cmd_demo() {
    cmd_build
    exec bash examples/demo.sh
}

cmd_bench() {
    cmd_build
    exec bash bench/run-all.sh "$@"
}

case ${1:-} in
    deps)  shift; cmd_deps ;;
    build) shift; cmd_build ;;
    test)  shift; cmd_test "$@" ;;
    demo)  shift; cmd_demo ;;
    bench) shift; cmd_bench "$@" ;;
    ''|-h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
esac
