"""The engine: ordering, early stopping, isolation of failing and hanging checkers,
aggregation, overridable policies and the batch API."""

from __future__ import annotations

import math
import threading
import time

import pytest

import consist
from consist import Candidate, Engine, EngineConfig, Prediction, Query, RunStatus
from consist.controller import ControllerConfig


class Fixed(consist.BaseChecker):
    def __init__(self, name, votes, cost=1.0, timeout=5.0, log=None):
        self.name, self._votes, self.cost, self.timeout, self.log = name, votes, cost, timeout, log

    def check(self, prediction, neighbours, context):
        if self.log is not None:
            self.log.append(self.name)
        return [self.vote(label, s, c) for label, s, c in self._votes]


class Raises(consist.BaseChecker):
    name, cost = "raises", 0.1

    def check(self, prediction, neighbours, context):
        raise ZeroDivisionError("plugin bug")


class Hangs(consist.BaseChecker):
    name, cost, timeout = "hangs", 0.2, 0.3

    def __init__(self):
        self.release = threading.Event()

    def check(self, prediction, neighbours, context):
        self.release.wait(30)
        return [self.vote("dog", 0.99)]


def pred(*cands):
    return Prediction(Query("q1"), [Candidate(lab, s) for lab, s in cands])


def test_cheapest_first_and_early_stop_records_reason():
    order = []
    cheap = Fixed(
        "cheap",
        [
            ("cat", 0.999, 1.0),
        ],
        cost=0.01,
        log=order,
    )
    mid = Fixed("mid", [("cat", 0.99, 1.0)], cost=0.5, log=order)
    costly = Fixed("costly", [("dog", 0.99, 1.0)], cost=10, log=order)
    d = Engine([costly, mid, cheap]).verify(pred(("cat", 0.7)), [])
    assert order == ["cheap"]  # confident after the cheapest: the rest never ran
    assert d.label == "cat" and not d.changed
    skipped = {r.checker: r.reason for r in d.skipped}
    assert set(skipped) == {"mid", "costly"}
    assert "stop_confidence" in skipped["costly"]


def test_min_checkers_forces_a_check_of_a_confident_recognizer():
    order = []
    c = Fixed("c", [("dog", 0.99, 1.0)], log=order)
    cfg = EngineConfig(controller=ControllerConfig(min_checkers=0))
    assert Engine([c], config=cfg).verify(pred(("cat", 0.999)), []).label == "cat"
    assert order == []  # trusted the prior
    d = Engine([c]).verify(pred(("cat", 0.999)), [])  # default min_checkers=1
    assert order == ["c"] and d.runs[0].status is RunStatus.RAN


def test_raising_checker_becomes_recorded_abstention():
    good = Fixed("good", [("dog", 0.95, 1.0)])
    d = Engine([Raises(), good]).verify(pred(("cat", 0.55), ("dog", 0.45)), [])
    runs = {r.checker: r for r in d.runs}
    assert runs["raises"].status is RunStatus.FAILED
    assert "ZeroDivisionError: plugin bug" in runs["raises"].reason
    assert d.label == "dog" and d.changed


def test_hanging_checker_times_out_and_is_quarantined():
    hang = Hangs()
    good = Fixed("good", [("cat", 0.8, 1.0)], cost=1.0)
    engine = Engine([hang, good])
    t0 = time.perf_counter()
    d = engine.verify(pred(("cat", 0.5)), [])
    assert time.perf_counter() - t0 < 5
    runs = {r.checker: r for r in d.runs}
    assert runs["hangs"].status is RunStatus.TIMEOUT and "0.3 s" in runs["hangs"].reason
    assert runs["good"].status is RunStatus.RAN
    d2 = engine.verify(pred(("cat", 0.5)), [])  # quarantined: not called again
    assert {r.checker: r for r in d2.runs}["hangs"].reason == "quarantined after a time-out"
    hang.release.set()


@pytest.mark.parametrize(
    "ret, msg",
    [(42, "returned int"), (["x"], "returned a str"), (consist.Vote("w", "cat", 0.9), "returned Vote")],
)
def test_malformed_results_are_failures(ret, msg):
    class Bad(consist.BaseChecker):
        name = "bad"

        def check(self, prediction, neighbours, context):
            return ret

    run = Engine([Bad()]).verify(pred(("cat", 0.5)), []).runs[0]
    assert run.status is RunStatus.FAILED and msg in run.reason


