"""The ``revisitop-paris-dev`` label-audit tasks (its README's tasks 1 and 2) and
their scorer, shared by ``bench_audit.py`` and offline experiments.

The photos are research-only Flickr images: they are read at run time from
``../shared/data/revisitop-paris-dev`` (``CONSIST_SHARED_DATA`` overrides
``../shared/data``) and never copied; the CSVs written here name the original files
(paths relative to the dev-set folder) and go to a temporary folder.

Tasks (183 database photos, ``images/rparis6k/*.jpg``; one row per photo of
``manifest.csv``, query crops excluded; every photo has at least one true landmark):

* ``natural``: given label = ``filename_prefix`` (the name's label, e.g.
  ``paris_general`` for a generic name, or another landmark's name); the true
  labels are ``positive_for_landmarks`` ('|'-separated). A photo is **mislabelled**
  when its given label is not among its true labels (literally the README's
  definition: all 26 ``paris_general`` photos are mislabelled, as are 8 photos
  named after another landmark: 34 of 183). A suggestion is **right** when it is one
  of the true labels. ``junk_for_landmarks`` is not used (a photo that is "junk" for
  its name's landmark, i.e. shows it too small or cut, still counts as mislabelled
  when the name is not a positive). Were a photo without any true landmark ever
  added to the manifest, it would be mislabelled under this definition and no
  suggestion could be right (none is in the current manifest).
* ``injected-10`` / ``injected-20``: given label = the first landmark of
  ``positive_for_landmarks``; then ``round(rate * 183)`` photos (18 / 37) chosen by
  ``random.Random(0).sample`` over the sorted image paths get a random other
  landmark, drawn with the *same* generator, continuing after the sample: the
  chosen photos are visited in sorted path order and each gets
  ``rng.choice(sorted(L - positives))``, where ``L`` is the 11 landmarks that occur
  in ``positive_for_landmarks`` (``paris_general`` is not a landmark) and
  ``positives`` are the photo's true landmarks — so a flip never lands on another of
  the photo's own true landmarks and every flipped photo is mislabelled. The
  mislabelled / right-suggestion definitions are those of ``natural``.

Scoring (:func:`score`): precision / recall / F1 of ``flagged`` against the
mislabelled photos; suggestion accuracy over the flagged mislabelled photos (and,
as a second figure, over all mislabelled photos: an unflagged one counts as wrong);
the fraction of photos *without an answer* (status ``unverifiable`` or
``unreadable``: neither confirmed nor flagged); the expected calibration error of the
method's confidence that the given label is wrong, ``P(wrong)``, over the photos that
have one (10 equal-width bins on [0, 1], the last one closed; ECE = sum over bins of
``n_bin / n * |mean P(wrong) - observed error rate|``) with its reliability table.
"""

from __future__ import annotations

import csv
import math
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DATA",
    "DEV_FOLDER",
    "GENERIC",
    "Photo",
    "Task",
    "consist_outputs",
    "ece",
    "injected_task",
    "landmarks",
    "load_photos",
    "natural_task",
    "posterior",
    "reliability_table",
    "score",
    "tasks",
    "write_labels_csv",
]

