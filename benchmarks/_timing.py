"""Shared timing for the benchmarks: interleaved rounds, medians with their min-max spread.

Every function of one table is timed in the same rounds, round-robin, so that a change of machine
load (the benchmark machine is shared) hits all of them alike; a table then compares ratios of
medians taken in one run. Each sample is the mean of ``calls`` back-to-back calls (dispatch
included), after one warm-up call that compiles.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence

import jax


@dataclasses.dataclass(frozen=True)
class Timing:
    """Seconds per call: the median of the interleaved samples and their spread."""

    median: float
    low: float
    high: float

    def fmt(self, unit: float = 1e-3, digits: int = 2) -> str:
        """``median [min-max]`` in ``unit`` seconds (1e-3: ms, 1e-6: us)."""
        m, lo, hi = (v / unit for v in (self.median, self.low, self.high))
        return f"{m:.{digits}f} [{lo:.{digits}f}-{hi:.{digits}f}]"


def block(out):
    """Waits for JAX arrays (and converts nothing else): torch and NumPy results are ready."""
    return jax.block_until_ready(out)


def interleaved(
    cases: dict[str, tuple[Callable, Sequence]], *, rounds: int, calls: int = 1
) -> dict[str, Timing]:
    """``{name: Timing}`` for ``{name: (fn, args)}``, timed in interleaved rounds."""
    for fn, args in cases.values():
        block(fn(*args))
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, (fn, args) in cases.items():
            t0 = time.perf_counter()
            out = None
            for _ in range(calls):
                out = fn(*args)
            block(out)
            samples[name].append((time.perf_counter() - t0) / calls)
    return {name: Timing(statistics.median(s), min(s), max(s)) for name, s in samples.items()}


def first_call(fn: Callable, args: Sequence) -> float:
    """Seconds of the first call (trace + compile + run)."""
    t0 = time.perf_counter()
    block(fn(*args))
    return time.perf_counter() - t0


def machine() -> str:
    """One line describing the machine, for the header of every results file."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            names = [ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")]
        if names:
            cpu = names[0]
    except OSError:
        pass
    try:
        load = "load average {:.1f}/{:.1f}/{:.1f}".format(*os.getloadavg())
    except OSError:
        load = "load unknown"
    dev = jax.devices()[0]
    return (
        f"{cpu}, {os.cpu_count()} CPU cores visible, {load}; {platform.system()} "
        f"{platform.release()}; Python {platform.python_version()}, jax {jax.__version__} "
        f"on {dev.platform} ({dev.device_kind}, {jax.device_count()} device)"
    )


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process from ``/proc`` (None where there is no ``/proc``)."""
    try:
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_watched(cmd, timeout, idle=15.0):
    """``subprocess.run(cmd)`` that also gives up when the child has used no CPU for ``idle``
    seconds (a deadlocked child waits without spinning). Returns stdout, or None if it hung."""
    with tempfile.TemporaryFile("w+") as out:
        child = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL, text=True)
        start = last_change = time.monotonic()
        last_cpu = None
        while child.poll() is None:
            time.sleep(0.5)
            now, cpu = time.monotonic(), _cpu_seconds(child.pid)
            if cpu != last_cpu:
                last_cpu, last_change = cpu, now
            if now - start > timeout or (cpu is not None and now - last_change > idle):
                child.kill()
                child.wait()
                return None
        if child.returncode:
            raise subprocess.CalledProcessError(child.returncode, cmd)
        out.seek(0)
        return out.read()