def test_invalid_vote_values_fail_inside_the_checker():
    class OutOfRange(consist.BaseChecker):
        name = "oor"

        def check(self, prediction, neighbours, context):
            return [self.vote("cat", 1.7)]

    run = Engine([OutOfRange()]).verify(pred(("cat", 0.5)), []).runs[0]
    assert run.status is RunStatus.FAILED and "support must be in [0, 1]" in run.reason


def test_abstain_and_empty_are_abstentions():
    class Abst(consist.BaseChecker):
        name = "abst"

        def check(self, prediction, neighbours, context):
            raise consist.Abstain("no neighbours verified")

    d = Engine([Abst(), Fixed("empty", [])]).verify(pred(("cat", 0.5)), [])
    assert [(r.status, r.reason) for r in d.runs] == [(RunStatus.ABSTAINED, "no neighbours verified"), (RunStatus.ABSTAINED, "no votes")]
    assert d.confidence == pytest.approx(0.5)  # no evidence: the prior alone


def test_votes_are_signed_with_the_checker_name():
    class Forger(consist.BaseChecker):
        name = "forger"

        def check(self, prediction, neighbours, context):
            return [consist.Vote("someone-else", "cat", 0.9)]

    d = Engine([Forger()]).verify(pred(("cat", 0.5)), [])
    assert d.votes[0].checker == "forger"


def test_context_carries_previous_votes_scores_options_and_signals():
    seen = {}

    class First(consist.BaseChecker):
        name, cost = "first", 0.1

        def check(self, prediction, neighbours, context):
            context.signals["community_uncertainty"] = 1.5
            return [self.vote("cat", 0.7)]

    class Second(consist.BaseChecker):
        name, cost = "second", 1.0

        def check(self, prediction, neighbours, context):
            seen.update(votes=context.votes, scores=dict(context.scores), config=dict(context.config), signals=dict(context.signals))
            return []

    cfg = EngineConfig(checker_options={"second": {"k": 3}})
    Engine([Second(), First()], config=cfg).verify(pred(("cat", 0.5)), [])
    assert [v.checker for v in seen["votes"]] == ["first"]
    assert seen["scores"]["cat"] == pytest.approx(math.log(0.7 / 0.3))
    assert seen["config"] == {"k": 3} and seen["signals"] == {"community_uncertainty": 1.5}


def test_unknown_checker_name_is_a_clear_error():
    with pytest.raises(consist.ConsistError, match="unknown checker 'nope'"):
        Engine(["nope"])


def test_localisations_come_from_supporting_votes_with_regions():
    class Loc(consist.BaseChecker):
        name = "loc"

        def check(self, prediction, neighbours, context):
            n = neighbours[0]
            return [self.vote("cat", 0.9, neighbour=n, polygon=[[0, 0], [10, 0], [10, 10]]), self.vote("dog", 0.2, neighbour=n, box=[0, 0, 5, 5])]

    nb = consist.Neighbour(consist.Sample("s1", label="cat"), 0.9, 0)
    d = Engine([Loc()]).verify(pred(("cat", 0.5)), [nb])
    assert len(d.localisations) == 1
    assert d.localisations[0].sample_id == "s1" and d.localisations[0].region.polygon[1] == (10.0, 0.0)


def test_aggregation_can_be_overridden_by_a_plugin(install_plugin):
    install_plugin(
        "consist_test_agg",
        """
import consist
from consist.aggregate import AggregateResult

@consist.hookimpl
def consist_aggregate(prediction, votes, config):
    return AggregateResult(scores={"zebra": 9.0}, label="zebra", confidence=0.999)
""",
    )
    d = Engine([Fixed("f", [("cat", 0.9, 1.0)])]).verify(pred(("cat", 0.5)), [])
    assert d.label == "zebra" and d.changed


def test_skip_hook_adds_reasons(install_plugin):
    install_plugin(
        "consist_test_skip",
        """
import consist

@consist.hookimpl
def consist_skip_checker(checker, state):
    if checker.name == "expensive" and state.current.margin > 1.0:
        return "frontal: margin is large"
""",
    )
    d = Engine([Fixed("cheap", [("cat", 0.8, 1.0)], cost=0.1), Fixed("expensive", [("dog", 0.99, 1.0)], cost=9)]).verify(pred(("cat", 0.5), ("dog", 0.1)), [])
    assert {r.checker: r.reason for r in d.skipped} == {"expensive": "frontal: margin is large"}