DATA = Path(os.environ.get("CONSIST_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
DEV_FOLDER = "revisitop-paris-dev"
#: Given labels that name no landmark (the generic Flickr tag of the collection).
GENERIC = frozenset({"paris_general"})
#: Statuses that are no answer: neither confirmed nor flagged.
NO_ANSWER = frozenset({"unverifiable", "unreadable"})


@dataclass(frozen=True)
class Photo:
    path: str  # relative to the dev-set folder: images/rparis6k/<name>.jpg
    name: str
    prefix: str  # the label the file name gives
    positives: tuple[str, ...]  # the true labels
    junk: tuple[str, ...] = ()


@dataclass
class Task:
    """One audit task: ``given`` labels and the ``truth`` (a set of right labels) per path."""

    name: str
    paths: list[str]
    given: dict[str, str]
    truth: dict[str, frozenset[str]]
    root: Path
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> dict[str, bool]:
        return {p: self.given[p] not in self.truth[p] for p in self.paths}

    def n_errors(self) -> int:
        return sum(self.errors.values())


def dev_root(data: Path | None = None) -> Path:
    return (data or DATA) / DEV_FOLDER


def _split(v: str) -> tuple[str, ...]:
    return tuple(x for x in (v or "").split("|") if x)


def load_photos(root: Path | None = None) -> list[Photo]:
    """The database photos of the manifest (query crops excluded), one per file,
    sorted by path. Rows of the same photo (one per query it is a candidate of)
    must agree on its labels."""
    root = root or dev_root()
    photos: dict[str, Photo] = {}
    with open(root / "manifest.csv", newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            if r["role"] == "query_crop":
                continue
            ph = Photo(path=r["image_file"], name=r["image_name"], prefix=r["filename_prefix"], positives=_split(r["positive_for_landmarks"]), junk=_split(r["junk_for_landmarks"]))
            old = photos.get(ph.path)
            if old is not None and (old.prefix, old.positives) != (ph.prefix, ph.positives):
                raise ValueError(f"{ph.path}: manifest rows disagree on its labels")
            photos[ph.path] = ph
    return [photos[p] for p in sorted(photos)]


def landmarks(photos: Sequence[Photo]) -> list[str]:
    """The landmarks that are some photo's true label (sorted; ``paris_general`` is none)."""
    return sorted({lab for ph in photos for lab in ph.positives})


def natural_task(photos: Sequence[Photo], root: Path | None = None) -> Task:
    return Task("natural", [ph.path for ph in photos], {ph.path: ph.prefix for ph in photos}, {ph.path: frozenset(ph.positives) for ph in photos}, root or dev_root())


def injected_task(photos: Sequence[Photo], rate: float, seed: int = 0, root: Path | None = None) -> Task:
    """Given label = first true landmark; ``round(rate * n)`` photos get a random
    other landmark (see the module doc for exactly how it is drawn)."""
    paths = sorted(ph.path for ph in photos)
    by = {ph.path: ph for ph in photos}
    lms = landmarks(photos)
    rng = random.Random(seed)
    chosen = set(rng.sample(paths, round(rate * len(paths))))
    given: dict[str, str] = {}
    for p in paths:
        ph = by[p]
        if not ph.positives:
            raise ValueError(f"{p}: no true landmark, cannot build the injected task")
        given[p] = rng.choice([x for x in lms if x not in ph.positives]) if p in chosen else ph.positives[0]
    return Task(f"injected-{round(rate * 100)}", paths, given, {p: frozenset(by[p].positives) for p in paths}, root or dev_root(), {"rate": rate, "seed": seed, "flipped": sorted(chosen)})


def tasks(root: Path | None = None, rates: Sequence[float] = (0.1, 0.2)) -> list[Task]:
    """``natural``, then the injected tasks, in that order."""
    root = root or dev_root()
    photos = load_photos(root)
    return [natural_task(photos, root), *(injected_task(photos, r, 0, root) for r in rates)]


def write_labels_csv(task: Task, dest: Path) -> Path:
    """``path,label`` (paths relative to the dev-set folder: pass ``task.root`` as
    the dataset). Only the given labels: the truth never goes into the audit's input."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        w.writerows((p, task.given[p]) for p in task.paths)
    return dest


# -------------------------------------------------------------------- scoring


def ece(conf: Sequence[float], outcome: Sequence[bool], bins: int = 10) -> float:
    return sum(b["n"] * abs(b["mean_conf"] - b["observed"]) for b in reliability_table(conf, outcome, bins) if b["n"]) / max(1, len(conf))


def reliability_table(conf: Sequence[float], outcome: Sequence[bool], bins: int = 10) -> list[dict[str, Any]]:
    """Per equal-width bin of ``conf`` (``P(wrong)``): count, mean confidence, observed error rate."""
    acc: list[list[tuple[float, bool]]] = [[] for _ in range(bins)]
    for c, o in zip(conf, outcome):
        c = min(max(float(c), 0.0), 1.0)
        acc[min(bins - 1, int(c * bins))].append((c, bool(o)))
    out = []
    for i, xs in enumerate(acc):
        n = len(xs)
        out.append(
            {
                "bin": f"[{i / bins:.1f},{(i + 1) / bins:.1f}{']' if i == bins - 1 else ')'}",
                "n": n,
                "mean_conf": sum(c for c, _ in xs) / n if n else math.nan,
                "observed": sum(o for _, o in xs) / n if n else math.nan,
            }
        )
    return out


def score(
    task: Task, flagged: Mapping[str, bool], suggested: Mapping[str, str | None], p_wrong: Mapping[str, float | None] | None = None, answered: Mapping[str, bool] | None = None, method: str = ""
) -> dict[str, Any]:
    """The task's figures for one method (dicts keyed by path; a missing path is
    not flagged, has no suggestion, no confidence, and has an answer)."""
    err = task.errors
    tp = sum(1 for p in task.paths if flagged.get(p) and err[p])
    fp = sum(1 for p in task.paths if flagged.get(p) and not err[p])
    fn = sum(1 for p in task.paths if not flagged.get(p) and err[p])
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    caught = [p for p in task.paths if flagged.get(p) and err[p]]
    errs = [p for p in task.paths if err[p]]
    right = lambda p: suggested.get(p) in task.truth[p]  # noqa: E731
    acc_flagged = sum(map(right, caught)) / len(caught) if caught else 0.0
    acc_all = sum(1 for p in errs if flagged.get(p) and right(p)) / len(errs) if errs else 0.0
    n = len(task.paths)
    no_answer = sum(1 for p in task.paths if answered is not None and not answered.get(p, True)) / n
    out: dict[str, Any] = {
        "task": task.name,
        "method": method,
        "n": n,
        "errors": len(errs),
        "flagged": tp + fp,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": prec,
        "recall": rec,
        "f1": f1,
        "suggestion_accuracy_flagged": acc_flagged,
        "suggestion_accuracy_all": acc_all,
        "without_answer": no_answer,
        "ece": math.nan,
        "with_confidence": 0,
        "reliability": [],
    }
    if p_wrong is not None:
        have = [p for p in task.paths if p_wrong.get(p) is not None]
        conf = [float(p_wrong[p]) for p in have]  # type: ignore[arg-type]
        outcome = [err[p] for p in have]
        if have:
            out.update(ece=ece(conf, outcome), with_confidence=len(have), reliability=reliability_table(conf, outcome))
    return out


def format_reliability(table: Sequence[Mapping[str, Any]]) -> str:
    cells = [f"{b['bin']} n={b['n']}" + (f" conf={b['mean_conf']:.2f} err={b['observed']:.2f}" if b["n"] else "") for b in table]
    return "; ".join(cells)


# ------------------------------------------------------------- consist rows


def posterior(scores: Mapping[str, float], label: str) -> float:
    """Softmax probability of ``label`` among the aggregation's scores, with its
    implicit null class at score 0 (what the audit's decision thresholds)."""
    if label not in scores:
        return 0.0
    m = max(0.0, *scores.values())
    denom = math.exp(-m) + sum(math.exp(v - m) for v in scores.values())
    return math.exp(scores[label] - m) / denom


def consist_outputs(rows: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """flagged / suggested / p_wrong / answered per sample from consist's audit rows
    (``AuditRow``s or the dicts of ``audit.jsonl``'s ``row``). ``confidence`` is the
    label model's P(given label wrong) (older audits, with per-row ``scores``: one
    minus the given label's posterior); rows without one have none."""
    flagged, suggested, p_wrong, answered = {}, {}, {}, {}
    for r in rows:
        g = (lambda k: r[k]) if isinstance(r, Mapping) else (lambda k: getattr(r, k))  # noqa: B023 -- g is used only within this iteration
        sid = g("sample")
        flagged[sid] = bool(g("flagged"))
        suggested[sid] = g("suggested_label") if g("flagged") else None
        scores = r.get("scores") if isinstance(r, Mapping) else getattr(r, "scores", None)
        if scores:
            p_wrong[sid] = None if g("confidence") is None else 1.0 - posterior(scores, g("given_label"))
        else:
            p_wrong[sid] = g("confidence")
        answered[sid] = g("status") not in NO_ANSWER
    return {"flagged": flagged, "suggested": suggested, "p_wrong": p_wrong, "answered": answered}


def main() -> int:
    root = dev_root()
    if not root.exists():
        print(f"{root} not found")
        return 1
    for t in tasks(root):
        print(f"{t.name}: {len(t.paths)} photos, {t.n_errors()} mislabelled, {len(set(t.given.values()))} given labels")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
