#!/usr/bin/env python3
"""Python's multiprocessing, measured as bench_queue_peers measures tether.

    python3 mp_bench.py [--quick] [--tsv]

Rows: Queue put + get in one process (ns per pair); Queue round trip of a
64-byte bytes object between two processes pinned to CPU 0 and CPU 1
(median, p99, p99.9); Value locked increment, `with v.get_lock():
v.value += 1` (ns); Manager().dict() get and set (ns per call). Each
per-call figure is the median of several rounds. Standard library only.

--tsv prints one row a line, for bench_queue_peers to read:
    info<TAB>key<TAB>text
    call<TAB>name<TAB>ns
    rtt<TAB>name<TAB>median_ns<TAB>p99_ns<TAB>p999_ns<TAB>samples
"""

import argparse
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from multiprocessing.managers import SyncManager


def cpu_pair():
    n = os.cpu_count() or 1
    return 0, (1 if n > 1 else 0)


def pin(cpu):
    # Where affinity cannot be set (another OS, a restricted cpuset) the
    # figures are still taken, only noisier.
    try:
        os.sched_setaffinity(0, {cpu})
    except (AttributeError, OSError):
        pass


def percentile(sorted_values, per_mille):
    i = min(len(sorted_values) - 1, len(sorted_values) * per_mille // 1000)
    return sorted_values[i]


def queue_put_get(rounds, n):
    q = mp.Queue()
    msg = bytes(64)
    put, get = q.put, q.get
    for _ in range(100):  # the feeder thread starts on the first put
        put(msg)
        get()
    per = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            put(msg)
            get()
        per.append((time.perf_counter_ns() - t0) / n)
    q.close()
    q.join_thread()
    return statistics.median(per)


def echo(ping, pong, cpu):
    pin(cpu)
    get, put = ping.get, pong.put
    while True:
        m = get()
        if m is None:
            return
        put(m)


def queue_round_trip(trips, warmup, cpu_b):
    ping, pong = mp.Queue(), mp.Queue()
    peer = mp.Process(target=echo, args=(ping, pong, cpu_b))
    peer.start()
    msg = bytes(64)
    put, get = ping.put, pong.get
    samples = []
    clock = time.perf_counter_ns
    for i in range(warmup + trips):
        t0 = clock()
        put(msg)
        msg = get()
        dt = clock() - t0
        if i >= warmup:
            samples.append(dt)
    ping.put(None)
    peer.join()
    for q in (ping, pong):
        q.close()
        q.join_thread()
    if peer.exitcode != 0:
        raise RuntimeError(f"echo process exited with {peer.exitcode}")
    return sorted(samples)


def value_increment(rounds, n):
    v = mp.Value("q", 0)
    per = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            with v.get_lock():
                v.value += 1
        per.append((time.perf_counter_ns() - t0) / n)
    if v.value != rounds * n:
        raise RuntimeError("Value lost increments")
    return statistics.median(per)


def manager_dict(rounds, n, cpu_b):
    # The manager's server process goes to the other CPU, as every peer's
    # other end does.
    manager = SyncManager()
    manager.start(initializer=pin, initargs=(cpu_b,))
    try:
        d = manager.dict()
        keys = [f"key-{i:06}" for i in range(1000)]
        for i, k in enumerate(keys):
            d[k] = i
        gets, sets = [], []
        for _ in range(rounds):
            t0 = time.perf_counter_ns()
            for i in range(n):
                d[keys[i % 1000]]
            gets.append((time.perf_counter_ns() - t0) / n)
            t0 = time.perf_counter_ns()
            for i in range(n):
                d[keys[i % 1000]] = i
            sets.append((time.perf_counter_ns() - t0) / n)
        return statistics.median(gets), statistics.median(sets)
    finally:
        manager.shutdown()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds, for a smoke test")
    parser.add_argument("--tsv", action="store_true", help="rows for bench_queue_peers")
    args = parser.parse_args()

    cpu_a, cpu_b = cpu_pair()
    pin(cpu_a)
    rounds = 2 if args.quick else 5
    scale = 10 if args.quick else 1

    info = {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "start_method": mp.get_start_method(),
    }
    calls, rtts = [], []
    calls.append(("mp.Queue put + get, one process", queue_put_get(rounds, 20000 // scale)))
    trips = 10000 // scale
    s = queue_round_trip(trips, 200 // scale, cpu_b)
    rtts.append(("mp.Queue round trip, 64 B", s))
    calls.append(
        ("mp.Value: with get_lock(): value += 1", value_increment(rounds, 200000 // scale))
    )
    get_ns, set_ns = manager_dict(rounds, 5000 // scale, cpu_b)
    calls.append(("mp.Manager().dict() get, 10-byte key", get_ns))
    calls.append(("mp.Manager().dict() set, replacing an int", set_ns))

    if args.tsv:
        for k, v in info.items():
            print(f"info\t{k}\t{v}")
        for name, ns in calls:
            print(f"call\t{name}\t{ns:.1f}")
        for name, s in rtts:
            med, p99, p999 = s[len(s) // 2], percentile(s, 990), percentile(s, 999)
            print(f"rtt\t{name}\t{med}\t{p99}\t{p999}\t{len(s)}")
        return 0
    print(f"multiprocessing on {info['python']}, start method {info['start_method']}")
    for name, s in rtts:
        med, p99, p999 = s[len(s) // 2], percentile(s, 990), percentile(s, 999)
        print(
            f"  {name:<44} median {med:8.0f} ns  p99 {p99:8.0f} ns  p99.9 {p999:8.0f} ns"
            f"  one-way {med / 2:6.0f} ns"
        )
    for name, ns in calls:
        print(f"  {name:<52} {ns:8.1f} ns")
    return 0


if __name__ == "__main__":
    sys.exit(main())
