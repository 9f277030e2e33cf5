"""Helpers shared by the benchmark scripts: timing statistics, machine info, output.

Deliberately free of numpy at import time: ``bench_store.py`` must set the BLAS
thread variables before numpy is first imported.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "Target",
    "emit",
    "fmt_ms",
    "loadavg",
    "machine_info",
    "print_table",
    "print_targets",
    "progress",
    "summarise",
]


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default method) of sorted values."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return sorted_values[lo] * (1 - frac) + sorted_values[hi] * frac


def summarise(seconds: Sequence[float]) -> dict[str, float]:
    """Mean, median, p95, p99, min, max of per-operation times, in milliseconds."""
    ms = sorted(s * 1e3 for s in seconds)
    n = len(ms)
    return {
        "n": n,
        "mean_ms": sum(ms) / n if n else math.nan,
        "median_ms": _quantile(ms, 0.5),
        "p95_ms": _quantile(ms, 0.95),
        "p99_ms": _quantile(ms, 0.99),
        "min_ms": ms[0] if n else math.nan,
        "max_ms": ms[-1] if n else math.nan,
    }


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def loadavg() -> list[float] | None:
    """1/5/15-minute load averages: other work on the machine skews every figure."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the figures depend on: CPUs, BLAS thread settings, versions."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "blas_thread_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
        "loadavg_at_start": loadavg(),
    }
    try:
        import numpy

        info["numpy"] = numpy.__version__
    except ImportError:  # pragma: no cover - numpy is a core dependency
        pass
    try:
        import consist

        info["consist"] = consist.__version__
    except ImportError:  # pragma: no cover
        pass
    if extra:
        info.update(extra)
    return info


class Target:
    """One target line: ``measured`` must be below (``"<"``) or above (``">"``) ``limit``.

    ``required=False`` marks an informational line (shown with a ``*``, ignored by
    ``--strict``): a path that is not the default, or a stricter variant.
    """

    def __init__(self, metric: str, measured: float, op: str, limit: float, unit: str, note: str = "", *, required: bool = True) -> None:
        if op not in ("<", ">"):
            raise ValueError(op)
        self.metric, self.measured, self.op, self.limit, self.unit, self.note = metric, measured, op, limit, unit, note
        self.required = required

    @property
    def passed(self) -> bool:
        if self.measured != self.measured:  # NaN: not measured
            return False
        return self.measured < self.limit if self.op == "<" else self.measured > self.limit

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "measured": self.measured,
            "target": f"{self.op} {self.limit:g} {self.unit}",
            "unit": self.unit,
            "passed": self.passed,
            "required": self.required,
            "note": self.note,
        }


def fmt_ms(v: float) -> str:
    if v != v:
        return "n/a"
    return f"{v:.3f}" if v < 10 else f"{v:.2f}" if v < 100 else f"{v:.1f}"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v != v:
            return "n/a"
        if v == 0:
            return "0"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 100:
            return f"{v:.1f}"
        if abs(v) >= 10:
            return f"{v:.2f}"
        return f"{v:.3f}"
    return str(v)


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], file: Any = None) -> None:
    """A plain fixed-width table (first column left-aligned, the others right-aligned)."""
    file = file or sys.stdout
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    print(f"\n{title}", file=file)
    print("-" * len(title), file=file)
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths)))
    print(line, file=file)
    for r in cells:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))), file=file)


def print_machine(info: dict[str, Any], file: Any = None) -> None:
    file = file or sys.stdout
    print("machine", file=file)
    print("-------", file=file)
    for k, v in info.items():
        print(f"  {k}: {v}", file=file)


def print_targets(targets: Sequence[Target], file: Any = None) -> None:
    rows = [(t.metric + ("" if t.required else " *"), _fmt(float(t.measured)) + f" {t.unit}", f"{t.op} {t.limit:g} {t.unit}", "PASS" if t.passed else "FAIL") for t in targets]
    print_table("targets", ("metric", "measured", "target", "result"), rows, file=file)
    if any(not t.required for t in targets):
        print("  * informational: not the default path or a stricter variant; --strict ignores it", file=file or sys.stdout)
    notes = [t for t in targets if t.note]
    for t in notes:
        print(f"  note ({t.metric}): {t.note}", file=file or sys.stdout)


def emit(result: dict[str, Any], as_json: bool, json_out: str | None = None) -> None:
    """Print the JSON object on stdout (``--json``) and/or write it to ``json_out``."""
    if as_json:
        json.dump(result, sys.stdout, indent=2, default=_json_default)
        sys.stdout.write("\n")
    if json_out:
        with open(json_out, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2, default=_json_default)
            fh.write("\n")


def finish(result: dict[str, Any], targets: Sequence[Any], args: Any, report: Callable[[], None]) -> int:
    """The end of every benchmark's main(): targets into the result, the human report
    (unless ``--json``), the JSON, and exit 1 under ``--strict`` when a required target
    failed."""
    result["targets"] = [t.to_dict() for t in targets]
    if not args.json:
        report()
    emit(result, args.json, args.json_out)
    return 1 if getattr(args, "strict", False) and any(t.required and not t.passed for t in targets) else 0


def _json_default(o: Any) -> Any:
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    return str(o)


class progress:  # noqa: N801 - used as a tiny context manager
    """``with progress("loading 100k", quiet):`` prints the phase and its wall time to stderr."""

    def __init__(self, what: str, quiet: bool = False) -> None:
        self.what, self.quiet = what, quiet

    def __enter__(self) -> progress:
        self.t0 = time.perf_counter()
        if not self.quiet:
            print(f"[bench] {self.what} ...", file=sys.stderr, flush=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.perf_counter() - self.t0
        if not self.quiet:
            print(f"[bench] {self.what}: {self.elapsed:.2f} s", file=sys.stderr, flush=True)


def time_calls(fn: Callable[[], Any], n: int) -> list[float]:
    """Per-call wall times (perf_counter) of ``n`` calls of ``fn``."""
    out = []
    pc = time.perf_counter
    for _ in range(n):
        t0 = pc()
        fn()
        out.append(pc() - t0)
    return out
