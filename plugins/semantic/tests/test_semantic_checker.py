"""The reflection checker inside the engine: votes, abstentions, the frontal
controller's skips, the persistent answer cache, and plugin registration."""

from __future__ import annotations

import pytest

import consist
from consist import Candidate, Engine, EngineConfig, Neighbour, Prediction, Query, RunStatus, Sample, open_store
from consist.plugins import checkers, plugin_infos
from consist_semantic import AnswerCache, FrontalController, OpenAIChatBackend, ReflectionChecker
from consist_semantic.backends import LMMUnavailable, backend_factories, backend_from_env
from consist_semantic.testing import Reply, question_label, yes_no_reply


def truth_script(truth: str, *, coverage: float = 0.95):
    """Answers yes (0.95) when asked about ``truth``, no (0.05) otherwise."""

    def script(req):
        label = question_label(req.prompt)
        return yes_no_reply(0.95 if label == truth else 0.05, coverage=coverage)

    return script


def lmm(server):
    return OpenAIChatBackend(server.base_url, "scripted-vlm", backoff_s=0.01, timeout=5)


def neighbours(labels):
    return [Neighbour(Sample(f"n{i}", label=lab), 0.9 - 0.05 * i, i) for i, lab in enumerate(labels)]


def test_reflection_corrects_a_wrong_candidate(server, photo):
    server.script = truth_script("cat")
    checker = ReflectionChecker(lmm(server), frontal=False)
    p = Prediction(Query("q", image=photo), [Candidate("dog", 0.55), Candidate("cat", 0.45)])
    d = Engine(["knn", checker]).verify(p, neighbours(["cat", "dog", "cat"]))
    assert d.label == "cat" and d.changed
    asked = {question_label(r.prompt) for r in server.requests}
    assert asked == {"dog", "cat"}
    votes = {v.label: v for v in d.votes_for("cat") + d.votes_for("dog") if v.checker == "reflection"}
    assert votes["cat"].support == pytest.approx(0.95) and votes["cat"].confidence == pytest.approx(0.95)
    assert votes["dog"].support == pytest.approx(0.05)
    assert votes["cat"].evidence["question"] == "Does the picture show a cat? Answer yes or no."


def test_competitor_from_neighbours_is_asked(server, photo):
    server.script = truth_script("cat")
    checker = ReflectionChecker(lmm(server), frontal=False)
    p = Prediction(Query("q", image=photo), [Candidate("dog", 0.9)])
    d = Engine([checker]).verify(p, neighbours(["cat", "cat", "bird"]))
    assert {question_label(r.prompt) for r in server.requests} == {"dog", "cat"}
    assert d.label == "cat"


def test_low_coverage_everywhere_is_an_abstention(server, photo):
    server.script = truth_script("cat", coverage=0.2)
    checker = ReflectionChecker(lmm(server), frontal=False)
    d = Engine([checker]).verify(Prediction(Query("q", image=photo), [Candidate("cat", 0.5)]), [])
    (run,) = d.runs
    assert run.status is RunStatus.ABSTAINED and "coverage 0.20 < 0.5" in run.reason


def test_server_failure_is_a_recorded_failure_not_a_crash(server, photo):
    server.script = lambda req: Reply(500, {"error": "down"})
    checker = ReflectionChecker(OpenAIChatBackend(server.base_url, "m", backoff_s=0.01, max_retries=1), frontal=False)
    d = Engine([checker]).verify(Prediction(Query("q", image=photo), [Candidate("cat", 0.5)]), [])
    assert d.runs[0].status is RunStatus.FAILED and "HTTP 500" in d.runs[0].reason


def test_no_backend_configured_abstains_with_a_hint(photo):
    d = Engine([ReflectionChecker(frontal=False)]).verify(Prediction(Query("q", image=photo), [Candidate("cat", 0.5)]), [])
    assert d.runs[0].status is RunStatus.ABSTAINED and "CONSIST_LMM_BASE_URL" in d.runs[0].reason


def test_region_is_cropped_before_asking(server, photo):
    checker = ReflectionChecker(lmm(server), frontal=False)
    q = Query("q", image=photo, region=consist.Region(box=(10, 20, 110, 220)))
    Engine([checker]).verify(Prediction(q, [Candidate("cat", 0.5)]), [])
    import base64
    import io

    from PIL import Image

    sent = Image.open(io.BytesIO(base64.b64decode(server.requests[0].image_urls[0].split(",", 1)[1])))
    assert sent.size == (100, 200)


