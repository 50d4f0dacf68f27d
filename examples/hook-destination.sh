#!/bin/bash
# Destination-host migration hook: prepare, finish or abort one blkmig migration, cookie on stdin, new cookie on stdout.
#
# Run on the DESTINATION host, normally through ssh by hook-source.sh:
#
#   hook-destination.sh prepare --qmp DST.qmp --listen ADDR [--incoming URI]
#                               [--create-dir DIR]   < source.cookie > dest.cookie
#   hook-destination.sh finish  --qmp DST.qmp [--resume]   < result.cookie
#   hook-destination.sh abort   --qmp DST.qmp              < any.cookie
#
#   --qmp PATH        the destination QEMU's QMP socket
#   --listen ADDR     NBD server address: tcp:HOST:PORT (PORT 0 = any free port) or
#                     unix:PATH
#   --incoming URI    memory stream URI of a live migration (needed over TCP)
#   --create-dir DIR  create missing targets in DIR (copy and move modes)
#   --resume          finish: resume the destination guest even after a copy
#   --blkmig PATH     the blkmig binary (default: $BLKMIG, else blkmig)
#
# stdout carries only the cookie prepare writes (and nothing for finish and abort);
# progress and errors go to stderr.  The exit status is blkmig's (see
# docs/exit-codes.md), or 2 for a bad command line.
set -euo pipefail

PROG=hook-destination
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit "${2:-1}"; }
usage() {
    sed -n '3,/^set -euo/{/^#/p}' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

BLKMIG=${BLKMIG:-blkmig}
(($# > 0)) || usage
SUB=$1
shift
case $SUB in
prepare | finish | abort) ;;
-h | --help) usage ;;
*) die "unknown subcommand '$SUB' (prepare, finish or abort)" 2 ;;
esac

QMP='' LISTEN='' INCOMING='' CREATE_DIR='' RESUME=no INSECURE=no
while (($# > 0)); do
    opt=$1
    case $opt in
    -h | --help) usage ;;
    --resume)
        RESUME=yes
        shift
        continue
        ;;
    --insecure)
        INSECURE=yes
        shift
        continue
        ;;
    --qmp | --listen | --incoming | --create-dir | --blkmig)
        (($# >= 2)) || die "$opt needs a value" 2
        val=$2
        shift 2
        ;;
    --*=*)
        val=${opt#*=}
        opt=${opt%%=*}
        shift
        ;;
    *) die "unexpected argument '$opt'" 2 ;;
    esac
    case $opt in
    --qmp) QMP=$val ;;
    --listen) LISTEN=$val ;;
    --incoming) INCOMING=$val ;;
    --create-dir) CREATE_DIR=$val ;;
    --blkmig) BLKMIG=$val ;;
    *) die "unknown option '$opt'" 2 ;;
    esac
done
[[ -n $QMP ]] || die "--qmp is required" 2
if [[ $SUB != prepare && -n $LISTEN$INCOMING$CREATE_DIR ]]; then
    die "--listen, --incoming and --create-dir belong to prepare" 2
fi
[[ $SUB == finish || $RESUME == no ]] || die "--resume belongs to finish" 2

case $SUB in
prepare)
    [[ -n $LISTEN ]] || die "prepare needs --listen" 2
    args=(prepare --qmp "$QMP" --listen "$LISTEN")
    [[ -z $INCOMING ]] || args+=(--incoming "$INCOMING")
    [[ -z $CREATE_DIR ]] || args+=(--create-dir "$CREATE_DIR")
    [[ $INSECURE == no ]] || args+=(--insecure)
    # The cookie goes to a private file first, so that stdout carries either the
    # whole destination cookie or nothing at all.  If it cannot be handed over
    # (an error, a signal, the connection gone), this side undoes the prepare
    # itself: an abort with the source's cookie would not remove the exports.
    umask 077
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/blkmig-hook-dst.XXXXXX")
    prepare_exit() {
        local rc=$?
        trap - EXIT INT TERM HUP PIPE
        if ((rc != 0)) && [[ -s $WORK/dest.cookie ]]; then
            printf '%s: the destination cookie was not delivered; undoing the prepare\n' \
                "$PROG" >&2
            "$BLKMIG" abort --qmp "$QMP" -c "$WORK/dest.cookie" >&2 || true
        fi
        rm -rf "$WORK"
        exit "$rc"
    }
    trap prepare_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
    trap 'exit 141' PIPE
    # blkmig's stdout goes to stderr: nothing but the cookie may reach ours.
    "$BLKMIG" "${args[@]}" -o "$WORK/dest.cookie" >&2
    cat "$WORK/dest.cookie"
    ;;
finish)
    args=(finish --qmp "$QMP")
    [[ $RESUME == no ]] || args+=(--resume)
    "$BLKMIG" "${args[@]}" >&2
    ;;
abort)
    "$BLKMIG" abort --qmp "$QMP" >&2
    ;;
esac
