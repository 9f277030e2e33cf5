"""consist's own audit outputs, as reporters registered through the same hook a plugin
uses (``consist_register_reporters``): ``csv`` (audit.csv), ``jsonl`` (audit.jsonl),
``html`` (report.html) and ``summary`` (summary.json, run last)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from consist.contracts.hookspecs import hookimpl
from consist.contracts.reporter import AuditOutcome, Reporter


class CsvReporter:
    """``audit.csv``: one row per sample, flagged first; the dataset's extra columns follow."""

    name = "csv"
    enabled_by_default = True

    def report(self, outcome: AuditOutcome) -> Sequence[Path]:
        from consist.audit.outputs import report_order, write_csv

        extra = sorted({k for r in outcome.rows for k in r.meta})
        path = outcome.out / "audit.csv"
        write_csv(path, report_order(outcome.rows), extra)
        return [path]


class JsonlReporter:
    """``audit.jsonl``: each row with the full decision behind it (neighbours, votes,
    pair evidence), in dataset order, streamed from the journal."""

    name = "jsonl"
    enabled_by_default = True

    def report(self, outcome: AuditOutcome) -> Sequence[Path]:
        from consist.audit.outputs import JsonlWriter

        path = outcome.out / "audit.jsonl"
        rows = {r.sample: r for r in outcome.rows}
        written: set[str] = set()
        writer = JsonlWriter(path)
        try:
            for rec in outcome.records():
                row = rows.get(str(rec.get("id")))
                if row is not None:
                    writer.write(row, rec)
                    written.add(row.sample)
            for row in outcome.rows:
                if row.sample not in written:
                    writer.write(row, None)
        finally:
            writer.close()
        return [path]


class HtmlReporter:
    """``report.html``: a self-contained page, flagged first, with the verified
    neighbours, their match lines and the localised outlines (``--no-report`` skips it)."""

    name = "html"
    enabled_by_default = True

    def report(self, outcome: AuditOutcome) -> Sequence[Path]:
        from consist.audit.report_html import write_report

        path = outcome.out / "report.html"
        write_report(path, outcome)
        return [path]


class SummaryReporter:
    """``summary.json``: counts, the per-label table, label findings, timings, failures,
    the configuration, and what the other reporters wrote."""

    name = "summary"
    enabled_by_default = True

    def report(self, outcome: AuditOutcome) -> Sequence[Path]:
        from consist.audit.outputs import write_json

        path = outcome.out / "summary.json"
        write_json(path, dict(outcome.summary))
        return [path]


@hookimpl
def consist_register_reporters(register: Callable[[Reporter], None]) -> None:
    for reporter in (CsvReporter(), JsonlReporter(), HtmlReporter(), SummaryReporter()):
        register(reporter)
