"""``consist review AUDIT_DIR``: a local web app to review an audit, fix labels and
give pixel-level feedback.

The store is the one truth: every action of the page is a store history entry with
user provenance (undoable from the page and from ``consist undo``), and the page shows
the store's current labels, so undo, export and the page always agree. The audit
folder provides what the audit found (verdicts, suggestions, pair evidence), read on
demand so that 10,000 samples page as fast as 50.

Modules: :mod:`.audit_index` (the audit's verdicts, paged and filtered),
:mod:`.actions` (review actions as store writes), :mod:`.search` (pixel retrieval
through the registered retriever and re-ranker), :mod:`.thumbs` (images of the store,
resized), :mod:`.server` (the ASGI app and its JSON API), ``static/`` (the page: plain
HTML, CSS and JavaScript, no build step, no CDN).
"""

from __future__ import annotations

__all__ = ["create_app"]


def create_app(*args: object, **kwargs: object) -> object:
    """:func:`consist.review.server.create_app` (imported lazily: FastAPI is optional)."""
    from consist.review.server import create_app as _create

    return _create(*args, **kwargs)  # type: ignore[arg-type]
