"""Tests for consist.metrics: revisitop mAP, pixel mAP@50:5:95, label-audit scores."""

from __future__ import annotations

import math

import numpy as np
import pytest

from consist.metrics import (
    DEFAULT_IOU_THRESHOLDS,
    PROTOCOLS,
    audit_scores,
    average_precision,
    box_iou,
    evaluate_query,
    mask_iou,
    pixel_map,
    protocol_ground_truth,
    revisitop_map,
    revisitop_protocols,
    suggestion_accuracy,
)

# --------------------------------------------------------------------------
# Hand-computed AP
# --------------------------------------------------------------------------


def test_all_positives_at_top_is_one():
    res = evaluate_query([3, 5, 0, 1, 2], positives=[5, 3])
    assert res.ap == pytest.approx(1.0, abs=1e-12)
    assert res.positive_ranks == (0, 1)
    assert res.precision_at_k == {1: 1.0, 5: 1.0, 10: 1.0}  # clipped to last positive


def test_worked_three_positive_example():
    # Positives at 0-based ranks 0, 2, 5; n = 3, recall step 1/3.
    #   j=0 r=0: p0 = 1,   p1 = 1/1 -> (1 + 1)     / 3 / 2 = 1/3
    #   j=1 r=2: p0 = 1/2, p1 = 2/3 -> (1/2 + 2/3) / 3 / 2 = 7/36
    #   j=2 r=5: p0 = 2/5, p1 = 3/6 -> (2/5 + 1/2) / 3 / 2 = 3/20
    #   AP = 60/180 + 35/180 + 27/180 = 61/90
    ranking = [10, 11, 12, 13, 14, 15, 16, 17]
    res = evaluate_query(ranking, positives=[10, 12, 15])
    assert res.ap == pytest.approx(61 / 90, abs=1e-12)
    assert average_precision([0, 2, 5], 3) == pytest.approx(61 / 90, abs=1e-12)
    assert average_precision([5, 0, 2], 3) == pytest.approx(61 / 90, abs=1e-12)  # order-free
    # mP@k with revisitop's clipping: 1-based positions 1, 3, 6 (last = 6).
    #   k=1: k'=1, 1 hit -> 1;  k=5: k'=5, 2 hits -> 2/5;  k=10: k'=6, 3 hits -> 1/2 (not 3/10)
    assert res.precision_at_k[1] == pytest.approx(1.0)
    assert res.precision_at_k[5] == pytest.approx(0.4)
    assert res.precision_at_k[10] == pytest.approx(0.5)


def test_worked_two_positive_example():
    # Positives at ranks 1 and 3, n = 2:
    #   j=0 r=1: p0 = 0/1, p1 = 1/2 -> (0 + 1/2)   / 2 / 2 = 1/8
    #   j=1 r=3: p0 = 1/3, p1 = 2/4 -> (1/3 + 1/2) / 2 / 2 = 5/24
    #   AP = 3/24 + 5/24 = 1/3
    assert evaluate_query([0, 1, 2, 3], positives=[1, 3]).ap == pytest.approx(1 / 3, abs=1e-12)


def test_junk_before_positive_is_removed():
    # Without removal the positives sit at ranks 1, 3 (AP 1/3); with junk 7
    # removed they sit at 0, 2:  1/2 + (1/2 + 2/3)/4 = 12/24 + 7/24 = 19/24.
    res = evaluate_query([7, 1, 2, 3], positives=[1, 3], junk=[7])
    assert res.positive_ranks == (0, 2)
    assert res.ap == pytest.approx(19 / 24, abs=1e-12)
    assert evaluate_query([7, 1, 2, 3], positives=[1, 3]).ap == pytest.approx(1 / 3, abs=1e-12)


def test_junk_after_positives_changes_nothing():
    with_junk = evaluate_query([1, 2, 3, 7, 8], positives=[1, 3], junk=[7, 8])
    without = evaluate_query([1, 2, 3], positives=[1, 3])
    assert with_junk.ap == pytest.approx(19 / 24, abs=1e-12)
    assert with_junk.ap == without.ap
    assert with_junk.precision_at_k == without.precision_at_k


