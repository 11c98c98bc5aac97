"""Timing helpers shared by the benchmarks (run as scripts from benchmarks/)."""
import statistics
import time


def settle(seconds=0.2):
    """Lets the other side's idle worker threads stop spinning (OpenMP pools
    busy-wait for a while after a parallel region) before a timing starts."""
    time.sleep(seconds)


def timed(fn, reps):
    fn()                                   # warm-up (allocates the workspace)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def timed_pair(ours, theirs, reps):
    """Median seconds of each, the two run alternately rep by rep, so a slow
    spell of a shared machine falls on both sides rather than on one."""
    ours()
    theirs()                               # warm-ups
    a, b = [], []
    for _ in range(reps):
        for fn, ts in ((ours, a), (theirs, b)):
            settle()
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return statistics.median(a), statistics.median(b)
