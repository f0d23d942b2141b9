#!/usr/bin/env python3
"""Cost of the kernel's hash inserts and deletes, preallocated or not.

What BENCHMARKS.md ("Live update, seventh pass") cites for leaving the
policy hashes without preallocation: 10,000 batched inserts
(BPF_MAP_UPDATE_BATCH) and deletes (BPF_MAP_DELETE_BATCH) of 16-byte keys
into a fresh hash per variant, 20 rounds, times of the bpf(2) calls alone.
Needs root. Creates maps only (no program, no interface); they go when the
script ends.
"""
import ctypes
import os
import struct
import time

libc = ctypes.CDLL(None, use_errno=True)
SYS_BPF = 321  # x86_64
BPF_MAP_CREATE, BPF_MAP_UPDATE_BATCH, BPF_MAP_DELETE_BATCH = 0, 26, 27
BPF_MAP_TYPE_HASH, BPF_F_NO_PREALLOC = 1, 1
N, KEY, VALUE, ROUNDS = 10_000, 16, 8, 20


def bpf(cmd, attr):
    """bpf(2) with `attr` in a zeroed 128-byte union bpf_attr."""
    buf = ctypes.create_string_buffer(bytes(attr), 128)
    rc = libc.syscall(SYS_BPF, cmd, buf, 128)
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return rc


def create(capacity, flags):
    return bpf(BPF_MAP_CREATE,
               struct.pack("IIIII", BPF_MAP_TYPE_HASH, KEY, VALUE, capacity, flags))


def batch(cmd, fd, keys, values):
    attr = struct.pack(
        "QQQQIIQQ", 0, 0, ctypes.addressof(keys),
        ctypes.addressof(values) if values is not None else 0, N, fd, 0, 0)
    t = time.perf_counter()
    bpf(cmd, attr)
    return time.perf_counter() - t


def keys_of(round_):
    return ctypes.create_string_buffer(
        b"".join(struct.pack("QQ", round_, i) for i in range(N)), N * KEY)


def run(capacity, flags):
    fd = create(capacity, flags)
    inserts = deletes = 0.0
    values = ctypes.create_string_buffer(N * VALUE)
    for r in range(ROUNDS):
        inserts += batch(BPF_MAP_UPDATE_BATCH, fd, keys_of(r), values)
        if r > 0:
            deletes += batch(BPF_MAP_DELETE_BATCH, fd, keys_of(r - 1), None)
    os.close(fd)
    return inserts / ROUNDS * 1e3, deletes / (ROUNDS - 1) * 1e3


for capacity in (1 << 20, 1 << 16):
    for name, flags in (("no prealloc", BPF_F_NO_PREALLOC), ("prealloc", 0)):
        ins, dele = run(capacity, flags)
        print(f"capacity {capacity:>8} {name:>11}: 10,000 inserts {ins:5.2f} ms, "
              f"10,000 deletes {dele:5.2f} ms")
