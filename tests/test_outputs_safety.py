"""Outputs that cannot hurt whoever opens them (issue 12): spreadsheet formula
injection in every CSV consist writes, terminal escapes in what it prints, the label
filter of report.html, the store as the one truth of --apply, a locked --out."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from consist.csvcells import FORMULA_TRIGGERS, csv_cell, read_csv_cell

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _cli(*args: str, timeout: float = 180, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(ROOT), "CONSIST_PLUGINS": "spatial", **(env or {})}
    return subprocess.run([sys.executable, "-m", "consist.cli.main", *args], capture_output=True, text=True, env=full, timeout=timeout)


#: folder names (labels) a spreadsheet would run as formulas
HOSTILE = {"cat": "=1+1", "coffee": "-2+3", "astronaut": "@SUM(A1)", "hubble": "+hubble"}


@pytest.fixture(scope="module")
def hostile_audit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from audit_data import build

    base = tmp_path_factory.mktemp("hostile")
    root, _ = build(base / "photos")
    for old, new in HOSTILE.items():
        (root / old).rename(root / new)
    out = base / "out"
    proc = _cli("audit", str(root), "--out", str(out), "--workers", "1", "--apply", "--min-witnesses", "1", "--min-confidence", "0.5", "--no-report")
    assert proc.returncode == 0, proc.stderr
    return out


def test_cells_round_trip() -> None:
    for v in ["=1+1", "+x", "-1", "@a", "\tx", "\rx", "'=x", "''+y", "'plain", "plain", "", "a=b"]:
        written = csv_cell(v)
        assert not written.startswith(FORMULA_TRIGGERS)
        assert read_csv_cell(written) == v
    assert csv_cell("=1+1") == "'=1+1" and csv_cell("plain") == "plain" and csv_cell("'plain") == "'plain"


def _cells(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def test_no_csv_cell_is_a_formula(hostile_audit: Path) -> None:
    out = hostile_audit
    files = [out / "audit.csv", out / "labels.corrected.csv", out / "label_changes.csv"]
    changes = _cells(out / "label_changes.csv")
    assert len(changes) > 1, "the fixture should apply at least one change"
    for f in files:
        for row in _cells(f):
            for cell in row:
                assert not cell.startswith(FORMULA_TRIGGERS), (f.name, cell)
    given = {read_csv_cell(r[1]) for r in _cells(out / "audit.csv")[1:]}
    assert given == set(HOSTILE.values())  # the originals, read back


def test_corrected_labels_read_back_with_the_original_labels(hostile_audit: Path) -> None:
    from consist.datasets import read_dataset

    ds = read_dataset(hostile_audit.parent / "photos", hostile_audit / "labels.corrected.csv")
    assert set(ds.labels()) <= set(HOSTILE.values())
    assert not ds.problems


# ------------------------------------------------ 7. terminal escapes


EVIL = "x\x1b]0;pwned\x07\x1b[2J\nerror: forged line\r\u202egpj"


def _clean(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text and "\u202e" not in text
    assert not any(line.startswith("error: forged") for line in text.splitlines())


def test_safe_escapes_controls_only() -> None:
    from consist.cli.common import safe

    assert safe("caf\u00e9 \u732b ok") == "caf\u00e9 \u732b ok"
    shown = safe(EVIL)
    assert "\n" not in shown and "\\x1b" in shown and "\\n" in shown and "\\u202e" in shown
    _clean(shown)


def test_correct_prints_sample_ids_escaped(tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    proc = _cli("correct", EVIL, "cat", "--store", f"sqlite:///{tmp_path / 's.db'}", "--image", str(tmp_path / "a.png"))
    if proc.returncode == 2 and "no such" in proc.stderr:  # store must exist: create it and retry
        from consist.stores.uri import open_store

        open_store(f"sqlite:///{tmp_path / 's.db'}", create=True).close()
        proc = _cli("correct", EVIL, "cat", "--store", f"sqlite:///{tmp_path / 's.db'}", "--image", str(tmp_path / "a.png"))
    assert proc.returncode == 0, proc.stderr
    _clean(proc.stdout + proc.stderr)
    assert len(proc.stdout.strip().splitlines()) == 1


def test_audit_prints_labels_and_file_names_escaped(tmp_path: Path) -> None:
    from audit_data import build

    root, truth = build(tmp_path / "photos")
    rows = ["path,label"]
    for rel in sorted(truth):
        label = rel.split("/")[0]
        rows.append(f'{rel},"{EVIL if label == "coffee" else label}"')
    rows.append('"missing' + EVIL + '.jpg",cat')
    (root / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    proc = _cli("audit", str(root), "--labels", str(root / "labels.csv"), "--out", str(tmp_path / "out"), "--workers", "1", "--no-report")
    assert proc.returncode == 0, proc.stderr
    _clean(proc.stdout + proc.stderr)
    assert "no such file" in proc.stderr and "\\x1b]0;pwned" in proc.stdout  # the flagged coffee label, shown escaped
    proc = _cli("audit", str(tmp_path / ("nope" + EVIL)), "--out", str(tmp_path / "out2"))
    assert proc.returncode == 2
    _clean(proc.stderr)
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error: ")


# ------------------------------------------- 8. report.html's label filter


def test_report_label_filter_matches_labels_with_spaces_and_newlines(tmp_path: Path) -> None:
    from html.parser import HTMLParser

    from audit_data import build

    root, truth = build(tmp_path / "photos")
    odd = {"cat": "big   cat", "coffee": "coffee\ncup", "hubble": '"hub" <b>&amp;'}
    rows = ["path,label"] + [f'{rel},"{odd.get(rel.split("/")[0], rel.split("/")[0]).replace(chr(34), chr(34) * 2)}"' for rel in sorted(truth)]
    (root / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    proc = _cli("audit", str(root), "--labels", str(root / "labels.csv"), "--out", str(out), "--workers", "1")
    assert proc.returncode == 0, proc.stderr

    class Page(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.select: str | None = None
            self.options: list[str | None] = []
            self.row_labels: set[str] = set()

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            a = dict(attrs)
            if tag == "select":
                self.select = a.get("id")
            elif tag == "option" and self.select == "f-label":
                self.options.append(a.get("value"))
            elif tag == "tr" and "data-label" in a:
                self.row_labels.add(a["data-label"] or "")

        def handle_endtag(self, tag: str) -> None:
            if tag == "select":
                self.select = None

    page = Page()
    page.feed((out / "report.html").read_text(encoding="utf-8"))
    assert None not in page.options  # every option has a value= attribute
    values = set(page.options) - {""}
    assert page.row_labels <= values and {"big   cat", "coffee\ncup", '"hub" <b>&amp;'} <= values


# ------------------------------------------- 12. the store is the one truth


def _labels_csv(path: Path) -> dict[str, str]:
    return {read_csv_cell(r[0]): read_csv_cell(r[1]) for r in _cells(path)[1:]}


def test_apply_writes_labels_from_the_store_and_export_follows_undo(tmp_path: Path) -> None:
    import json

    from audit_data import build

    root, truth = build(tmp_path / "photos")
    out = tmp_path / "out"
    store = f"sqlite:///{out / 'store.db'}"
    args = ("audit", str(root), "--out", str(out), "--workers", "1", "--no-report", "--min-witnesses", "1", "--min-confidence", "0.5")
    proc = _cli(*args)
    assert proc.returncode == 0, proc.stderr
    # a person relabels two samples while (before) the audit applies: one it would change, one it would not
    flagged = [r[0] for r in _cells(out / "audit.csv")[1:] if r[3] == "true"]
    assert flagged
    user_flagged, user_plain = flagged[0], next(s for s in sorted(truth) if s not in flagged)
    for sid, label in ((user_flagged, "mine"), (user_plain, "also mine")):
        assert _cli("correct", sid, label, "--store", store).returncode == 0
    proc = _cli(*args, "--apply")
    assert proc.returncode == 0, proc.stderr
    corrected = _labels_csv(out / "labels.corrected.csv")
    assert corrected[user_flagged] == "mine" and corrected[user_plain] == "also mine"  # the person's label wins in the CSV too
    changes = _cells(out / "label_changes.csv")[1:]
    assert changes and all(r[4] for r in changes)
    first = {r[0]: r[4] for r in changes}
    exported = tmp_path / "exported.csv"
    proc = _cli("export", "--store", store, "--out", str(exported), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["samples"] == len(truth)
    assert _labels_csv(exported) == corrected  # one truth
    # a second --apply keeps the undo pointers of the first
    proc = _cli(*args, "--apply")
    assert proc.returncode == 0, proc.stderr
    assert {r[0]: r[4] for r in _cells(out / "label_changes.csv")[1:]} == first
    # undo one change: export follows the store
    sid, seq = next(iter(first.items()))
    assert _cli("undo", seq, "--store", store).returncode == 0
    proc = _cli("export", "--store", store, "--out", str(exported))
    assert proc.returncode == 0 and "exported" in proc.stdout
    after = _labels_csv(exported)
    assert after[sid] == sid.split("/")[0] and after[sid] != corrected[sid]


def test_export_refuses_bad_targets_with_one_line(tmp_path: Path) -> None:
    from consist.stores.uri import open_store

    open_store(f"sqlite:///{tmp_path / 's.db'}", create=True).close()
    for target in (tmp_path, tmp_path / "nope" / "x.csv"):
        proc = _cli("export", "--store", str(tmp_path / "s.db"), "--out", str(target))
        assert proc.returncode == 2 and proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1


# ------------------------------------------- 13. one audit per --out


def test_second_audit_on_the_same_out_is_refused_with_one_line(tmp_path: Path) -> None:
    from audit_data import build

    root, _ = build(tmp_path / "photos")
    out = tmp_path / "out"
    first = subprocess.Popen(
        [sys.executable, "-m", "consist.cli.main", "audit", str(root), "--out", str(out), "--workers", "1", "--no-report"],
        env={**os.environ, "PYTHONPATH": str(ROOT), "CONSIST_PLUGINS": "spatial"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    import time

    lock = out / ".audit" / "lock"
    deadline = time.monotonic() + 60
    while not (lock.exists() and lock.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.02)
    second = _cli("audit", str(root), "--out", str(out), "--workers", "1", "--no-report")
    running = first.poll() is None
    _, err = first.communicate(timeout=180)
    assert first.returncode == 0, err
    if running:  # the normal case: the first was still writing
        assert second.returncode == 2, second.stderr
        assert second.stderr.startswith("error: ") and len(second.stderr.strip().splitlines()) == 1
        assert "another consist audit is writing to this folder" in second.stderr and f"pid {first.pid}" in second.stderr
    assert (out / "audit.csv").exists()
    again = _cli("audit", str(root), "--out", str(out), "--workers", "1", "--no-report")
    assert again.returncode == 0, again.stderr  # the lock went with the first process


def test_output_lock_is_refused_while_held(tmp_path: Path) -> None:
    from consist.audit.run import _locked_out

    code = "import sys; from pathlib import Path; from consist.audit.run import _locked_out\nwith _locked_out(Path(sys.argv[1])): print('got it')"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with _locked_out(tmp_path):
        holder = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True, timeout=60)
        assert holder.returncode != 0 and f"another consist audit is writing to this folder (pid {os.getpid()})" in holder.stderr
    holder = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True, timeout=60)
    assert holder.returncode == 0 and "got it" in holder.stdout


def test_history_prints_sample_ids_and_reasons_escaped(tmp_path: Path) -> None:
    """``consist history`` shows a hostile sample id and reason escaped, one line each."""
    from consist.records import Provenance, Sample
    from consist.stores.uri import open_store

    uri = f"sqlite:///{tmp_path / 'h.db'}"
    store = open_store(uri, create=True)
    store.put([Sample(id=EVIL, uri=None, label="cat", provenance=Provenance.IMPORT)], reason="import " + EVIL)
    store.close()
    proc = _cli("history", "--store", uri)
    assert proc.returncode == 0, proc.stderr
    _clean(proc.stdout)
    assert "\\x1b]0;pwned" in proc.stdout
