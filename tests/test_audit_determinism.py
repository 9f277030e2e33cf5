"""The same input and options give byte-identical audit.csv and audit.jsonl rows,
whatever the executor, the number of workers, chunking, or a --resume."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import consist

sys.path.insert(0, str(Path(__file__).parent))

import audit_data


def _rows(out: Path) -> list[dict]:
    return [json.loads(line)["sample"] for line in (out / "audit.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_audit_csv_is_byte_identical_across_executors_workers_chunks_and_resume(tmp_path):
    root, _truth = audit_data.build(tmp_path / "photos")
    store = f"sqlite:///{tmp_path / 'features.db'}"
    inline = consist.audit(root, tmp_path / "inline", store=store, workers=1, report=False)
    local = consist.audit(root, tmp_path / "local", store=store, workers=2, chunk_size=3, report=False)
    expected = (tmp_path / "inline" / "audit.csv").read_bytes()
    assert (tmp_path / "local" / "audit.csv").read_bytes() == expected
    # a resumed run (journal already complete, records in another order) decides the same
    journal = tmp_path / "local" / ".audit" / "verified.jsonl"
    lines = journal.read_text().splitlines()
    journal.write_text("\n".join(reversed(lines)) + "\n")
    resumed = consist.audit(root, tmp_path / "local", store=store, workers=2, chunk_size=3, report=False, resume=True)
    assert (tmp_path / "local" / "audit.csv").read_bytes() == expected
    assert _rows(tmp_path / "local") == _rows(tmp_path / "inline")
    assert [r.confidence for r in inline.rows] == [r.confidence for r in local.rows] == [r.confidence for r in resumed.rows]
    # and a second cold run (fresh store: features, codebook, verification again)
    again = consist.audit(root, tmp_path / "again", workers=2, report=False)
    assert (tmp_path / "again" / "audit.csv").read_bytes() == expected
    assert len(again.rows) == len(inline.rows)