def test_answers_are_cached_in_the_store(server, photo, tmp_path):
    server.script = truth_script("cat")
    store = open_store(str(tmp_path / "s.db"))
    p = Prediction(Query("q", image=photo), [Candidate("cat", 0.6)])
    d1 = Engine([ReflectionChecker(lmm(server), frontal=False)], store=store).verify(p, [], adapt=False)
    n = len(server.requests)
    assert n == 1
    # a new checker (new process): the answer comes from the store
    fresh = ReflectionChecker(lmm(server), frontal=False, cache=AnswerCache())
    d2 = Engine([fresh], store=store).verify(p, [], adapt=False)
    assert len(server.requests) == n and fresh.cache_hits == 1 and fresh.model_calls == 0
    assert d2.votes[0].evidence["cached"] is True and d1.votes[0].support == d2.votes[0].support
    assert any(k.startswith("lmm-answer/v1/") for k in store.artefact_kinds())
    # another model is another key
    other = ReflectionChecker(OpenAIChatBackend(server.base_url, "other-model"), frontal=False, cache=AnswerCache())
    Engine([other], store=store).verify(p, [], adapt=False)
    assert len(server.requests) == n + 1


def test_options_are_validated_early(server):
    with pytest.raises(consist.ConsistError, match="unknown option"):
        Engine([ReflectionChecker(lmm(server))], config=EngineConfig(checker_options={"reflection": {"tempalte": "x"}}))
    with pytest.raises(consist.ConsistError, match="must contain"):
        Engine([ReflectionChecker(lmm(server))], config=EngineConfig(checker_options={"reflection": {"template": "Is it?"}}))


class _Fixed(consist.BaseChecker):
    """A cheap checker casting a fixed vote (stands in for spatial evidence)."""

    name = "fixed"
    cost = 0.01
    timeout = None

    def __init__(self, label, support, confidence=1.0):
        self.label, self.support, self.confidence = label, support, confidence

    def check(self, prediction, neighbours, context):
        return [self.vote(self.label, self.support, self.confidence)]


class _Signal(consist.BaseChecker):
    name = "community"
    cost = 0.02
    timeout = None

    def __init__(self, value):
        self.value = value

    def check(self, prediction, neighbours, context):
        context.signals["community_uncertainty"] = self.value
        raise consist.Abstain("only publishes a signal")


def test_frontal_controller_skips_clear_decisions(server, photo):
    frontal = FrontalController()
    checker = ReflectionChecker(lmm(server), frontal=frontal)
    # clear: recognizer 0.8 + strong agreeing evidence, but below stop_confidence 0.999
    cfg = EngineConfig(controller=consist.ControllerConfig(stop_confidence=0.999))
    engine = Engine([_Fixed("cat", 0.97), checker], config=cfg)
    d = engine.verify(Prediction(Query("q", image=photo), [Candidate("cat", 0.8), Candidate("dog", 0.1)]), [])
    run = next(r for r in d.runs if r.checker == "reflection")
    assert run.status is RunStatus.SKIPPED and run.reason.startswith("frontal: certain enough")
    assert server.requests == []
    # unclear: the cheap evidence disagrees with the recognizer
    engine = Engine([_Fixed("cat", 0.3), checker], config=cfg)
    d = engine.verify(Prediction(Query("q2", image=photo), [Candidate("cat", 0.6), Candidate("dog", 0.4)]), [])
    assert next(r for r in d.runs if r.checker == "reflection").status is RunStatus.RAN
    st = frontal.stats
    assert (st.consulted, st.reflected, st.skipped) == (2, 1, 1) and st.reasons["margin"] == 1


def test_frontal_controller_listens_to_community_uncertainty(server, photo):
    frontal = FrontalController()
    cfg = EngineConfig(controller=consist.ControllerConfig(stop_confidence=0.999))
    p = Prediction(Query("q", image=photo), [Candidate("cat", 0.8), Candidate("dog", 0.1)])
    for value, expected in ((0.2, RunStatus.SKIPPED), (2.3, RunStatus.RAN)):
        engine = Engine([_Fixed("cat", 0.97), _Signal(value), ReflectionChecker(lmm(server), frontal=frontal)], config=cfg)
        d = engine.verify(p, [])
        run = next(r for r in d.runs if r.checker == "reflection")
        assert run.status is expected, run.reason
    assert frontal.stats.reasons == {"community": 1}


