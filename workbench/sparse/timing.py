"""The timing protocol of the Balanced Sparsity (Yao et al., AAAI 2019) measurements — benchmark, crossover table,
dashboard; the paper reports kernel times only, without a protocol for shared CPUs. Each method
runs in its own *block* of consecutive calls, started after a pause so the thread pools of the method before it
(OpenBLAS threads spin after a call; on 2 cores a threaded kernel timed right after numpy loses its cores) have gone
idle; blocks are repeated in shuffled rounds and medians reported. Caches can be flushed before every call."""
from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Mapping


def timed_blocks(fns: Mapping[str, Callable[[], object]], *, rounds: int = 5, block: int = 5, settle: float = 0.3,
                 setup: Callable[[], None] | None = None, sync: Callable[[], None] | None = None, warmup: int = 1,
                 seed: int = 0, max_seconds: float | None = None, block_warmup: int = 0) -> dict[str, list[float]]:
    """``{name: [seconds per call]}``: ``rounds`` rounds; in each, every method (shuffled order) runs ``block`` timed
    calls after ``settle`` seconds of sleep; ``setup`` (e.g. a cache flush) runs before every call, untimed.
    ``max_seconds`` stops after the round that exceeds it (at least 2 rounds). ``block_warmup`` untimed calls open
    every block (after the pause): on a VM a thread pool whose vCPU went idle during the pause can take a timer tick
    (~4 ms here) to wake, once or twice — real for a cold start, not for a layer inside a running model."""
    if rounds < 1 or block < 1:
        raise ValueError("rounds and block must be >= 1")
    names = list(fns)
    for _ in range(warmup):
        for k in names:
            fns[k]()
            if sync:
                sync()
    rng = random.Random(seed)
    out: dict[str, list[float]] = {k: [] for k in names}
    start = time.perf_counter()
    for r in range(rounds):
        order = names[:]
        rng.shuffle(order)
        for k in order:
            if settle > 0:
                time.sleep(settle)
            f = fns[k]
            for _ in range(block_warmup):
                f()
                if sync:
                    sync()
            for _ in range(block):
                if setup:
                    setup()
                if sync:
                    sync()
                t0 = time.perf_counter()
                f()
                if sync:
                    sync()
                out[k].append(time.perf_counter() - t0)
        if max_seconds is not None and r >= 1 and time.perf_counter() - start > max_seconds:
            break
    return out


def median(samples) -> float:
    return statistics.median(samples)
