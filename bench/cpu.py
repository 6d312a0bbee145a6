"""CPU seconds a system spends in its own processes: never the emulator's, which is a process of its own.

The in-process systems (the peers, this_live, this_catchup) each run alone in a `bench.system`
process, with no thread of the benchmark's beside them: `cpu_window` reads that process's CPU clock
(every thread: the peers' consumers, the sink's write pool, RocksDB's) around exactly the timed run,
so interpreter start-up, imports and table creation stay out. this_kcl is other processes, the Java
daemon and the Python children it spawns: `TreeCpu` samples them from /proc.
"""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

PROC = Path("/proc")
TICK_SECONDS = 1 / os.sysconf("SC_CLK_TCK")


@dataclass
class Window:
    """Wall-clock and CPU seconds of one block, set when it ends."""

    seconds: float = 0.0
    cpu_seconds: float = 0.0


@contextmanager
def cpu_window() -> Iterator[Window]:
    """Time the block, wall clock and this process's CPU (user + system, all threads)."""
    window = Window()
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield window
    finally:
        window.seconds = time.perf_counter() - wall
        window.cpu_seconds = time.process_time() - cpu


class ProcStat(NamedTuple):
    """The fields of /proc/<pid>/stat the accounting needs."""

    ppid: int
    started: int  # clock ticks after boot: a reused pid is another process
    own: float  # utime + stime, seconds
    reaped: float  # cutime + cstime: every descendant it has waited for (and theirs), seconds


def read_stat(pid: int, proc: Path = PROC) -> ProcStat | None:
    """None once the process is gone (reaped)."""
    try:
        text = (proc / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    fields = text[text.rindex(b")") + 2:].split()  # the name may hold spaces and parentheses; field 3 on
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])  # fields 14-17
    return ProcStat(int(fields[1]), int(fields[19]), (utime + stime) * TICK_SECONDS,
                    (cutime + cstime) * TICK_SECONDS)


class TreeCpu:
    """CPU seconds of a root process (the KCL daemon) and, apart, of its descendants (the record
    processors it spawns, one per lease, which may end before it does).

    A thread samples /proc every `interval`: the root's own time (utime + stime) and reaped time
    (cutime + cstime), and each descendant's own time, keeping the last value per process (pid and
    start time). Descendants are looked for every `discover_every` (a full /proc scan is the costly
    part); known ones are read every tick. The descendants' total is the larger of two lower bounds,
    neither of which counts a process twice:

    - the sum of the last values per process: covers children the root never waits for (orphaned by
      a daemon that exits first) or that end after the root's last sample;
    - the root's reaped time: exact for every descendant it has waited for, however short-lived or
      undiscovered (Java's process reaper waits for a child as soon as it ends).

    Why not one of them alone: reaped time misses children still running at the root's last sample
    or never waited for; last values alone miss up to an interval of each child's final CPU (the
    shutdown flush) and children that lived less than `discover_every`. Whatever remains missed is at
    most one interval of each process's CPU just before it ended.
    """

    def __init__(self, root: int, interval: float = 0.1, discover_every: float = 0.5, proc: Path = PROC):
        self.root, self.interval, self.discover_every, self.proc = root, interval, discover_every, proc
        self.root_seconds = 0.0
        self._root_started: int | None = None
        self._root_reaped = 0.0
        self._known: dict[int, int] = {}  # live descendant pid -> start time
        self._last: dict[tuple[int, int], float] = {}  # (pid, start time) -> own seconds when last read
        self._discovered_at = float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def descendants_seconds(self) -> float:
        return max(sum(self._last.values()), self._root_reaped)

    def sample(self) -> None:
        root = read_stat(self.root, self.proc)
        if root is not None and self._root_started in (None, root.started):
            self._root_started = root.started
            self.root_seconds, self._root_reaped = root.own, root.reaped
        if time.monotonic() - self._discovered_at >= self.discover_every:
            self._discover()
        for pid, started in list(self._known.items()):
            stat = read_stat(pid, self.proc)
            if stat is None or stat.started != started:
                del self._known[pid]
            else:
                self._last[(pid, started)] = stat.own

    def _discover(self) -> None:
        """Every process under the root, or under a descendant already known (orphans keep theirs)."""
        self._discovered_at = time.monotonic()
        children: dict[int, list[tuple[int, int]]] = {}
        for entry in self.proc.iterdir():
            stat = read_stat(int(entry.name), self.proc) if entry.name.isdigit() else None
            if stat is not None:
                children.setdefault(stat.ppid, []).append((int(entry.name), stat.started))
        parents = [self.root, *self._known]
        while parents:
            for pid, started in children.pop(parents.pop(), []):
                self._known[pid] = started
                parents.append(pid)

    def start(self) -> TreeCpu:
        self.sample()
        self._thread = threading.Thread(target=self._run, name="tree-cpu", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        """Stop sampling (after the root has been stopped: its children's last values are in)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()
