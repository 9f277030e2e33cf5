"""The local (transformers) back-end's plumbing: next-token log-softmax -> top
log-probabilities -> P(yes), and generation for free text.

transformers is an optional extra and no weights may be downloaded, so the model
and processor here are small *stand-ins built in the test* (a torch module whose
next-token logits are fixed, and a processor with a chat template): they exercise
TransformersBackend's own code, not a real VLM. Loading from a folder is checked
for its error paths.
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from consist_semantic import ChatRequest, ReflectionChecker, encode_image  # noqa: E402
from consist_semantic.backends import LMMUnavailable  # noqa: E402
from consist_semantic.local_backend import TransformersBackend  # noqa: E402

VOCAB = ["<pad>", "Yes", "No", "▁yes", "The", "maybe", "cat", "."]


class _Tok:
    def decode(self, ids, skip_special_tokens=False):
        return "".join(VOCAB[int(i)] for i in ids)


class _Batch(dict):
    def to(self, device):
        return self


class _Processor:
    tokenizer = _Tok()

    def __init__(self):
        self.seen = []

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=False, enable_thinking=None):
        self.seen.append((messages, enable_thinking))
        return "<chat>" + messages[-1]["content"][-1]["text"]

    def __call__(self, text, images=None, return_tensors="pt"):
        self.images = images
        return _Batch(input_ids=torch.ones((1, 5), dtype=torch.long))


class _Out:
    def __init__(self, logits):
        self.logits = logits


class _Model(torch.nn.Module):
    """Next-token distribution: Yes 0.6, ▁yes 0.1, No 0.2, The 0.1 (the rest ~0)."""

    device = "cpu"

    def forward(self, input_ids):
        p = torch.full((len(VOCAB),), 1e-9)
        p[1], p[3], p[2], p[4] = 0.6, 0.1, 0.2, 0.1
        return _Out(torch.log(p).repeat(1, input_ids.shape[1], 1))

    def generate(self, input_ids, max_new_tokens, do_sample, temperature):
        return torch.cat([input_ids, torch.tensor([[6, 7]])], dim=1)


def test_yes_no_from_a_forward_pass(photo):
    proc = _Processor()
    backend = TransformersBackend("tiny-stand-in", model=_Model(), processor=proc)
    r = ReflectionChecker(backend, frontal=False).reflect(encode_image(photo), "cat")
    assert r.answer.p_yes == pytest.approx(0.7 / 0.9, rel=1e-5) and r.answer.coverage == pytest.approx(0.9, rel=1e-5)
    messages, thinking = proc.seen[-1]
    assert thinking is False and messages[-1]["content"][0] == {"type": "image"}
    assert len(proc.images) == 1 and proc.images[0].size[0] <= 768


def test_free_text_generation():
    backend = TransformersBackend("tiny-stand-in", model=_Model(), processor=_Processor())
    answer = backend.chat(ChatRequest("What is it?", max_tokens=20, top_logprobs=0))
    assert answer.text == "cat." and answer.top_logprobs is None
    top = backend.chat(ChatRequest("Is it?", max_tokens=1, top_logprobs=3)).top_logprobs
    assert [t for t, _ in top][:2] == ["Yes", "No"] and top[2][0] in ("▁yes", "The") and math.isclose(top[0][1], math.log(0.6), rel_tol=1e-5)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(LMMUnavailable, match="no such model folder"):
        TransformersBackend(str(tmp_path / "nope"))
    with pytest.raises(LMMUnavailable, match="needs a model folder"):
        TransformersBackend(None)
