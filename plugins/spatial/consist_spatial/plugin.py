"""Entry point of the ``consist-spatial`` distribution (group ``consist``, name ``spatial``):
the ``spatial`` checker, the local-feature extractors, the ``asmk`` retriever, the
``spatial`` re-ranker and the ``index``/``query`` commands, all through the public hooks."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

import consist
from consist.contracts import Checker, ExtractorFactory, FeatureExtractor, Reranker, Retriever


@consist.hookimpl
def consist_register_checkers(register: Callable[[Checker], None]) -> None:
    from consist_spatial.checker import SpatialChecker

    register(SpatialChecker())


def _extractor(name: str, **options: Any) -> FeatureExtractor:
    from consist_spatial import make_extractor

    return make_extractor(name, **options)


@consist.hookimpl
def consist_register_extractors(register: Callable[[str, ExtractorFactory], None]) -> None:
    from consist_spatial import EXTRACTORS

    for name in EXTRACTORS:
        register(name, functools.partial(_extractor, name))


@consist.hookimpl
def consist_register_retrievers(register: Callable[[Retriever], None]) -> None:
    from consist_spatial import AsmkRetriever  # faiss/asmk load on first use

    register(AsmkRetriever())


@consist.hookimpl
def consist_register_rerankers(register: Callable[[Reranker], None]) -> None:
    from consist_spatial.rerankers import SpatialReranker

    register(SpatialReranker())


@consist.hookimpl
def consist_register_commands(cli: click.Group) -> None:
    from consist_spatial.cli import register

    register(cli)
