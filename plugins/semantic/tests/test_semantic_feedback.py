"""Conversational feedback (grammar and LMM parsing, `consist tell`), grounded
questions (`consist ask`) and the connector, on real stores and a real HTTP server."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from consist import Sample, open_store
from consist.cli.main import _add_plugin_commands, cli
from consist_semantic import OpenAIChatBackend
from consist_semantic.connector import Connector, Domain
from consist_semantic.conversation import Alias, Attribute, FeedbackError, Note, Relabel, apply_plan, tell, understand
from consist_semantic.grounded import ask
from consist_semantic.testing import Reply, completion


@pytest.fixture
def store(tmp_path):
    s = open_store(str(tmp_path / "s.db"))
    s.put([Sample("a", label="bodleian_library"), Sample("b", label="radcliffe_camera"), Sample("m", label="mug_blue"), Sample("r", label="mug_red")])
    yield s
    s.close()


@pytest.mark.parametrize(
    "target, sentence, expected",
    [
        ("m", "this is my mug", [Relabel("m", "my mug", None, "new")]),
        ("a", "that's the Radcliffe Camera, not the Bodleian", [Relabel("a", "radcliffe_camera", "Bodleian", "normalised")]),
        ("a", "No, this isn't the Bodleian, it's the Radcliffe Camera.", [Relabel("a", "radcliffe_camera", "Bodleian", "normalised")]),
        ("m", "call the blue one Bluey", [Alias("Bluey", "mug_blue")]),
        ("m", 'call it "Big Blue"', [Alias("Big Blue", "mug_blue")]),
        (None, "call the radcliffe camera RadCam", [Alias("RadCam", "radcliffe_camera")]),
        (None, "Rad Cam is my name for the Radcliffe Camera", [Alias("Rad Cam", "radcliffe_camera")]),
        ("b", "it is called the Rad Cam", [Alias("Rad Cam", "radcliffe_camera")]),
        ("a", "note: taken from the roof; its colour is sandy yellow", [Note("a", "taken from the roof"), Attribute("a", "colour", "sandy yellow")]),
        ("a", "remember that the library was closed", [Note("a", "the library was closed")]),
    ],
)
def test_grammar(store, target, sentence, expected):
    plan, _ = tell(store, sentence, target, apply=False)
    assert list(plan.actions) == expected and plan.parser == "grammar"


def test_grammar_refuses_what_it_does_not_understand(store):
    with pytest.raises(FeedbackError, match="cannot understand 'the weather is nice today and so on' without an LMM|forms understood"):
        tell(store, "the weather is nice today and so on; blah", "a", apply=False)
    with pytest.raises(FeedbackError, match="is about an image"):
        tell(store, "this is my mug", None, apply=False)


def test_contradiction_is_a_warning(store):
    plan, _ = tell(store, "it's the bodleian, not the eiffel tower", "b", apply=False)
    assert plan.actions == (Relabel("b", "bodleian_library", "eiffel tower", "partial"),)
    assert "not 'eiffel tower'" in plan.warnings[0]


def test_applied_actions_are_user_provenance_and_undoable(store):
    _plan, entries = tell(store, "that's the Radcliffe Camera, not the Bodleian; call it Rad Cam; note: north side", "a")
    assert [e.action for e in entries] == ["relabel", "alias", "note"]
    assert all(e.provenance.value == "user" for e in entries)
    assert entries[0].reason.startswith("told: that's the Radcliffe Camera")
    assert store.get("a").label == "radcliffe_camera" and store.aliases() == {"Rad Cam": "radcliffe_camera"}
    for e in reversed(entries):
        store.undo(e.seq)
    assert store.get("a").label == "bodleian_library" and store.aliases() == {} and "notes" not in store.get("a").meta


def test_a_failing_action_applies_nothing(store):
    store.set_alias("Bluey", "mug_red")
    plan = understand("this is my mug; call it Mug Red", store, store.get("m"))  # "Mug Red" would hide a label
    with pytest.raises(Exception, match="already a label"):
        apply_plan(store, plan)
    assert store.get("m").label == "mug_blue"


def lmm_script(actions):
    return lambda req: Reply(json=completion(json.dumps({"actions": actions})))


def test_lmm_parses_free_text(server, store, photo, tmp_path):
    path = tmp_path / "m.png"
    Image.fromarray(photo).save(path)
    store.put([Sample("m", uri=str(path), label="mug_blue")])
    server.script = lmm_script([{"type": "alias", "name": "Bluey"}, {"type": "attribute", "key": "Colour", "value": "blue"}])
    b = OpenAIChatBackend(server.base_url, "m", backoff_s=0.01)
    plan, entries = tell(store, "the blue one, I usually call her Bluey, she's blue", "m", backend=b)
    assert plan.parser == "lmm" and list(plan.actions) == [Alias("Bluey", "mug_blue"), Attribute("m", "colour", "blue")]
    req = server.requests[-1]
    assert req.body["response_format"] == {"type": "json_object"} and "Existing labels: bodleian_library" in req.prompt
    assert len(req.image_urls) == 1 and len(entries) == 2


def test_lmm_answer_that_does_not_validate_falls_back_to_the_grammar(server, store):
    server.script = lambda req: Reply(json=completion("Sure! The user means a mug."))
    b = OpenAIChatBackend(server.base_url, "m", backoff_s=0.01)
    plan, _ = tell(store, "this is my mug", "m", backend=b, apply=False)
    assert plan.parser == "grammar" and "did not validate" in plan.warnings[0]
    server.script = lmm_script([{"type": "delete_everything"}])
    plan, _ = tell(store, "this is my mug", "m", backend=b, apply=False)
    assert plan.parser == "grammar"


def run_cli(args, input=None):
    _add_plugin_commands()
    return CliRunner().invoke(cli, args, input=input, catch_exceptions=False)


def test_cli_tell_shows_then_applies(store):
    store_uri = store.uri
    r = run_cli(["tell", "that's the Radcliffe Camera, not the Bodleian", "--sample", "a", "--store", store_uri], input="n\n")
    assert "relabel a as 'radcliffe_camera'" in r.output and "nothing applied" in r.output
    assert store.get("a").label == "bodleian_library"
    r = run_cli(["tell", "that's the Radcliffe Camera, not the Bodleian", "--sample", "a", "--store", store_uri, "--yes"])
    assert r.exit_code == 0 and "consist undo" in r.output
    assert store.get("a").label == "radcliffe_camera"
    r = run_cli(["tell", "call it Rad Cam", "--sample", "a", "--store", store_uri, "--json"])
    data = json.loads(r.stdout)
    assert data["dry_run"] is True and data["applied"] == [] and data["plan"]["actions"][0]["type"] == "alias"
    r = run_cli(["tell", "gibberish here", "--sample", "a", "--store", store_uri])
    assert r.exit_code == 2 and "cannot understand" in r.output


def test_cli_tell_about_a_new_image(store, photo, tmp_path):
    path = tmp_path / "new.png"
    Image.fromarray(photo).save(path)
    r = run_cli(["tell", "this is my cat", "--image", str(path), "--store", store.uri, "--yes", "--json"])
    data = json.loads(r.stdout)
    sid = data["plan"]["target"]
    s = store.get(sid)
    assert s.label == "my cat" and s.provenance.value == "user" and s.uri == str(path.resolve()) and s.embedding is not None


@pytest.fixture
def photo_store(tmp_path):
    skimage_data = pytest.importorskip("skimage.data")
    from consist import plugins

    tiny = plugins.embedders()["tiny"]
    s = open_store(str(tmp_path / "p.db"))
    rows = []
    for name in ("chelsea", "coffee", "astronaut", "rocket"):
        img = getattr(skimage_data, name)()
        for i, crop in enumerate((img, img[: img.shape[0] * 3 // 4], img[:, : img.shape[1] * 3 // 4])):
            path = tmp_path / f"{name}{i}.png"
            Image.fromarray(crop).save(path)
            rows.append(Sample(f"{name}{i}", uri=str(path), label=name, embedding=tiny.embed(crop)))
    s.put(rows)
    s.set_alias("Kitty", "chelsea")
    s.annotate("chelsea1", note="our neighbour's cat")
    yield s, tmp_path
    s.close()


def test_ask_relies_on_verified_neighbours(server, photo_store):
    s, tmp = photo_store
    skimage_data = pytest.importorskip("skimage.data")
    q = tmp / "query.png"
    Image.fromarray(skimage_data.chelsea()[20:, 30:]).save(q)
    server.script = lambda req: Reply(json=completion("This is Kitty, your neighbour's cat."))
    b = OpenAIChatBackend(server.base_url, "m", backoff_s=0.01)
    res = ask(s, str(q), "Whose cat is this?", backend=b, k=6, checkers=["knn"])  # no pixel checker: retrieval only
    assert res.label == "chelsea" and res.answer == "This is Kitty, your neighbour's cat."
    assert res.context and all(c.label == "chelsea" and c.verified_by == () for c in res.context)
    assert {"chelsea0", "chelsea1"} <= {c.sample_id for c in res.context}
    prompt = server.requests[-1].prompt
    assert "also called 'Kitty'" in prompt and "our neighbour's cat" in prompt and "Question: Whose cat is this?" in prompt
    assert server.requests[-1].body["max_tokens"] == 300 and "logprobs" not in server.requests[-1].body
    r = run_cli(["ask", str(q), "Whose cat?", "--store", s.uri, "--context-only", "--json"])
    data = json.loads(r.stdout)
    assert data["answer"] is None and data["relied_on"][0]["label"] == "chelsea"
    r = run_cli(["ask", str(q), "Whose cat?", "--store", s.uri])
    assert r.exit_code == 2 and "no LMM configured" in r.output


def test_ask_keeps_only_geometrically_verified_neighbours(photo_store):
    pytest.importorskip("consist_spatial")
    s, tmp = photo_store
    skimage_data = pytest.importorskip("skimage.data")
    q = tmp / "query.png"
    Image.fromarray(skimage_data.chelsea()[20:, 30:]).save(q)
    res = ask(s, str(q), "Whose cat is this?", k=6, checkers=["knn", "spatial"])
    assert res.answer is None and res.label == "chelsea"
    assert res.context and all(c.label == "chelsea" and "spatial" in c.verified_by for c in res.context)
    assert "verified by spatial" in res.prompt


def test_connector_chooses_by_neighbours_then_confidence(photo_store):
    s, _ = photo_store
    skimage_data = pytest.importorskip("skimage.data")
    animals = Domain("animals", lambda img: [("chelsea", 0.6), ("dog", 0.4)], labels={"chelsea", "dog"})
    things = Domain("things", lambda img: [("rocket", 0.9), ("coffee", 0.1)], labels={"rocket", "coffee", "astronaut"})
    c = Connector([animals, things], store=s, embedder="tiny", k=3)
    choice = c.choose(skimage_data.chelsea())
    assert choice.domain == "animals" and choice.reason.startswith("neighbours:")  # despite lower confidence
    alone = Connector([animals, things])
    choice = alone.choose(skimage_data.chelsea())
    assert choice.domain == "things" and "most confident (0.90 vs animals 0.60)" in choice.reason
    assert alone(np.zeros((8, 8, 3), np.uint8)) == [("rocket", 0.9), ("coffee", 0.1)]
