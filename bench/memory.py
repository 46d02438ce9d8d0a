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
