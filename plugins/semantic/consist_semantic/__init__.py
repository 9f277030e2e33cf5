"""consist-semantic: LMM reflection with a calibrated yes/no, the frontal controller,
the connector of several recognizers, conversational feedback and grounded questions.

See ``docs/semantic.md``.
"""

from __future__ import annotations

__version__ = "0.1.0"

from consist_semantic.backends import backend_factories, backend_from_env
from consist_semantic.cache import AnswerCache
from consist_semantic.chat import ChatAnswer, ChatRequest, LMMBackend, LMMError, LMMUnavailable
from consist_semantic.frontal import FrontalController, FrontalStats
from consist_semantic.images import EncodedImage, encode_image
from consist_semantic.openai_backend import OpenAIChatBackend
from consist_semantic.questions import article, label_text, render
from consist_semantic.reflection import Reflection, ReflectionChecker, ReflectionConfig
from consist_semantic.yesno import YesNo, yes_no_from_logprobs, yes_no_from_text

__all__ = [
    "AnswerCache",
    "ChatAnswer",
    "ChatRequest",
    "EncodedImage",
    "FrontalController",
    "FrontalStats",
    "LMMBackend",
    "LMMError",
    "LMMUnavailable",
    "OpenAIChatBackend",
    "Reflection",
    "ReflectionChecker",
    "ReflectionConfig",
    "YesNo",
    "__version__",
    "article",
    "backend_factories",
    "backend_from_env",
    "encode_image",
    "label_text",
    "render",
    "yes_no_from_logprobs",
    "yes_no_from_text",
]