def test_positive_missing_from_ranking_counts_zero():
    # Positive 99 is never retrieved: only j=0 at r=0 contributes (1+1)/2/2 = 1/2.
    res = evaluate_query([1, 2, 3], positives=[1, 99])
    assert res.ap == pytest.approx(0.5, abs=1e-12)
    assert res.n_positives == 2
    assert evaluate_query([2, 3], positives=[1, 99]).ap == 0.0
    assert evaluate_query([2, 3], positives=[1, 99]).precision_at_k[5] == 0.0


def test_query_without_positives_is_excluded():
    gnd = [
        {"easy": [0], "hard": [2], "junk": [1], "bbx": None},
        {"easy": [], "hard": [], "junk": [3], "bbx": None},
    ]
    # Query 0 (medium): ranking 1(junk) 2 0 -> positives at ranks 0, 1 -> AP 1.
    # Query 1 has no positives: AP nan, excluded from the mean, counted as empty.
    res = revisitop_map([[1, 2, 0, 3], [0, 1, 2, 3]], gnd, "medium")
    assert res.n_empty == 1
    assert math.isnan(res.aps[1])
    assert res.aps[0] == pytest.approx(1.0)
    assert res.map == pytest.approx(1.0)
    assert res.mp_at_k[5] == pytest.approx(1.0)
    assert math.isnan(evaluate_query([0, 1], positives=[]).ap)
    everything_empty = revisitop_map([[0, 1, 2, 3]], [gnd[1]], "medium")
    assert everything_empty.n_empty == 1 and math.isnan(everything_empty.map)


# --------------------------------------------------------------------------
# Protocols and input layouts
# --------------------------------------------------------------------------

TINY_GND = [{"easy": [0, 1], "hard": [2], "junk": [3], "bbx": [0, 0, 1, 1]}]
TINY_RANKING = [2, 3, 0, 4, 1]
# Easy:   positives {0,1}, junk {3,2}: 0 4 1          -> ranks 0,2   -> 19/24
# Medium: positives {0,1,2}, junk {3}: 2 0 4 1        -> ranks 0,1,3 ->
#         2/6 + 2/6 + (2/3 + 3/4)/6 = 48/72 + 17/72   = 65/72
# Hard:   positives {2}, junk {3,0,1}: 2 4            -> rank 0      -> 1
TINY_EXPECTED = {"easy": 19 / 24, "medium": 65 / 72, "hard": 1.0}


def test_protocol_ground_truth_selection():
    e_pos, e_junk = protocol_ground_truth(TINY_GND[0], "easy")
    m_pos, m_junk = protocol_ground_truth(TINY_GND[0], "medium")
    h_pos, h_junk = protocol_ground_truth(TINY_GND[0], "hard")
    assert sorted(e_pos) == [0, 1] and sorted(e_junk) == [2, 3]
    assert sorted(m_pos) == [0, 1, 2] and sorted(m_junk) == [3]
    assert sorted(h_pos) == [2] and sorted(h_junk) == [0, 1, 3]
    no_junk_key = protocol_ground_truth({"easy": [0], "hard": [1]}, "easy")
    assert sorted(no_junk_key[1]) == [1]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_protocols_on_tiny_gnd(protocol):
    res = revisitop_map([TINY_RANKING], TINY_GND, protocol)
    assert res.map == pytest.approx(TINY_EXPECTED[protocol], abs=1e-12)
    assert res.protocol == protocol


def test_revisitop_protocols_and_array_layouts():
    columns = np.array(TINY_RANKING).reshape(-1, 1)  # revisitop layout (n_db, n_q)
    by_protocol = revisitop_protocols(columns, TINY_GND)
    assert set(by_protocol) == set(PROTOCOLS)
    for p in PROTOCOLS:
        assert by_protocol[p].map == pytest.approx(TINY_EXPECTED[p], abs=1e-12)
        rows = revisitop_map(columns.T, TINY_GND, p, query_axis=0)
        assert rows.map == by_protocol[p].map


