#!/usr/bin/env python3
"""What an fdatasync costs when the write extends the file, and when it
overwrites space already written with zeros and synced (as a log with
pre-zeroed segments would): N writes of CHUNK bytes, each followed by
fdatasync, on the file system of DIR. Also times writing the zeros with
O_DIRECT. Results: docs/BENCHMARKS.md (issue #18, sixth round).

    python3 bench/overwrite.py                 # DIR=. N=3000 CHUNK=71680 ROUNDS=2
    DIR=/var/lib/weft N=1000 python3 bench/overwrite.py
"""
import mmap
import os
import time

DIR = os.environ.get("DIR", ".")
N = int(os.environ.get("N", "3000"))
CHUNK = int(os.environ.get("CHUNK", str(70 * 1024)))
ROUNDS = int(os.environ.get("ROUNDS", "2"))
PATH = os.path.join(DIR, "weft-overwrite-test.%d.bin" % os.getpid())
ZERO_BLOCK = 4 << 20


def zero_direct(path, length):
    """Writes `length` bytes of zeros (rounded up to 4 MiB) with O_DIRECT, then fdatasync."""
    fd = os.open(path, os.O_RDWR | os.O_DIRECT)
    try:
        buf = mmap.mmap(-1, ZERO_BLOCK)  # page-aligned, zero-filled: what O_DIRECT needs
        pos = 0
        while pos < length:
            os.pwritev(fd, [buf], pos)
            pos += ZERO_BLOCK
        os.fdatasync(fd)
    finally:
        os.close(fd)


def run(mode):
    fd = os.open(PATH, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
    try:
        if mode == "overwrite":
            t = time.perf_counter()
            zero_direct(PATH, N * CHUNK + ZERO_BLOCK)
            dt = time.perf_counter() - t
            mib = (N * CHUNK) / (1 << 20)
            print(f"  zeros with O_DIRECT: {mib:.0f} MiB in {dt * 1000:.0f} ms ({mib / dt:.0f} MiB/s)")
        buf = b"x" * CHUNK
        lat = []
        t = time.perf_counter()
        for i in range(N):
            t0 = time.perf_counter()
            os.pwrite(fd, buf, i * CHUNK)
            os.fdatasync(fd)
            lat.append(time.perf_counter() - t0)
        dt = time.perf_counter() - t
    finally:
        os.close(fd)
        os.unlink(PATH)
    lat.sort()
    print(f"{mode:9} {CHUNK} B writes: write+fdatasync avg {dt / N * 1e6:.0f} us, "
          f"p50 {lat[N // 2] * 1e6:.0f}, p99 {lat[N * 99 // 100] * 1e6:.0f}")


if __name__ == "__main__":
    print(f"overwrite.py: {N} writes of {CHUNK} B in {os.path.abspath(DIR)}; load {os.getloadavg()}")
    for _ in range(ROUNDS):
        run("extend")
        run("overwrite")
