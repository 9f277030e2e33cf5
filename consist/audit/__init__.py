"""``consist audit``: find and fix label errors in a labelled image dataset.

Leave-one-out: each sample's given label is the prediction to verify, its
neighbours' labels the alternatives; the engine's checkers vote, the verified
matching graph adds propagation and label coherence, and every sample gets a
verdict (flagged with a suggested label, confirmed, unverifiable, unreadable).

``consist.audit(...)`` (this module is callable) runs the whole pipeline and
returns an :class:`AuditResult`; see docs/audit.md.
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any

from consist.audit.config import AuditConfig

__all__ = ["AuditConfig", "AuditResult", "AuditRow", "audit"]


def audit(
    dataset: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    labels: str | os.PathLike[str] | None = None,
    path_column: str | None = None,
    label_column: str | None = None,
    name_pattern: str | None = None,
    store: str | None = None,
    checkers: Sequence[str] | None = None,
    executor: str | Any | None = None,
    workers: int | None = None,
    resume: bool = False,
    apply: bool = False,
    config: AuditConfig | None = None,
    report: bool = True,
    reporters: Sequence[str] | None = None,
    progress: bool = False,
    say: Callable[[str], None] | None = None,
    allow_outside: bool = False,
    **options: Any,
) -> Any:
    """Audit the labels of ``dataset`` and write the results to ``out``.

    Args:
        dataset: a folder of class sub-folders, or any folder with ``labels``, or a CSV.
        out: output folder (``audit.csv``, ``audit.jsonl``, ``summary.json``,
            ``report.html``; the feature cache ``store.db`` unless ``store``).
        labels: CSV ``path,label[,...]`` (paths relative to ``dataset``).
        path_column, label_column: the CSV's columns, when not ``path``/``label``.
        name_pattern: label images by their file names instead (a regular expression
            whose first group is the label; ``consist.datasets.NAME_PATTERN`` strips a
            trailing number: ``Abyssinian_12.jpg`` -> ``Abyssinian``).
        store: store URI for the feature cache and the history of ``apply``
            (default ``sqlite:///OUT/store.db``).
        checkers: names of registered checkers (default: all enabled ones).
        executor: ``"local"`` (worker processes, the default), ``"inline"``,
            ``"dask://HOST:PORT"`` or a ``distributed.Client``.
        workers: local worker processes (default: one per core; 1 runs inline).
        resume: continue an interrupted audit in ``out``.
        apply: write ``labels.corrected.csv`` and relabel the store (history kept).
        report: write ``report.html`` (the ``html`` reporter).
        reporters: names of registered reporters to run besides those enabled by
            default (a plugin's reporter with ``enabled_by_default = False``).
        allow_outside: read CSV rows naming files outside the dataset folder
            (``../x.jpg``, ``/abs/x.jpg``); by default they are reported and skipped.
        config: :class:`AuditConfig`; ``**options`` override single fields (``k=20``,
            ``features="aliked-n16+lightglue"``).

    Returns:
        :class:`AuditResult`: ``rows`` (one :class:`AuditRow` per sample),
        ``summary``, ``flagged``, ``to_pandas()``.
    """
    from consist.audit.run import run_audit

    cfg = (config or AuditConfig()).with_options(**options) if options else config
    return run_audit(
        dataset,
        out,
        labels=labels,
        path_column=path_column,
        label_column=label_column,
        name_pattern=name_pattern,
        store=store,
        checkers=checkers,
        executor=executor,
        workers=workers,
        resume=resume,
        apply=apply,
        config=cfg,
        report=report,
        reporters_named=reporters,
        progress=progress,
        say=say,
        allow_outside=allow_outside,
    )


def __getattr__(name: str) -> Any:
    if name == "AuditResult":
        from consist.audit.run import AuditResult

        return AuditResult
    if name == "AuditRow":
        from consist.audit.decide import AuditRow

        return AuditRow
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _CallableModule(types.ModuleType):
    """``consist.audit(...)`` calls :func:`audit`; ``consist.audit.AuditConfig`` etc.
    still work (the package and the function share the name)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return audit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
