"""A local vision-language model through Hugging Face transformers (optional extra
``consist-semantic[local]``).

The model is loaded from a folder the user gives, with ``local_files_only=True``:
nothing is ever downloaded. A yes/no question is one forward pass: the logits of
the next token after the chat prompt give the same "top log-probabilities of the
first answer token" an OpenAI-compatible server returns, so the reflection checker
treats both alike. Free text (``consist ask``) uses ``generate``.

Any model that ``AutoProcessor`` and ``AutoModelForImageTextToText`` (or
``AutoModelForVision2Seq`` on older transformers) load and whose processor has a chat
template works: Qwen2-VL / Qwen2.5-VL, LLaVA(-NeXT), Idefics, SmolVLM, Gemma 3.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

from consist_semantic.chat import ChatAnswer, ChatRequest, LMMError, LMMUnavailable

__all__ = ["TransformersBackend"]


class TransformersBackend:
    """A local VLM; one call at a time (a lock), on ``device`` (``cpu``, ``cuda``)."""

    name = "transformers"

    def __init__(self, model_path: str | None, *, device: str = "cpu", dtype: str = "auto", model: Any = None, processor: Any = None, timeout: float | None = None) -> None:
        self._lock = threading.Lock()
        self.device = device
        if model is not None and processor is not None:  # already built (tests, notebooks)
            self._model, self._processor = model, processor
            self.model = str(model_path or getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__)
            return
        if not model_path:
            raise LMMUnavailable("the transformers back-end needs a model folder (CONSIST_LMM_MODEL_PATH)")
        path = Path(model_path).expanduser()
        if not path.is_dir():
            raise LMMUnavailable(f"{path}: no such model folder (the transformers back-end never downloads; give a local path)")
        try:
            import torch
            import transformers
        except ImportError as exc:
            raise LMMUnavailable(f"the transformers back-end needs torch and transformers: pip install 'consist-semantic[local]' ({exc})") from exc
        auto = getattr(transformers, "AutoModelForImageTextToText", None) or transformers.AutoModelForVision2Seq
        torch_dtype = getattr(torch, dtype) if dtype != "auto" else "auto"
        try:
            self._processor = transformers.AutoProcessor.from_pretrained(str(path), local_files_only=True)
            self._model = auto.from_pretrained(str(path), local_files_only=True, torch_dtype=torch_dtype).to(device).eval()
        except (OSError, ValueError) as exc:
            raise LMMUnavailable(f"{path}: cannot load a vision-language model: {exc}") from exc
        self.model = str(path)

    def __repr__(self) -> str:
        return f"TransformersBackend(model={self.model!r}, device={self.device!r})"

    def _inputs(self, request: ChatRequest) -> Any:
        from PIL import Image

        images = [Image.open(io.BytesIO(i.data)).convert("RGB") for i in request.images]
        content: list[dict[str, Any]] = [{"type": "image"} for _ in images] + [{"type": "text", "text": request.prompt}]
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append({"role": "system", "content": [{"type": "text", "text": request.system}]})
        messages.append({"role": "user", "content": content})
        kwargs: dict[str, Any] = {"add_generation_prompt": True, "tokenize": False}
        try:  # thinking off where the template supports the switch (Qwen3 and kin)
            text = self._processor.apply_chat_template(messages, enable_thinking=False, **kwargs)
        except TypeError:
            text = self._processor.apply_chat_template(messages, **kwargs)
        inputs = self._processor(text=[text], images=images or None, return_tensors="pt")
        return inputs.to(self._model.device)

    def chat(self, request: ChatRequest) -> ChatAnswer:
        import torch

        tok = getattr(self._processor, "tokenizer", self._processor)
        with self._lock, torch.inference_mode():
            try:
                inputs = self._inputs(request)
                if request.max_tokens == 1 or request.top_logprobs > 0:
                    logits = self._model(**inputs).logits[0, -1].float()
                    logp = torch.log_softmax(logits, dim=-1)
                    k = max(1, min(request.top_logprobs or 1, logp.shape[-1]))
                    values, ids = torch.topk(logp, k)
                    top = tuple((tok.decode([int(i)]), float(v)) for v, i in zip(values, ids))
                    if request.max_tokens == 1:
                        return ChatAnswer(text=top[0][0], top_logprobs=top, chosen=top[0], model=self.model)
                out = self._model.generate(**inputs, max_new_tokens=request.max_tokens, do_sample=request.temperature > 0, temperature=request.temperature or None)
                n_in = inputs["input_ids"].shape[1]
                text = tok.decode(out[0, n_in:], skip_special_tokens=True)
            except (RuntimeError, ValueError, TypeError) as exc:
                raise LMMError(f"local model {self.model}: {type(exc).__name__}: {exc}") from exc
        return ChatAnswer(text=text.strip(), model=self.model)
