#!/bin/sh
# Captures QEMU's QMP schema (query-qmp-schema) for tests/unit/fake-qemu.c.
# Usage: capture-qmp-schema.sh BLKMIG [QEMU] > tests/unit/qmp-schema-7.2.json
# (QEMU 10.0: QEMU=$(./run.sh qemu10)/qemu-system-x86_64, into qmp-schema-10.0.json)
set -eu
blkmig=${1:?usage: $0 BLKMIG [QEMU]}
qemu=${2:-qemu-system-x86_64}
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
"$qemu" -machine none -nodefaults -display none -S \
  -qmp "unix:$dir/qmp.sock,server=on,wait=off" >/dev/null 2>&1 &
pid=$!
i=0
while [ ! -S "$dir/qmp.sock" ]; do
  i=$((i + 1))
  [ "$i" -lt 100 ] || { echo "$0: no QMP socket from $qemu" >&2; exit 1; }
  sleep 0.1
done
"$blkmig" qmp --qmp "$dir/qmp.sock" query-qmp-schema
"$blkmig" qmp --qmp "$dir/qmp.sock" quit >/dev/null 2>&1 || true
