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


def timed_all(fns, reps):
    """Median seconds of each of fns, run round-robin rep by rep (as timed_pair)."""
    for fn in fns:
        fn()                               # warm-ups
    ts = [[] for _ in fns]
    for _ in range(reps):
        for fn, t in zip(fns, ts):
            settle()
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in ts]


def compiled(torch, module, what, enabled):
    """torch.compile(module) (inductor, CPU), or None when not enabled.

    Compiling happens at the first call of each new input shape; callers time
    that call on its own (compile_seconds) and leave it out of the per-step
    figures."""
    if not enabled:
        return None
    try:
        return torch.compile(module, backend="inductor", dynamic=False)
    except Exception as exc:  # noqa: BLE001 - a benchmark reports and goes on
        print(f"  ({what}: torch.compile unavailable: {exc})")
        return None


def compile_seconds(fn):
    """Wall time of fn's first call (the compile, for a torch.compile'd fn)."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
