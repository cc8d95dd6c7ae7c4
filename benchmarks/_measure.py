"""Measurement helpers for ``benchmarks/speed.py``: timing statistics and peak resident memory on CPU.

CPU tensors have no allocator statistics (``torch.cuda.max_memory_allocated`` has no CPU twin), so peak memory is
read from the kernel: ``VmHWM`` (the resident-set high-water mark) in ``/proc/self/status``, which Linux lets a
process reset by writing ``5`` to ``/proc/self/clear_refs``. Where that is not possible (another OS, a locked-down
``/proc``) a psutil thread samples the RSS every millisecond instead (it can miss short spikes).

Freed memory only lowers the RSS if the allocator gives it back to the kernel. glibc serves large blocks with
``mmap`` and unmaps them on ``free`` once they exceed ``M_MMAP_THRESHOLD``, but that threshold grows dynamically up to
32 MiB after large blocks are freed, after which freed activations stay in the heap and hide later peaks. The probe
process is therefore started with ``MALLOC_MMAP_THRESHOLD_`` fixed (which also disables the dynamic growth) and calls
``malloc_trim(0)`` before it reads its baseline.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import os
import re
import statistics
import subprocess
import threading
import time
from collections.abc import Callable

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is a benchmark dependency
    psutil = None

MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of one call of ``fn`` (its result is dropped before returning).

    The CPU time counts what this process computed, not the time it waited while other processes had the cores, so
    on a shared machine with one intra-op thread it is the steadier of the two (memory-bandwidth and cache contention
    still show in both).
    """
    cpu0 = time.process_time()
    start = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    del result
    return elapsed, cpu


def rss() -> int:
    """Current resident set size in bytes."""
    if psutil is not None:
        return psutil.Process().memory_info().rss
    with open("/proc/self/statm") as f:  # pragma: no cover
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def trim() -> None:
    """Collect garbage and hand freed heap memory back to the kernel (glibc only; a no-op elsewhere)."""
    gc.collect()
    name = ctypes.util.find_library("c")
    if name:
        try:
            ctypes.CDLL(name).malloc_trim(0)
        except (OSError, AttributeError):  # pragma: no cover - not glibc
            pass


def _hwm() -> int | None:
    try:
        with open("/proc/self/status") as f:
            m = re.search(r"VmHWM:\s+(\d+)\s+kB", f.read())
        return int(m.group(1)) * 1024 if m else None
    except OSError:  # pragma: no cover
        return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    hwm = _hwm()
    return hwm is not None and hwm <= rss() + (1 << 20)


class PeakRSS:
    """Context manager: ``peak`` is the highest RSS (bytes) reached inside the block; ``method`` says how."""

    def __init__(self) -> None:
        self.peak = 0
        self.method = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakRSS:
        if _reset_hwm():
            self.method = "VmHWM (clear_refs)"
        else:
            self.method = "psutil sampling 1 ms"
            self.peak = rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss())
            time.sleep(0.001)

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, rss())
        else:
            self.peak = max(_hwm() or 0, rss())


def call_peak(fn: Callable[[], object], calls: int = 1) -> tuple[int, str]:
    """``(bytes, how)``: the highest peak RSS of ``calls`` calls of ``fn``, each above the (trimmed) RSS just before
    it; ``how`` is ``PeakRSS.method``. Results are dropped inside the measured block."""
    peaks, how = [], ""
    for _ in range(calls):
        trim()
        base = rss()
        with PeakRSS() as peak:
            out = fn()
            del out
        peaks.append(peak.peak - base)
        how = peak.method
    return max(peaks), how


def probe_process(cmd: list[str], timeout: float | None = None) -> dict:
    """Run a memory probe ``cmd`` in a fresh process with :data:`MALLOC_ENV` and return the JSON record on the last
    line of its output. Raises ``subprocess.CalledProcessError`` (``stderr`` attached) if it fails."""
    env = dict(os.environ, **MALLOC_ENV)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, cmd, proc.stdout, proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])
