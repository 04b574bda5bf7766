from __future__ import annotations

import os

CLK_TCK = os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def _stat_cpu_seconds(stat: str) -> float:
    with open(stat) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, every thread's (its reaped children are not counted)."""
    return _stat_cpu_seconds(f"/proc/{pid}/stat")


def loop_cpu_seconds(pid: int) -> float:
    """utime + stime of a process's first thread: the one running its event loop (what is left of
    the process's CPU is its other threads', such as the thread writing recordings)."""
    return _stat_cpu_seconds(f"/proc/{pid}/task/{pid}/stat")


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / CLK_TCK, sum(values) / CLK_TCK
