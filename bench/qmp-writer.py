#!/usr/bin/env python3
# bench/qmp-writer.py: sequential guest writes through a disk's own BlockBackend (HMP qemu-io over one QMP connection), timed.
#
# Usage: qmp-writer.py SOCKET SECONDS SIZE DISK[,DISK...] [OFFSET_MIB]
# Writes SIZE bytes at a time, one at a time, round-robin over the disks (qdev ids),
# each disk sequentially from OFFSET_MIB (wrapping at 64 MiB past it), for SECONDS.
# Prints one JSON line: writes, bytes, seconds, MB/s, latency median/p99 in ms and
# first/last write times (epoch seconds).  HMP qemu-io writes even while the VM is
# stopped, and each one holds QEMU's main loop; a guest's vCPUs stop with the VM, so
# the writer waits (its QMP connection gets the STOP and RESUME events) as they
# would: at most the write already sent lands in a pause.
import json, socket, sys, time

def main():
    path, seconds, size, disks = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(",")
    base = int(sys.argv[5]) * 1048576 if len(sys.argv) > 5 else 0
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    f = s.makefile("rw")
    state = {"stopped": False}
    def event(r):
        if r.get("event") == "STOP":
            state["stopped"] = True
        elif r.get("event") == "RESUME":
            state["stopped"] = False
    def call(cmd, args=None):
        f.write(json.dumps({"execute": cmd, "arguments": args or {}}) + "\n"); f.flush()
        while True:
            r = json.loads(f.readline())
            if "return" in r or "error" in r:
                return r
            event(r)
    def running():
        while state["stopped"]:
            event(json.loads(f.readline()))
    json.loads(f.readline())
    call("qmp_capabilities")
    lat, n, t0 = [], 0, time.time()
    first = t0
    while time.time() - t0 < seconds:
        disk = disks[n % len(disks)]
        off = base + ((n // len(disks)) * size) % (64 * 1048576)
        line = 'qemu-io -d /machine/peripheral/%s/virtio-backend "write -P %d %d %d"' % (disk, n % 250 + 1, off, size)
        running()
        a = time.time()
        r = call("human-monitor-command", {"command-line": line})
        lat.append(time.time() - a)
        if "error" in r or r.get("return"):
            sys.exit("write failed: %s" % r)
        n += 1
    t = time.time() - t0
    lat.sort()
    print(json.dumps({"writes": n, "bytes": n * size, "seconds": round(t, 3),
                      "mbps": round(n * size / t / 1e6, 2),
                      "lat_median_ms": round(lat[len(lat) // 2] * 1000, 3),
                      "lat_p99_ms": round(lat[(len(lat) * 99) // 100] * 1000, 3),
                      "first": first, "last": time.time()}))

main()