def test_plugin_registration(monkeypatch, server):
    found = checkers()
    assert "reflection" in found and found["reflection"].enabled_by_default is False  # no LMM configured
    assert "knn" in {c.name for c in Engine().checkers} and "reflection" not in {c.name for c in Engine().checkers}
    info = next(i for i in plugin_infos() if i.name == "semantic")
    assert "reflection" in info.checkers and "consist_skip_checker" in info.hooks
    assert set(backend_factories()) >= {"openai", "transformers"}
    monkeypatch.setenv("CONSIST_LMM_BASE_URL", server.base_url)
    monkeypatch.setenv("CONSIST_LMM_MODEL", "env-model")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env-123456")
    consist.plugins.reset_plugins()
    assert checkers()["reflection"].enabled_by_default is True
    b = backend_from_env()
    assert b.model == "env-model" and "sk-from-env" not in repr(b)
    b.chat(consist_semantic_request())
    assert server.requests[-1].headers["Authorization"] == "Bearer sk-from-env-123456"


def consist_semantic_request():
    from consist_semantic import ChatRequest

    return ChatRequest("q?")


def test_backend_from_env_errors(monkeypatch):
    with pytest.raises(LMMUnavailable, match="no LMM configured"):
        backend_from_env({})
    with pytest.raises(LMMUnavailable, match="unknown LMM back-end 'nope'"):
        backend_from_env({"CONSIST_LMM_BACKEND": "nope"})
    with pytest.raises(LMMUnavailable, match="no such model folder"):
        backend_from_env({"CONSIST_LMM_MODEL_PATH": "/nonexistent/model"})


def test_third_party_backend_through_the_plugins_hookspec(install_backend_plugin):
    b = backend_from_env({"CONSIST_LMM_BACKEND": "echo", "CONSIST_LMM_MODEL": "e1"})
    assert b.name == "echo" and b.chat(consist_semantic_request()).text == "yes"


@pytest.fixture
def install_backend_plugin(tmp_path, monkeypatch):
    import importlib
    import sys
    import textwrap

    site = tmp_path / "site"
    site.mkdir()
    (site / "echo_backend.py").write_text(
        textwrap.dedent("""
        import consist
        from consist_semantic import ChatAnswer

        class Echo:
            name = "echo"
            def __init__(self, model="e", **options):
                self.model = model
            def chat(self, request):
                return ChatAnswer(text="yes", model=self.model)

        @consist.hookimpl
        def consist_semantic_register_backends(register):
            register("echo", Echo)
    """)
    )
    dist = site / "echo_backend-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-backend\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[consist]\necho_backend = echo_backend\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    consist.plugins.reset_plugins()
    yield
    sys.modules.pop("echo_backend", None)


def test_frontal_posterior_confidence_is_optional(server, photo):
    cfg = EngineConfig(controller=consist.ControllerConfig(stop_confidence=0.999))
    p = Prediction(Query("q", image=photo), [Candidate("cat", 0.8), Candidate("dog", 0.01)])
    for min_conf, expected in ((None, RunStatus.SKIPPED), (0.99, RunStatus.RAN)):
        fc = FrontalController(min_confidence=min_conf)
        d = Engine([_Fixed("cat", 0.9), ReflectionChecker(lmm(server), frontal=fc)], config=cfg).verify(p, [])
        assert next(r for r in d.runs if r.checker == "reflection").status is expected
    with pytest.raises(ValueError):
        FrontalController(min_confidence=1.5)


def test_labels_are_asked_concurrently_and_partial_failures_are_kept(server, photo):
    import threading
    import time

    live, peak, lock = [], [], threading.Lock()

    def script(req):
        with lock:
            live.append(1)
            peak.append(len(live))
        time.sleep(0.1)
        with lock:
            live.pop()
        if question_label(req.prompt) == "dog":
            return Reply(400, {"error": "bad request for dog"})
        return yes_no_reply(0.9)

    server.script = script
    checker = ReflectionChecker(lmm(server), frontal=False)
    p = Prediction(Query("q", image=photo), [Candidate("cat", 0.5), Candidate("dog", 0.45)])
    d = Engine([checker]).verify(p, neighbours(["bird"]))
    assert max(peak) >= 2  # cat, dog and bird were in flight together
    assert {v.label for v in d.votes} == {"cat", "bird"} and d.runs[0].status is RunStatus.RAN


def test_frontal_reflects_before_a_correction(server, photo):
    cfg = EngineConfig(controller=consist.ControllerConfig(stop_confidence=0.999))
    # the cheap evidence overturns the recognizer with a wide margin
    p = Prediction(Query("q", image=photo), [Candidate("cat", 0.6)])
    for on_change, expected in ((True, RunStatus.RAN), (False, RunStatus.SKIPPED)):
        fc = FrontalController(reflect_on_change=on_change)
        checker = ReflectionChecker(lmm(server), frontal=fc)
        d = Engine([_Fixed("dog", 0.999), checker], config=cfg).verify(p, [])
        assert next(r for r in d.runs if r.checker == "reflection").status is expected
    assert fc.stats.skipped == 1
