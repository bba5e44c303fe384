"""CPU and memory of process trees, read with psutil (user + system seconds, peak RSS from /proc)."""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import psutil


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of every process in the trees (children alive now)."""
    total = 0.0
    for pid in pids:
        for p in tree(pid):
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
    return total


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the highest resident set size this process ever had."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@dataclass
class Group:
    """Processes started for one role (herald's pools, the fakes, the naive worker)."""

    name: str
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, label: str, argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        handle = open(log, "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(argv, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[label] = proc
        return proc

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values()]

    def cpu_s(self) -> float:
        return cpu_s(self.pids())

    def cpu_s_by_label(self) -> dict[str, float]:
        """CPU seconds per role (a pool's main process and its children together)."""
        return {label: cpu_s([proc.pid]) for label, proc in self.procs.items()}

    def peak_rss_mb(self) -> dict[str, float]:
        """Per process of each tree (a prefork pool is a main process and its children)."""
        peaks: dict[str, float] = {}
        for label, proc in self.procs.items():
            for i, p in enumerate(tree(proc.pid)):
                peaks[label if i == 0 else f"{label}/child{i}"] = round(peak_rss_mb(p.pid), 1)
        return peaks

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()
