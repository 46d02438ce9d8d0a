"""Process measurements from Linux /proc: peak resident memory and CPU time.

``VmHWM`` ("high water mark") is the kernel's record of the largest resident set the process ever had, so
reading it once just before the process is stopped gives its peak over the whole run — no sampling
thread, nothing missed between samples.
"""

from __future__ import annotations

import os
from pathlib import Path


def peak_rss_mib(pid: int) -> float | None:
    """Peak resident set size of ``pid`` in MiB (None when the process is gone or /proc has no VmHWM)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)  # reported in kB
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far: the process's own cost, whatever else shares the cores."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """User + system CPU time of ``pid`` so far by kind of thread: the Python main thread (its thread id is the
    process id), librdkafka's threads (named ``rdk:…``), and every other thread."""
    clock = os.sysconf("SC_CLK_TCK")
    spent = {"python_main": 0.0, "librdkafka": 0.0, "other": 0.0}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return spent
    for task in tasks:
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue  # the thread ended meanwhile
        seconds = (int(fields[11]) + int(fields[12])) / clock
        kind = "python_main" if task.name == str(pid) else "librdkafka" if name.startswith("rdk:") else "other"
        spent[kind] += seconds
    return spent