def test_array_orientation_is_explicit():
    rng = np.random.RandomState(3)
    n_db, n_q = 7, 3
    gnd = [{"easy": [q], "hard": [q + 3], "junk": []} for q in range(n_q)]
    sim = rng.rand(n_db, n_q)
    ranks = np.argsort(-sim, axis=0)  # revisitop: (n_db, n_q)
    a = revisitop_map(ranks, gnd)
    b = revisitop_map(ranks.T.copy(), gnd, query_axis=0)
    c = revisitop_map([list(ranks[:, q]) for q in range(n_q)], gnd)
    assert a.aps == b.aps == c.aps
    with pytest.raises(ValueError):
        revisitop_map(ranks, gnd, query_axis=0)  # 7 rows != 3 queries


def test_to_dict_round_trip_fields():
    res = revisitop_map([TINY_RANKING], TINY_GND, "medium", ks=(1, 3))
    d = res.to_dict()
    assert d["map"] == res.map and d["n_empty"] == 0 and d["n_queries"] == 1
    assert set(d["mp_at_k"]) == {1, 3}
    q = evaluate_query(TINY_RANKING, [0, 1, 2], [3]).to_dict()
    assert q["positive_ranks"] == [0, 1, 3]


@pytest.mark.parametrize(
    "call",
    [
        lambda: revisitop_map([TINY_RANKING], TINY_GND, "medium-hard"),
        lambda: revisitop_map([TINY_RANKING, TINY_RANKING], TINY_GND),
        lambda: revisitop_map(np.zeros((2, 2, 2), dtype=int), TINY_GND),
        lambda: evaluate_query([1, 1, 2], positives=[1]),
        lambda: evaluate_query([1, 2], positives=[1], junk=[1]),
        lambda: evaluate_query([1, -2], positives=[1]),
        lambda: evaluate_query([1.5, 2], positives=[1]),
        lambda: evaluate_query([1, 2], positives=[1], ks=(0,)),
        lambda: average_precision([0], 0),
        lambda: average_precision([0, 1, 2], 2),
        lambda: revisitop_map([TINY_RANKING], [{"junk": [1]}]),
    ],
)
def test_malformed_inputs_raise(call):
    with pytest.raises(ValueError):
        call()


# --------------------------------------------------------------------------
# Independent reference implementation
# --------------------------------------------------------------------------


def _reference_query(ranking, positives, junk, ks):
    """Deliberately different route: walk the full ranking, build the whole
    precision/recall curve (one point per kept cutoff, starting at (0, 1)),
    then integrate it with trapezoids over consecutive points."""
    positives, junk = set(positives), set(junk)
    n = len(positives)
    if n == 0:
        return float("nan"), [float("nan")] * len(ks)
    recall, precision, hits_at = [0.0], [1.0], [0]
    hits = kept = 0
    for item in ranking:
        if item in junk:
            continue
        kept += 1
        if item in positives:
            hits += 1
        recall.append(hits / n)
        precision.append(hits / kept)
        hits_at.append(hits)
    ap = 0.0
    for c in range(len(recall) - 1):
        ap += (recall[c + 1] - recall[c]) * (precision[c] + precision[c + 1]) / 2.0
    if hits == 0:
        return ap, [0.0] * len(ks)
    last = max(c for c in range(len(hits_at)) if hits_at[c] == hits and hits_at[c - 1] < hits)
    prs = []
    for k in ks:
        kk = min(k, last)
        prs.append(hits_at[kk] / kk)
    return ap, prs


