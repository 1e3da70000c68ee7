"""What limits a benchmark run: CPU time of the stack's processes against wall time, and how
busy the whole machine was (other work shares its cores).

Linux ``/proc`` only (``/proc/<pid>/stat`` fields 14-15, utime and stime in clock ticks;
``/proc/stat``'s first line, jiffies per state; proc(5)); elsewhere the figures are None.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01
BUSY_MACHINE = 0.9  # the machine's busy share above which its CPU is called the limit
BUSY_PROCESS = 0.85  # a single Python process above this many cores is GIL-bound


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (None if unreadable)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * TICK_S
    except (OSError, IndexError, ValueError):
        return None


def machine_jiffies() -> tuple[int, int] | None:
    """``(total, idle)`` jiffies of all CPUs since boot (idle includes iowait)."""
    try:
        with open("/proc/stat") as f:
            values = [int(x) for x in f.readline().split()[1:]]
        return sum(values), values[3] + values[4]
    except (OSError, IndexError, ValueError):
        return None


def self_cpu_s() -> float:
    """CPU seconds of this process (the bench: emulator, pollers/worker, the client)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuMeter:
    """Measure CPU over one run: ``start()``, then ``stop(images, bound_rate)``.

    Args:
        pids: the stack's other processes by name (e.g. ``{"moto": pid, "api": pid}``).
    """

    pids: dict[str, int] = field(default_factory=dict)
    _t0: float = 0.0
    _cpu0: dict[str, float | None] = field(default_factory=dict)
    _machine0: tuple[int, int] | None = None

    def _cpu(self) -> dict[str, float | None]:
        return {"bench": self_cpu_s(), **{name: process_cpu_s(pid) for name, pid in self.pids.items()}}

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._cpu0 = self._cpu()
        self._machine0 = machine_jiffies()

    def stop(self, images: int, bound_rate: float) -> dict[str, object]:
        """The run's CPU figures.

        Args:
            images: images the run made.
            bound_rate: the rate-limit bound, images per second.

        Returns:
            ``cores`` (CPU s / wall s per process and ``stack`` in all), ``cpu_s_per_image``,
            ``machine_busy`` (share of all cores busy, any process), ``load_avg_1m``, ``cpus``,
            ``cpu_ceiling_ratio`` (the bound ratio the stack's CPU need allows on this many cores
            if it had them all) and ``limit`` (a one-line verdict).
        """
        wall = max(1e-9, time.monotonic() - self._t0)
        cpu1 = self._cpu()
        cores = {
            name: round((cpu1[name] - before) / wall, 2)
            for name, before in self._cpu0.items()
            if before is not None and cpu1.get(name) is not None
        }
        stack_cpu_s = sum(cores.values()) * wall
        machine1 = machine_jiffies()
        busy = None
        if self._machine0 and machine1 and machine1[0] > self._machine0[0]:
            total = machine1[0] - self._machine0[0]
            busy = round(1 - (machine1[1] - self._machine0[1]) / total, 3)
        cpus = os.cpu_count() or 1
        per_image = stack_cpu_s / images if images else None
        ceiling = None
        if per_image:
            ceiling = round(min(1.0, cpus / per_image / bound_rate), 3)
        return {
            "cores": {**cores, "stack": round(sum(cores.values()), 2)},
            "cpu_s_per_image": round(per_image, 4) if per_image else None,
            "machine_busy": busy,
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "cpus": cpus,
            "cpu_ceiling_ratio": ceiling,
            "limit": verdict(cores, busy, ceiling),
        }


def verdict(cores: dict[str, float], busy: float | None, ceiling: float | None) -> str:
    """One line: what limited the run (the machine's CPU, one GIL-bound process, or neither)."""
    reasons = []
    if busy is not None and busy >= BUSY_MACHINE:
        stack = sum(cores.values())
        reasons.append(f"CPU: the machine was {busy:.0%} busy, the stack got {stack:.2f} cores")
    hot = [name for name, used in cores.items() if used >= BUSY_PROCESS]
    if hot:
        reasons.append(f"GIL: {', '.join(hot)} near one core")
    if ceiling is not None and ceiling < 1.0:
        reasons.append(f"CPU need: all cores would allow {ceiling:.2f} of the bound")
    return "; ".join(reasons) or "not CPU: pacing and the pipeline's waits"