def test_failing_observer_does_not_break_decisions(install_plugin):
    install_plugin(
        "consist_test_obs",
        """
import consist
SEEN = []

@consist.hookimpl
def consist_decision_made(decision, prediction):
    SEEN.append(decision.query_id)
    raise RuntimeError("observer bug")
""",
    )
    import consist_test_obs

    d = Engine([Fixed("f", [("cat", 0.9, 1.0)])]).verify(pred(("cat", 0.5)), [])
    assert d.label == "cat" and consist_test_obs.SEEN == ["q1"]


def test_verify_many_is_lazy_and_matches_verify():
    e = Engine([Fixed("f", [("dog", 0.99, 1.0)])])  # unlisted dog: -2 + 4.6 beats cat's 0.4
    items = [(Prediction(Query(f"q{i}"), [Candidate("cat", 0.6)]), []) for i in range(5)]
    gen = e.verify_many(iter(items))
    assert not isinstance(gen, list)
    out = list(gen)
    assert [d.query_id for d in out] == [f"q{i}" for i in range(5)]
    assert all(d.label == "dog" for d in out)


def test_decision_round_trips_through_json():
    d = Engine([Raises(), Fixed("f", [("dog", 0.9, 1.0)])]).verify(pred(("cat", 0.6)), [])
    again = consist.Decision.from_json(d.to_json())
    assert again == d


def test_negligible_checkers_do_not_satisfy_min_checkers():
    order = []
    free = Fixed("free", [("cat", 0.999, 1.0)], cost=1e-5, log=order)
    real = Fixed("real", [("dog", 0.99, 1.0)], cost=0.5, log=order)
    d = Engine([free, real]).verify(pred(("cat", 0.9)), [])
    assert order == ["free", "real"]  # confident after "free", but it does not count
    assert [r.status for r in d.runs] == [RunStatus.RAN, RunStatus.RAN]


def test_evidence_localisations_list_localises_several_neighbours():
    class Multi(consist.BaseChecker):
        name = "multi"

        def check(self, prediction, neighbours, context):
            return [
                self.vote(
                    "cat", 0.9, neighbour=neighbours[0], evidence={"polygon": [[0, 0], [4, 0], [4, 4]], "localisations": [{"neighbour": "s2", "box": [1, 1, 3, 3], "score": 0.7}, {"neighbour": "s3"}]}
                )
            ]

    nb = [consist.Neighbour(consist.Sample(f"s{i}", label="cat"), 0.9, i) for i in (1, 2, 3)]
    d = Engine([Multi()]).verify(pred(("cat", 0.5)), nb)
    assert [(loc.sample_id, loc.score) for loc in d.localisations] == [("s1", 0.9), ("s2", 0.7)]


def test_checker_options_are_validated_when_the_engine_is_built():
    class Strict(consist.BaseChecker):
        name = "strict"

        def validate_options(self, options):
            if set(options) - {"k"}:
                raise ValueError(f"unknown option(s) {sorted(set(options) - {'k'})}")

        def check(self, prediction, neighbours, context):
            return []

    with pytest.raises(consist.ConsistError, match=r"checker 'strict': bad options: unknown option\(s\) \['kk'\]"):
        Engine([Strict()], config=EngineConfig(checker_options={"strict": {"kk": 3}}))
    Engine([Strict()], config=EngineConfig(checker_options={"strict": {"k": 3}}))


def test_checker_options_with_a_misspelled_checker_name_fail_early() -> None:
    from consist import ConsistError, Engine, EngineConfig

    with pytest.raises(ConsistError, match="did you mean 'knn'"):
        Engine(["knn"], config=EngineConfig(checker_options={"knnn": {"alpha": 1.0}}))
    Engine(["knn"], config=EngineConfig(checker_options={"some_absent_plugin": {"x": 1}}))  # only a warning


def test_prediction_accepts_label_score_pairs() -> None:
    from consist import Candidate, Prediction, Query

    p = Prediction(Query("q"), [("cat", 0.6), ("dog", 0.3)])
    assert p.top == Candidate("cat", 0.6) and p.score_of("dog") == 0.3
    with pytest.raises(TypeError, match="label, score"):
        Prediction(Query("q"), [("cat",)])