def _random_gnd_and_rankings(rng, n_q):
    n_db = rng.randint(4, 60)
    gnd, rankings = [], []
    for _ in range(n_q):
        labels = rng.choice(4, size=n_db, p=rng.dirichlet(np.ones(4)))  # 0 easy 1 hard 2 junk 3 neg
        gnd.append(
            {
                "easy": np.flatnonzero(labels == 0).tolist(),
                "hard": np.flatnonzero(labels == 1).tolist(),
                "junk": np.flatnonzero(labels == 2).tolist(),
            }
        )
        ranking = rng.permutation(n_db)
        if rng.rand() < 0.3:  # partial ranking: some images never retrieved
            ranking = ranking[: rng.randint(0, n_db + 1)]
        rankings.append(ranking.tolist())
    return n_db, gnd, rankings


@pytest.mark.parametrize("seed", range(20))
def test_agrees_with_reference_implementation(seed):
    rng = np.random.RandomState(seed)
    ks = (1, 2, 5, 10)
    _, gnd, rankings = _random_gnd_and_rankings(rng, n_q=10)  # 20 seeds x 10 = 200 rankings
    for protocol in PROTOCOLS:
        res = revisitop_map(rankings, gnd, protocol, ks)
        ref_aps, ref_prs = [], []
        for ranking, g in zip(rankings, gnd):
            if protocol == "easy":
                pos, junk = g["easy"], g["junk"] + g["hard"]
            elif protocol == "medium":
                pos, junk = g["easy"] + g["hard"], g["junk"]
            else:
                pos, junk = g["hard"], g["junk"] + g["easy"]
            ap, prs = _reference_query(ranking, pos, junk, ks)
            ref_aps.append(ap)
            ref_prs.append(prs)
        np.testing.assert_allclose(res.aps, ref_aps, rtol=0, atol=1e-9, equal_nan=True)
        valid = [i for i, a in enumerate(ref_aps) if not math.isnan(a)]
        assert res.n_empty == len(rankings) - len(valid)
        if valid:
            assert res.map == pytest.approx(np.mean([ref_aps[i] for i in valid]), abs=1e-9)
            for j, k in enumerate(ks):
                assert res.mp_at_k[k] == pytest.approx(np.mean([ref_prs[i][j] for i in valid]), abs=1e-9)
        else:
            assert math.isnan(res.map)


# --------------------------------------------------------------------------
# Pixel retrieval
# --------------------------------------------------------------------------


