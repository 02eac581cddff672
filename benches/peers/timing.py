"""Device timing shared by the PyTorch peers: the same method as our benchmarks (regions of REPS
back-to-back calls timed with CUDA events, µs per call, median over runs)."""
import statistics

import torch

REPS = 10  # calls per timed region, back to back, as in our benchmark


def median_us(fn, runs):
    """fn(i) is called with a running index so callers can rotate inputs past L2."""
    times = []
    for i in range(runs):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for r in range(REPS):
            fn(i * REPS + r)
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) * 1e3 / REPS)
    return statistics.median(times)
