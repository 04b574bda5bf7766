"""What a chaos scenario found, as a table: each fault with its recovery times, then the counts of
every check, then — for whatever failed — the problems and the lines of the logs behind them."""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from checks import CATEGORIES, Findings

NOTABLE = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback|===== chaos")

# The logs worth reading for each kind of failure (by process log name).
RELEVANT = {
    "lost": ("case", "router-a", "router-b"),
    "duplicated": ("case",),
    "assigned twice": ("router-a", "router-b"),
    "disagreements": ("router-a", "router-b", "case"),
    "unfinished": ("router-a", "router-b", "case"),
    "undelivered": ("router-a", "router-b", "case", "chat"),
    "broken chains": ("case",),
    "dropped events": (),
    "health lies": ("router-a", "router-b"),
}


@dataclass(frozen=True)
class Fault:
    target: str  # router (the leader), case, chat, nats (the one server), node (a cluster node)
    sig: signal.Signals

    @property
    def label(self) -> str:
        name = {
            "router": "router leader",
            "nats": "nats-server",
            "node": "NATS cluster node",
        }.get(self.target, self.target)
        return f"{name} {self.sig.name}"

    @classmethod
    def parse(cls, text: str) -> Fault:
        """`router:kill`, `nats:term`, ..."""
        target, _, how = text.partition(":")
        sig = {"kill": signal.SIGKILL, "term": signal.SIGTERM}[how or "kill"]
        if target not in ("router", "case", "chat", "nats", "node"):
            raise ValueError(f"unknown fault target {target!r}")
        return cls(target, sig)


@dataclass
class FaultResult:
    fault: Fault
    process: str  # which one was hit: router-a, nats-2, ...
    log: Path  # its log file
    at: float  # seconds into the load
    t0: float  # monotonic: the signal
    exited: float  # monotonic: the process was gone
    back: float  # monotonic: restarted (NATS: ready again)
    graceful: bool | None = None  # SIGTERM: did it exit on its own
    measures: dict[str, float | None] = field(default_factory=dict)
    judged: str = ""  # the measure with a limit
    limit: float | None = None
    note: str = ""

    @property
    def failures(self) -> list[str]:
        out = [f"{name}: never" for name, v in self.measures.items() if v is None]
        value = self.measures.get(self.judged)
        if self.limit is not None and value is not None and value > self.limit:
            out.append(f"{self.judged} {value:.1f}s > {self.limit:.0f}s")
        if self.graceful is False:
            out.append("did not exit on SIGTERM")
        return out

    @property
    def ok(self) -> bool:
        return not self.failures

    def describe(self) -> str:
        parts = [f"{k} {'never' if v is None else f'{v:.1f}s'}" for k, v in self.measures.items()]
        return " · ".join(parts)


@dataclass
class Report:
    title: str
    directory: Path
    faults: list[FaultResult] = field(default_factory=list)
    findings: Findings = field(default_factory=Findings)
    facts: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    checked: bool = False  # the checks ran to the end (an error before them leaves this False)

    @property
    def ok(self) -> bool:
        return (
            self.checked and not self.error and self.findings.ok and all(f.ok for f in self.faults)
        )

    def counts(self) -> dict[str, int]:
        return {c: self.findings.count(c) for c in CATEGORIES}

    def as_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "ok": self.ok,
            "checked": self.checked,
            "error": self.error,
            "facts": self.facts,
            "counts": self.counts(),
            "faults": [
                {
                    "fault": f.fault.label,
                    "process": f.process,
                    "at": round(f.at, 2),
                    "down": round(f.back - f.t0, 2),
                    "measures": {
                        k: None if v is None else round(v, 2) for k, v in f.measures.items()
                    },
                    "limit": f.limit,
                    "ok": f.ok,
                    "note": f.note,
                }
                for f in self.faults
            ],
            "problems": {k: v[:200] for k, v in self.findings.problems.items()},
        }

    def render(self, details: bool = True) -> str:
        out = [f"== {self.title} =="]
        for key, value in self.facts.items():
            out.append(f"  {key}: {value}")
        if self.faults:
            out.append(f"  {'fault':<26}{'at':>7}  {'process':<10}{'down':>6}  recovery")
            for f in self.faults:
                verdict = "ok" if f.ok else "FAIL: " + "; ".join(f.failures)
                if f.ok and f.limit is not None:
                    verdict += f" ({f.judged} < {f.limit:.0f}s)"
                out.append(
                    f"  {f.fault.label:<26}{f.at:>6.1f}s  {f.process:<10}"
                    f"{f.back - f.t0:>5.1f}s  {f.describe()}  [{verdict}]"
                    + (f"  ({f.note})" if f.note else "")
                )
        if self.checked:
            counts = self.counts()
            out.append("  checks: " + " · ".join(f"{k} {v}" for k, v in counts.items()))
        else:
            out.append("  checks: NOT RUN (the scenario stopped before them)")
        if self.error:
            out.append(f"  ERROR: {self.error}")
        out.append(f"  {'PASS' if self.ok else 'FAIL'}   (logs: {self.directory})")
        if details and not self.ok:
            out += self._details()
        return "\n".join(out)

    def _details(self) -> list[str]:
        out: list[str] = []
        for category in CATEGORIES:
            problems = self.findings.problems.get(category, [])
            if not problems:
                continue
            out.append(f"  -- {category}: {self.findings.count(category)} --")
            out += [f"    {p}" for p in problems[:10]]
            if len(problems) > 10:
                out.append(f"    ... and {len(problems) - 10} more (report.json)")
            examples = list(dict.fromkeys(self.findings.examples.get(category, [])))[:2]
            for name in RELEVANT[category]:
                log = self.directory / f"{name}.log"
                for cid in examples:
                    hits = grep(log, cid, 6)
                    if hits:
                        out.append(f"    {name}.log lines with {cid}:")
                        out += [f"      {line}" for line in hits]
                notable = tail(log, NOTABLE, 8)
                if notable:
                    out.append(f"    {name}.log, last warnings and errors:")
                    out += [f"      {line}" for line in notable]
        for f in self.faults:
            if f.ok:
                continue
            out.append(f"  -- {f.fault.label} ({f.process}): {'; '.join(f.failures)} --")
            logs = [f.log] + [
                self.directory / f"{name}.log"
                for name in ("router-a", "router-b")
                if name != f.process and f.fault.target != "case"
            ]
            for log in logs:
                lines = tail(log, NOTABLE, 10)
                if lines:
                    out.append(f"    {log.name}, last warnings and errors:")
                    out += [f"      {line}" for line in lines]
        return out


def grep(log: Path, needle: str, limit: int) -> list[str]:
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    return [line[:300] for line in lines if needle in line][:limit]


def tail(log: Path, pattern: re.Pattern[str], limit: int) -> list[str]:
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    return [line[:300] for line in lines if pattern.search(line)][-limit:]