def test_box_and_mask_iou():
    assert box_iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert box_iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert box_iou([0, 0, 10, 10], [20, 20, 30, 30]) == 0.0
    assert box_iou([0, 0, 0, 0], [0, 0, 0, 0]) == 0.0  # empty union
    m = np.zeros((4, 4), bool)
    assert mask_iou(m, m) == 0.0  # empty union
    a, b = m.copy(), m.copy()
    a[:2, :2] = True
    b[:2, :] = True
    assert mask_iou(a, b) == pytest.approx(4 / 8)
    with pytest.raises(ValueError):
        mask_iou(np.zeros((2, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError):
        box_iou([0, 0, 1], [0, 0, 1, 1])


def _random_boxes(rng, n, size=40):
    x0 = rng.randint(0, size - 2, n)
    y0 = rng.randint(0, size - 2, n)
    x1 = x0 + 1 + rng.randint(0, size - 1 - x0)
    y1 = y0 + 1 + rng.randint(0, size - 1 - y0)
    return np.stack([x0, y0, x1, y1], axis=1)


def _box_mask(box, size=40):
    m = np.zeros((size, size), dtype=bool)
    x0, y0, x1, y1 = (int(v) for v in box)
    m[y0:y1, x0:x1] = True
    return m


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("mode", ["ground_truth", "localised"])
def test_perfect_localisation_equals_image_level_map(seed, mode):
    rng = np.random.RandomState(100 + seed)
    n_db, gnd, rankings = _random_gnd_and_rankings(rng, n_q=6)
    gt = [{db: box for db, box in enumerate(_random_boxes(rng, n_db))} for _ in gnd]
    for protocol in PROTOCOLS:
        plain = revisitop_map(rankings, gnd, protocol)
        for kind, regions in (("box", gt), ("mask", [{db: _box_mask(b) for db, b in g.items()} for g in gt])):
            res = pixel_map(rankings, gnd, regions, regions, protocol, kind, n_positives=mode)
            assert set(res.per_threshold) == set(DEFAULT_IOU_THRESHOLDS)
            for t, value in res.per_threshold.items():
                if math.isnan(plain.map):
                    assert math.isnan(value)
                else:
                    assert value == pytest.approx(plain.map, abs=1e-12), (protocol, kind, t)


def _two_positive_case(pred_box_0):
    # One query, medium positives {0, 1}, ranking 0 1 2 3. Positive 1 is
    # perfectly localised; positive 0 gets ``pred_box_0`` against GT 100x100.
    gnd = [{"easy": [0], "hard": [1], "junk": []}]
    gt = [{0: [0, 0, 100, 100], 1: [0, 0, 50, 50]}]
    pred = [{0: pred_box_0, 1: [0, 0, 50, 50]}]
    return [[0, 1, 2, 3]], gnd, pred, gt


def test_iou_between_thresholds_counts_only_below():
    rankings, gnd, pred, gt = _two_positive_case([0, 0, 100, 72])  # IoU 0.72
    assert box_iou(pred[0][0], gt[0][0]) == pytest.approx(0.72)
    res = pixel_map(rankings, gnd, pred, gt)
    # t <= 0.70: both positives hit at ranks 0, 1 -> AP 1.
    # t >= 0.75: positive 0 is a false positive at rank 0, positive 1 hits at
    #   rank 1 with n_res = 2: (0/1 + 1/2) / 2 / 2 = 1/8.
    for t, value in res.per_threshold.items():
        assert value == pytest.approx(1.0 if t < 0.72 else 1 / 8, abs=1e-12), t
    assert res.map == pytest.approx((5 * 1.0 + 5 * 0.125) / 10)
    # The authors' released code divides by the localised positives instead:
    # t >= 0.75 -> (0 + 1/2) / 1 / 2 = 1/4.
    loc = pixel_map(rankings, gnd, pred, gt, n_positives="localised")
    assert loc.map == pytest.approx((5 * 1.0 + 5 * 0.25) / 10)


def test_iou_equal_to_threshold_does_not_count():
    rankings, gnd, pred, gt = _two_positive_case([0, 0, 100, 75])  # IoU exactly 0.75
    res = pixel_map(rankings, gnd, pred, gt, thresholds=[0.7, 0.75])
    assert res.per_threshold == {0.7: pytest.approx(1.0), 0.75: pytest.approx(0.125)}


def test_missing_prediction_is_a_miss():
    rankings, gnd, pred, gt = _two_positive_case(None)  # positive 0: no localisation
    res = pixel_map(rankings, gnd, pred, gt, thresholds=[0.5])
    assert res.per_threshold[0.5] == pytest.approx(0.125)
    # Absent keys and absent query rows are misses too.
    assert pixel_map(rankings, gnd, [{1: [0, 0, 50, 50]}], gt, thresholds=[0.5]).map == pytest.approx(0.125)
    assert pixel_map(rankings, gnd, [{}], gt, thresholds=[0.5]).map == 0.0
    assert pixel_map(rankings, gnd, [None], gt, thresholds=[0.5]).map == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_mask_and_box_variants_agree_for_rectangles(seed):
    rng = np.random.RandomState(200 + seed)
    n_db, gnd, rankings = _random_gnd_and_rankings(rng, n_q=5)
    gt_boxes = [_random_boxes(rng, n_db) for _ in gnd]
    # Predictions: perturbed GT boxes (a spread of IoUs), some missing.
    pred_boxes = []
    for boxes in gt_boxes:
        row = {}
        for db, b in enumerate(boxes):
            if rng.rand() < 0.15:
                continue
            shift = rng.randint(-4, 5, size=4)
            p = np.clip(b + shift, 0, 40)
            p[2], p[3] = max(p[2], p[0] + 1), max(p[3], p[1] + 1)
            row[db] = np.minimum(p, 40)
        pred_boxes.append(row)
    gt_masks = [[_box_mask(b) for b in boxes] for boxes in gt_boxes]
    pred_masks = [{db: _box_mask(b) for db, b in row.items()} for row in pred_boxes]
    for db in range(n_db):
        if db in pred_boxes[0]:
            assert box_iou(pred_boxes[0][db], gt_boxes[0][db]) == pytest.approx(mask_iou(pred_masks[0][db], gt_masks[0][db]), abs=1e-12)
    for protocol in PROTOCOLS:
        box_res = pixel_map(rankings, gnd, pred_boxes, [list(b) for b in gt_boxes], protocol, "box")
        mask_res = pixel_map(rankings, gnd, pred_masks, gt_masks, protocol, "mask")
        assert box_res.per_threshold.keys() == mask_res.per_threshold.keys()
        for t in box_res.per_threshold:
            a, b = box_res.per_threshold[t], mask_res.per_threshold[t]
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-12)


def test_pixel_map_malformed_inputs():
    rankings, gnd, pred, gt = _two_positive_case([0, 0, 1, 1])
    with pytest.raises(ValueError):
        pixel_map(rankings, gnd, pred, gt, kind="polygon")
    with pytest.raises(ValueError):
        pixel_map(rankings, gnd, pred, [{0: [0, 0, 1, 1]}])  # positive 1 lacks GT
    with pytest.raises(ValueError):
        pixel_map(rankings, gnd, pred, gt, thresholds=[])
    with pytest.raises(ValueError):
        pixel_map(rankings, gnd, pred, gt, n_positives="some")


# --------------------------------------------------------------------------
# Label audit
# --------------------------------------------------------------------------


def test_audit_scores_hand_case():
    s = audit_scores([True, True, False, False, True], [True, False, True, False, True])
    assert (s.tp, s.fp, s.fn, s.tn) == (2, 1, 1, 1)
    assert s.precision == pytest.approx(2 / 3)
    assert s.recall == pytest.approx(2 / 3)
    assert s.f1 == pytest.approx(2 / 3)
    s2 = audit_scores([1, 1, 1, 0], [1, 0, 0, 0])
    assert (s2.precision, s2.recall) == (pytest.approx(1 / 3), 1.0)
    assert s2.f1 == pytest.approx(2 * (1 / 3) / (4 / 3))
    assert s2.to_dict()["tp"] == 1


def test_audit_scores_zero_over_zero_is_zero():
    nothing_flagged = audit_scores([False, False, False], [True, False, True])
    assert (nothing_flagged.precision, nothing_flagged.recall, nothing_flagged.f1) == (0.0, 0.0, 0.0)
    assert nothing_flagged.fn == 2
    no_errors = audit_scores([False, False], [False, False])
    assert (no_errors.precision, no_errors.recall, no_errors.f1, no_errors.tn) == (0.0, 0.0, 0.0, 2)
    empty = audit_scores([], [])
    assert (empty.precision, empty.recall, empty.f1, empty.tp + empty.fp + empty.fn + empty.tn) == (0, 0, 0, 0)
    with pytest.raises(ValueError):
        audit_scores([True], [True, False])
    with pytest.raises(ValueError):
        audit_scores([2], [True])


def test_suggestion_accuracy():
    suggested = ["a", None, "c", "x"]
    truth = ["a", "b", "c", "d"]
    assert suggestion_accuracy(suggested, truth, among=[True, True, False, True]) == pytest.approx(1 / 3)
    assert suggestion_accuracy(suggested, truth) == pytest.approx(2 / 4)
    assert math.isnan(suggestion_accuracy(suggested, truth, among=[False] * 4))
    assert math.isnan(suggestion_accuracy([], []))
    with pytest.raises(ValueError):
        suggestion_accuracy(suggested, truth[:3])
    with pytest.raises(ValueError):
        suggestion_accuracy(suggested, truth, among=[True])
