"""A third party replaces consist-spatial's pieces under ``consist audit`` through the
documented contracts only: its own extractor (ORB, written here from docs/plugins.md)
feeds the retriever and the spatial checker, and its own reporter runs after the audit."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import consist

sys.path.insert(0, str(Path(__file__).parent))

import audit_data

PLUGIN = '''
import json
import cv2
import numpy as np
import consist
from consist.contracts import LocalFeatures


class OrbExtractor:
    """ORB keypoints with their binary descriptors unpacked to 0/1 floats."""

    def __init__(self, max_keypoints=2048, max_side=1024, **_options):
        self.max_keypoints = int(max_keypoints)
        self.max_side = max_side

    @property
    def kind(self):
        return f"features/orb-test-{self.max_keypoints}"

    def extract(self, image):
        gray = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2GRAY)
        kps, desc = cv2.ORB_create(nfeatures=self.max_keypoints).detectAndCompute(gray, None)
        if desc is None:
            return LocalFeatures(np.zeros((0, 2)), np.zeros(0), np.zeros(0), np.zeros((0, 256), np.float32), (gray.shape[1], gray.shape[0]), 1.0, self.kind)
        bits = np.unpackbits(desc, axis=1).astype(np.float32) / 16.0  # unit norm: 256 bits, about half set
        return LocalFeatures(np.array([k.pt for k in kps]), np.array([k.size for k in kps]), np.array([k.angle for k in kps]), bits, (gray.shape[1], gray.shape[0]), 1.0, self.kind)


class LabelCounts:
    name = "label-counts"
    enabled_by_default = True

    def report(self, outcome):
        path = outcome.out / "label_counts.json"
        counts = {}
        for row in outcome.rows:
            counts[row.given_label] = counts.get(row.given_label, 0) + 1
        n_records = sum(1 for _ in outcome.records())
        path.write_text(json.dumps({"counts": counts, "records": n_records}))
        return [path]


@consist.hookimpl
def consist_register_extractors(register):
    register("orb-test", OrbExtractor)


@consist.hookimpl
def consist_register_reporters(register):
    register(LabelCounts())
'''


@pytest.mark.slow
def test_third_party_extractor_and_reporter_under_the_audit(install_plugin, tmp_path):
    pytest.importorskip("consist_spatial")
    install_plugin("orb_test_plugin", PLUGIN)
    assert "orb-test" in consist.plugins.extractors()
    root, truth = audit_data.build(tmp_path / "photos")
    out = tmp_path / "out"
    result = consist.audit(root, out, workers=1, features="orb-test")
    store = consist.open_store(result.store, create=False)
    try:
        kinds = store.artefact_kinds()
    finally:
        store.close()
    # features were extracted and cached by the third party's extractor, and used
    assert any(k.startswith("features/orb-test") for k in kinds), kinds
    assert not any(k.startswith("features/sift") for k in kinds), kinds
    # the spatial checker verified pairs on those features
    lines = [json.loads(x) for x in (out / "audit.jsonl").read_text().splitlines()]
    verified = [e for x in lines for e in x.get("edges", ()) if e["verified"]]
    assert verified, "no pair verified on ORB features"
    # the reporter ran after the audit, with every row and every record
    counts = json.loads((out / "label_counts.json").read_text())
    assert sum(counts["counts"].values()) == len(result.rows)
    assert counts["records"] == sum(1 for r in result.rows if r.status != "unreadable")
    assert "label-counts" in result.summary["reporters"]["written"]
    # the planted errors are found from the third party's features too
    planted = {sid for sid, label in truth.items() if sid.split("/")[0] != label}
    found = {r.sample for r in result.rows if r.flagged}
    assert planted and len(found & planted) >= (len(planted) + 1) // 2, (found, planted)
