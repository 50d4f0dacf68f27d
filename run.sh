#!/bin/bash
# run.sh — install what is missing, build, test and demo blkmig (Debian 12).
set -euo pipefail

cd "$(dirname "$(readlink -f "$0")")"

# Everything the build, the tests, the demo and this script use.
DEPS=(
    qemu-system-x86 qemu-utils qemu-block-extra
    libglib2.0-dev libjson-glib-dev libnbd-dev libnbd-bin libzstd-dev
    meson ninja-build pkg-config gcc libc6-dev
    iproute2 procps util-linux coreutils grep sed
    glib-networking openssl gettext-base systemd jq
    clang-14 libclang-rt-14-dev
)

usage() {
    cat <<'EOF'
Usage: ./run.sh COMMAND [ARGS...]

Commands:
  deps          install the Debian 12 packages that are missing (apt-get, as root)
  build         deps, then meson setup build --werror and ninja -C build
  test [ARGS]   deps + build, then all test suites (unit, integration, security)
                on the system's QEMU 7.2, the integration and security suites
                again on QEMU 10.0 (see qemu10), then a sanitizer build
                (ASan+UBSan) running the unit suite; ARGS go to both QEMUs'
                `meson test`.  Ends with "N passed, N failed[, N skipped]".
                BLKMIG_TEST_SLOW=1 also runs the slow suite.  Last, every fuzz
                harness for BLKMIG_TEST_FUZZ_SECONDS seconds each (default 5,
                0 skips it); each harness counts as one test.
  fuzz [SECONDS]
                deps, then build the libFuzzer harnesses (clang, ASan+UBSan, in
                build-fuzz) and run each for SECONDS (default 60); prints execs
                and crashes per harness, exits 1 on any crash, leak or hang.
                Crash inputs go to build-fuzz/artifacts/NAME/, new corpus entries
                to build-fuzz/corpus/NAME/ (tests/fuzz/README.md)
  demo          deps + build, then examples/demo.sh (a live migration between two
                local QEMUs, checked with qemu-img compare)
  bench [--qemu 7.2|10.0|all] [ARGS]
                deps + build, then bench/run-all.sh ARGS (P1..P11 performance
                benchmarks, not part of `test`; --quick for one run each,
                --only=P1,P3 for some) once per chosen QEMU (default all: the
                system's 7.2, then 10.0, see qemu10), that QEMU first in PATH;
                prints one table per QEMU, see docs/performance.md
  qemu10        fetch QEMU 10.0 (Debian bookworm-backports) into a cache outside the
                tree (BLKMIG_QEMU_CACHE, default ~/.cache/blkmig) and print the
                directory of its wrappers (qemu-system-x86_64, qemu-img, qemu-io,
                qemu-nbd, qemu-storage-daemon); `test` does this itself
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

# ---- QEMU 10.0 beside the system's 7.2 (issue 11) ----------------------------

# Debian's own QEMU 10.0 build for bookworm, from bookworm-backports, unpacked
# into a cache outside the tree (kept between runs); the system's QEMU is not
# touched.  BLKMIG_QEMU_CACHE overrides the cache directory.
QEMU10_PACKAGES=(qemu-system-x86 qemu-system-common qemu-system-data qemu-utils)
QEMU10_TOOLS=(qemu-system-x86_64 qemu-img qemu-io qemu-nbd qemu-storage-daemon)
QEMU10_DIR=${BLKMIG_QEMU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/blkmig}/qemu-10.0

# qemu10_ok DIR: DIR/bin holds working QEMU 10.0 wrappers.
qemu10_ok() {
    "$1/bin/qemu-system-x86_64" -machine none -nodefaults -display none --version \
        2>/dev/null | grep -q '^QEMU emulator version 10\.0\.' &&
        "$1/bin/qemu-img" --version 2>/dev/null | grep -q '^qemu-img version 10\.0\.'
}

# qemu10_wrappers DIR: DIR/bin/TOOL runs DIR/root's TOOL with its own modules and,
# for the emulator, its own firmware directory (-L).
qemu10_wrappers() {
    local dir=$1 root tool extra
    root=$(readlink -f "$dir/root")
    mkdir -p "$dir/bin"
    for tool in "${QEMU10_TOOLS[@]}"; do
        extra=''
        [[ $tool == qemu-system-x86_64 ]] && extra=" -L $(printf %q "$root/usr/share/qemu")"
        printf '#!/bin/sh\n# %s of QEMU 10.0 (bookworm-backports), unpacked by run.sh\n' "$tool" \
            >"$dir/bin/$tool"
        printf 'QEMU_MODULE_DIR=%q; export QEMU_MODULE_DIR\nexec %q%s "$@"\n' \
            "$root/usr/lib/x86_64-linux-gnu/qemu" "$root/usr/bin/$tool" "$extra" >>"$dir/bin/$tool"
        chmod 755 "$dir/bin/$tool"
    done
}

# qemu10_fetch: makes $QEMU10_DIR (apt-get download against a private sources
# list, dpkg-deb -x), built aside and renamed into place, so no half-made cache.
qemu10_fetch() {
    qemu10_ok "$QEMU10_DIR" && return 0
    log "fetching QEMU 10.0 from bookworm-backports into $QEMU10_DIR"
    mkdir -p "$(dirname "$QEMU10_DIR")" || return 1
    local tmp p
    tmp=$(mktemp -d "$QEMU10_DIR.new.XXXXXX") || return 1
    mkdir -p "$tmp"/{apt/lists/partial,apt/cache/archives/partial,debs,root}
    echo 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main' \
        >"$tmp/apt/sources.list"
    local apt=(-o "Dir::Etc::SourceList=$tmp/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
               -o "Dir::State::Lists=$tmp/apt/lists" -o "Dir::Cache=$tmp/apt/cache"
               -o APT::Sandbox::User=root -qq)
    if apt-get "${apt[@]}" update &&
       (cd "$tmp/debs" && apt-get "${apt[@]}" download "${QEMU10_PACKAGES[@]/%//bookworm-backports}"); then
        for p in "$tmp"/debs/*.deb; do dpkg-deb -x "$p" "$tmp/root" || break; done
        rm -rf "$tmp/apt" "$tmp/debs"
        qemu10_wrappers "$tmp"
        if qemu10_ok "$tmp"; then
            rm -rf "$QEMU10_DIR" && mv "$tmp" "$QEMU10_DIR" && qemu10_wrappers "$QEMU10_DIR" && return 0
        fi
    fi
    log "could not set up QEMU 10.0 in $QEMU10_DIR"
    rm -rf "$tmp"
    return 1
}

# qemu_version BINDIR: "7.2.22" for BINDIR/qemu-system-x86_64.
qemu_version() {
    "$1/qemu-system-x86_64" --version 2>/dev/null |
        sed -n 's/^QEMU emulator version \([0-9.]*\).*/\1/p'
}

# Totals over every `meson test` run.
PASSED=0 FAILED=0 SKIPPED=0 STATUS=0 SUMMARY=()

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
    SUMMARY+=("$name: $((ok + xfail)) passed, $failed failed, $skip skipped")
    rm -f "$out"
}

print_totals() {
    local line
    for line in "${SUMMARY[@]}"; do log "$line"; done
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

    # 1. Every suite but slow (unit, integration, security) on the system's QEMU;
    #    extra arguments appended.  Tests that need a second QEMU (version skew)
    #    get QEMU 10.0 as the other one.
    local q7 q10=''
    q7=$(qemu_version /usr/bin)
    if qemu10_fetch; then
        q10=$(qemu_version "$QEMU10_DIR/bin")
    else
        SUMMARY+=("QEMU 10.0: could not be fetched (counted as 1 failure)")
        STATUS=1 FAILED=$((FAILED + 1))
    fi
    BLKMIG_TEST_OTHER_QEMU=${q10:+$QEMU10_DIR/bin} \
        run_meson_test "tests on QEMU $q7" -C build --print-errorlogs --no-suite slow "$@"

    # 1b. The integration suite once more on QEMU 10.0 (the system's is the other);
    #     not the version-skew one (suite skew, test-qemus): it already migrated both
    #     ways between the two in step 1; nor suite once (blkmig's own machinery,
    #     tests/integration/meson.build), nor suite security (blkmig's refusals of
    #     hostile peers), for the time budget.  BLKMIG_TEST_SECOND_PASS
    #     lets a test leave out (as skipped, saying so) the cases whose subject is
    #     blkmig's own machinery (test-faults: signals and refusals).
    if [[ -n $q10 ]]; then
        PATH=$QEMU10_DIR/bin:$PATH BLKMIG_TEST_OTHER_QEMU=/usr/bin BLKMIG_TEST_SECOND_PASS=1 \
            run_meson_test "integration on QEMU $q10" -C build --print-errorlogs \
            --suite integration --no-suite skew --no-suite once "$@"
    fi

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

    # 4. Each fuzz harness for a short fixed time: a parser regression fails.  Two
    #    at a time (one per core of a CI machine): each still gets a core's worth.
    local fuzz_seconds=${BLKMIG_TEST_FUZZ_SECONDS:-5} name i pids=()
    if ((fuzz_seconds > 0)); then
        if fuzz_build; then
            for ((i = 0; i < ${#FUZZ_HARNESSES[@]}; i += 2)); do
                pids=()
                for name in "${FUZZ_HARNESSES[@]:i:2}"; do
                    fuzz_run "$name" "$fuzz_seconds" & pids+=($!)
                done
                for name in "${pids[@]}"; do
                    if wait "$name"; then
                        PASSED=$((PASSED + 1))
                    else
                        FAILED=$((FAILED + 1))
                    fi
                done
            done
        else
            log "fuzz: building the harnesses failed (counted as 1 failure)"
            FAILED=$((FAILED + 1))
        fi
    fi

    print_totals
    if ((STATUS != 0 || FAILED > 0)); then
        exit 1
    fi
}

# ---- fuzzing (tests/fuzz) ----------------------------------------------------

FUZZ_HARNESSES=(cookie qmp tunnel tunnel-listener)

# Builds only the harnesses, with clang, under ASan+UBSan, in build-fuzz.
fuzz_build() {
    CC=clang-14 setup_dir build-fuzz -Dfuzzing=true -Dintegration=false \
        -Db_sanitize=address,undefined -Db_lundef=false || return 1
    ninja -C build-fuzz "${FUZZ_HARNESSES[@]/#/tests/fuzz/fuzz-}" || return 1
    mkdir -p "${FUZZ_HARNESSES[@]/#/build-fuzz/artifacts/}" \
        "${FUZZ_HARNESSES[@]/#/build-fuzz/corpus/}"
}

# fuzz_run NAME SECONDS: runs one harness; prints one line; fails on a crash.
# New inputs go to build-fuzz/corpus/NAME (first corpus: the one libFuzzer
# writes to), the seeds in the tree are only read.
fuzz_run() {
    local name=$1 seconds=$2 kind=${1%-listener} out rc=0
    local seeds=tests/fuzz/corpus/$kind    # tunnel-listener: the tunnel's seeds
    [[ $name == cookie ]] && seeds=tests/golden/cookie
    out=build-fuzz/fuzz-$name.log
    local before start=$SECONDS
    before=$(find "build-fuzz/artifacts/$name" -type f | wc -l)
    ASAN_OPTIONS=detect_leaks=1 \
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        timeout $((seconds + 120)) "build-fuzz/tests/fuzz/fuzz-$name" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -dict="tests/fuzz/$kind.dict" -artifact_prefix="build-fuzz/artifacts/$name/" \
        -print_final_stats=1 "build-fuzz/corpus/$name" "$seeds" >"$out" 2>&1 || rc=$?
    local runs rate crashes
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$out" | tail -n 1)
    crashes=$(( $(find "build-fuzz/artifacts/$name" -type f | wc -l) - before ))
    if ((rc != 0 && crashes == 0)); then
        crashes=1    # died without an artifact (timeout(1), a harness check)
    fi
    echo "fuzz-$name: ${runs:-?} execs in $((SECONDS - start)) s (${rate:-?}/s), $crashes crashes"
    if ((crashes > 0)); then
        # the sanitizer's verdict, or the GLib critical / harness check behind an abort
        grep -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error|.*harness check failed|[A-Za-z-]+: .*assertion)' "$out" \
            | head -n 5 >&2 || true
        log "fuzz-$name: see $out; inputs in build-fuzz/artifacts/$name/"
        return 1
    fi
}

cmd_fuzz() {
    local seconds=${1:-60} failed=0 name
    [[ $seconds =~ ^[0-9]+$ ]] && ((seconds > 0)) || die "fuzz: SECONDS must be a positive number"
    cmd_deps || die "fuzz: installing dependencies failed"
    fuzz_build || die "fuzz: building the harnesses failed"
    for name in "${FUZZ_HARNESSES[@]}"; do
        fuzz_run "$name" "$seconds" || failed=$((failed + 1))
    done
    if ((failed > 0)); then
        log "fuzz: $failed of ${#FUZZ_HARNESSES[@]} harnesses crashed"
        exit 1
    fi
}

cmd_demo() {
    cmd_build
    exec bash examples/demo.sh
}

# cmd_bench [--qemu 7.2|10.0|all] [ARGS...]: bench/run-all.sh ARGS once per chosen
# QEMU, with that QEMU first in PATH (7.2: the system's /usr/bin; 10.0: the cached
# wrappers of qemu10_fetch).  Fails when a chosen QEMU is missing or a run fails.
cmd_bench() {
    local which=all args=()
    while (($# > 0)); do
        case $1 in
            --qemu) (($# >= 2)) || die "bench: --qemu needs 7.2, 10.0 or all"
                    which=$2; shift 2 ;;
            --qemu=*) which=${1#--qemu=}; shift ;;
            *) args+=("$1"); shift ;;
        esac
    done
    local dirs=()
    case $which in
        7.2) dirs=(/usr/bin) ;;
        10.0) dirs=(qemu10) ;;
        all) dirs=(/usr/bin qemu10) ;;
        *) die "bench: --qemu takes 7.2, 10.0 or all, not '$which'" ;;
    esac
    cmd_build
    local dir version status=0
    for dir in "${dirs[@]}"; do
        if [[ $dir == qemu10 ]]; then
            qemu10_fetch || die "bench: QEMU 10.0 could not be fetched"
            dir=$QEMU10_DIR/bin
        fi
        version=$(qemu_version "$dir")
        [[ -n $version ]] || die "bench: no working qemu-system-x86_64 in $dir"
        log "bench on QEMU $version ($dir)"
        BENCH_SYSTEM_PATH=$PATH PATH=$dir:$PATH bash bench/run-all.sh "${args[@]}" || {
            log "bench on QEMU $version: bench/run-all.sh exited with status $?"
            status=1
        }
    done
    return "$status"
}

case ${1:-} in
    deps)  shift; cmd_deps ;;
    build) shift; cmd_build ;;
    test)  shift; cmd_test "$@" ;;
    demo)  shift; cmd_demo ;;
    bench) shift; cmd_bench "$@" ;;
    fuzz)  shift; cmd_fuzz "$@" ;;
    qemu10) shift; qemu10_fetch && echo "$QEMU10_DIR/bin" ;;
    ''|-h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
esac
