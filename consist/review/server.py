"""The review app: one ASGI application (FastAPI on Starlette, served by uvicorn) with
the page and its JSON API.

Safe by default:

* it binds 127.0.0.1 (the CLI refuses nothing else without ``--host``), and answers
  only requests whose ``Host`` is the address it serves (a web page elsewhere cannot
  reach it through DNS rebinding);
* every write (and every costly read: search, decide) needs the session's token in the
  ``X-Consist-Token`` header; the page gets it from the address the CLI opens
  (``#token=...``, a fragment: never sent in a request, never in a log), so another
  site's page cannot write, and a cross-site form cannot set the header;
* images are served by sample id, looked up in the store: no parameter names a path;
* the page builds every element from text (``textContent``), never from HTML strings,
  and the Content-Security-Policy forbids inline scripts and other origins.

The API is documented by FastAPI's OpenAPI schema at ``/openapi.json`` (the
interactive ``/docs`` page is off: it loads its assets from a CDN).
"""

from __future__ import annotations

import base64
import hmac
import io
import secrets
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import attrs
import structlog
from fastapi import Body, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from consist import __version__
from consist.contracts.store import AliasStore, Store
from consist.errors import ConsistError
from consist.records import Region, to_dict
from consist.review.actions import NewLabel, ReviewActions, ReviewError, StaleView, entry_json
from consist.review.audit_index import DEFAULT_PAGE_SIZE, AuditIndex, QueueFilter
from consist.review.thumbs import ThumbCache

__all__ = ["TOKEN_HEADER", "ReviewSession", "create_app"]

log = structlog.get_logger("consist.review")

#: The header every write carries.
TOKEN_HEADER = "X-Consist-Token"
#: Largest image accepted by search and decide (bytes).
MAX_UPLOAD = 40 * 1024 * 1024
STATIC = Path(__file__).parent / "static"
_CSP = "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


# ------------------------------------------------------------ request bodies
# (module level: FastAPI resolves the handlers' annotations in this module's namespace)


class SampleAction(BaseModel):
    sample: str = Field(..., max_length=4096)
    expect_label: str | None = Field(None, description="the label the page showed; refused (409) when the store's label differs (changed elsewhere)")


class RelabelAction(SampleAction):
    label: str = Field(..., max_length=200)
    create: bool = Field(False, description="allow a label nobody uses yet (else refused with code new_label)")


class RegionAction(SampleAction):
    box: list[float] | None = Field(None, min_length=4, max_length=4, description="x0,y0,x1,y1 in the image's pixels")
    polygon: list[list[float]] | None = Field(None, max_length=1000, description="[[x,y],...] in the image's pixels")


class TellAction(SampleAction):
    sentence: str = Field(..., max_length=2000)
    apply: bool = Field(True, description="false: only say what the sentence would do")


class BulkAction(BaseModel):
    action: Literal["accept"] = "accept"
    status: str | None = "flagged,suspect"
    label: str | None = None
    min_confidence: float | None = Field(None, ge=0, le=1)
    max_confidence: float | None = Field(None, ge=0, le=1)
    min_suggestion_confidence: float | None = Field(None, ge=0, le=1, description="the suggestion's posterior at least this")
    expect: int | None = Field(None, ge=0, description="the count the person saw; refused when the selection changed")
    dry_run: bool = Field(False, description="only count what would change")


class UndoAction(BaseModel):
    seq: int | None = Field(None, description="a history entry")
    seqs: list[int] | None = Field(None, max_length=10_000, description="the entries of one action (a batch), undone together")


class SearchRequest(BaseModel):
    sample: str | None = Field(None, description="search with a stored sample's image")
    image: str | None = Field(None, description="or an image file, base64 (JPEG/PNG/...)")
    box: list[float] | None = Field(None, min_length=4, max_length=4)
    polygon: list[list[float]] | None = Field(None, max_length=1000)
    top: int = Field(12, ge=1, le=100)
    depth: int = Field(20, ge=1, le=200)


class DecideRequest(BaseModel):
    image: str = Field(..., description="the image, base64")
    candidates: list[tuple[str, float]] = Field(default_factory=list, max_length=100, description="the recognizer's ranked (label, probability) pairs")
    box: list[float] | None = Field(None, min_length=4, max_length=4)


class ReviewSession:
    """What one ``consist review`` serves: an audit, its store, the token."""

    def __init__(self, audit_dir: Path, store: Store, *, token: str | None = None, allowed_hosts: tuple[str, ...] = ()) -> None:
        self.audit_dir = Path(audit_dir)
        self.store = store
        self.index = AuditIndex(self.audit_dir, store)
        self.actions = ReviewActions(store, self.index)
        self.thumbs = ThumbCache(store)
        self.token = token or secrets.token_urlsafe(24)
        self.allowed_hosts = allowed_hosts
        self._recognizer: Any = None

    def recognizer(self) -> Any:
        """The self-correcting recognizer of the decide API (built on first use)."""
        if self._recognizer is None:
            from consist.engine import EngineConfig
            from consist.recognizer import wrap

            self._recognizer = wrap(None, self.store, config=EngineConfig(k=10, adapt=False), k=10)
        return self._recognizer


def _filter(status: str | None, label: str | None, min_confidence: float | None, max_confidence: float | None, review: str, q: str, sort: str) -> QueueFilter:
    statuses = tuple(s for s in (status or "").split(",") if s)
    return QueueFilter(statuses=statuses, label=label or None, min_confidence=min_confidence, max_confidence=max_confidence, review=review, text=q, sort=sort)


def create_app(session: ReviewSession) -> Any:
    """The ASGI app serving ``session``."""
    app = FastAPI(
        title="consist review",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        description="Review an audit: the queue, the evidence, label fixes and regions as store history entries; pixel search; decisions for a recognizer.",
    )

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        host = request.headers.get("host", "")
        if session.allowed_hosts and host not in session.allowed_hosts:
            return PlainTextResponse(f"unexpected Host {host!r}: open the address consist review printed", status_code=421)
        if request.method not in ("GET", "HEAD", "OPTIONS") or request.url.path in ("/api/search", "/api/decide"):
            given = request.headers.get(TOKEN_HEADER, "")
            if not hmac.compare_digest(given.encode(), session.token.encode()):
                return JSONResponse({"detail": f"missing or wrong {TOKEN_HEADER}: open the address consist review printed (it carries the session's token)"}, status_code=403)
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = _CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    def fail(exc: Exception, status: int = 400) -> HTTPException:
        return HTTPException(status_code=status, detail=str(exc))

    # --------------------------------------------------------------- the page

    @app.get("/", include_in_schema=False)
    def index_page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # ------------------------------------------------------------------ reads

    @app.get("/api/overview", summary="Counts, per-label health, confusion and confidence histogram")
    def overview() -> dict[str, Any]:
        session.index.refresh()
        return session.index.overview()

    @app.get("/api/queue", summary="One page of the review queue")
    def queue(
        status: str | None = Query(None, description="comma-separated statuses (flagged,suspect,ok,plausible,unverifiable,unreadable)"),
        label: str | None = None,
        min_confidence: float | None = Query(None, ge=0, le=1),
        max_confidence: float | None = Query(None, ge=0, le=1),
        review: Literal["all", "pending", "reviewed"] = "all",
        q: str = Query("", max_length=200),
        sort: Literal["priority", "id", "label"] = "priority",
        offset: int = Query(0, ge=0),
        limit: int = Query(DEFAULT_PAGE_SIZE, ge=1, le=500),
    ) -> dict[str, Any]:
        session.index.refresh()
        return session.index.page(_filter(status, label, min_confidence, max_confidence, review, q, sort), offset, limit)

    @app.get("/api/sample", summary="One sample: verdict, current label, neighbours with pair evidence, history")
    def sample(
        id: str,
        status: str | None = None,
        label: str | None = None,
        min_confidence: float | None = None,
        max_confidence: float | None = None,
        review: Literal["all", "pending", "reviewed"] = "all",
        q: str = "",
        sort: Literal["priority", "id", "label"] = "priority",
    ) -> dict[str, Any]:
        from consist.contracts.evidence import PairEvidence, pairs_in_votes
        from consist.records import Vote, from_dict

        session.index.refresh()
        row = session.index.row(id)
        if row is None:
            raise HTTPException(404, f"no sample {id!r} in this audit")
        rec = session.index.record(id) or {}
        votes = [from_dict(Vote, v) for v in (rec.get("decision") or {}).get("votes") or () if isinstance(v, dict)]
        best: dict[str, PairEvidence] = {}
        for _checker, p in pairs_in_votes(votes):
            if p.neighbour not in best or p.score > best[p.neighbour].score:
                best[p.neighbour] = p
        neighbours = []
        ids = [str(n["id"]) for n in rec.get("neighbours") or () if isinstance(n, dict) and n.get("id")]
        current = {s.id: s for s in session.store.get_many(ids) if s is not None}
        for n in rec.get("neighbours") or ():
            if not isinstance(n, dict) or not n.get("id"):
                continue
            pair = best.get(n["id"])
            s = current.get(n["id"])
            size = session.thumbs.size_of(n["id"])
            neighbours.append({**n, "current_label": None if s is None else s.label, "size": size, "pair": None if pair is None else pair.to_dict()})
        neighbours.sort(key=lambda n: (not (n["pair"] or {}).get("verified", False), -((n["pair"] or {}).get("inliers") or 0), n.get("rank", 0)))
        s = session.store.get(id)
        prev_id, next_id, position, total = session.index.neighbours_in_order(_filter(status, label, min_confidence, max_confidence, review, q, sort), id)
        summary_votes = [{"checker": v.checker, "label": v.label, "support": round(v.support, 3), "confidence": round(v.confidence, 3), "neighbour": v.neighbour_id} for v in votes]
        return {
            **session.index.view(row),
            "size": session.thumbs.size_of(id),
            "region": None if s is None or s.region is None else {"box": list(s.region.bounds), "polygon": None if s.region.polygon is None else [list(p) for p in s.region.polygon]},
            "neighbours": neighbours,
            "votes": summary_votes,
            "history": [entry_json(e) for e in session.store.history(sample_id=id, limit=20)],
            "queue": {"previous": prev_id, "next": next_id, "position": position, "total": total},
        }

    @app.get("/api/image", summary="A sample's image (EXIF-oriented JPEG, long side <= size)", response_class=Response)
    def image(id: str, size: int = Query(400, ge=16, le=4096)) -> Response:
        if not id.startswith("upload:") and id not in session.index and session.store.get(id) is None:
            raise HTTPException(404, "no such sample")
        try:
            r = session.thumbs.get(id, size)
        except ConsistError as exc:
            raise fail(exc, 404) from exc
        return Response(r.jpeg, media_type="image/jpeg", headers={"X-Image-Width": str(r.width), "X-Image-Height": str(r.height), "Cache-Control": "private, max-age=300"})

    @app.get("/api/labels", summary="Known labels and aliases (for completion)")
    def labels() -> dict[str, Any]:
        aliases = session.store.aliases() if isinstance(session.store, AliasStore) else {}
        return {"labels": session.index.known_labels(), "aliases": aliases}

    @app.get("/api/history", summary="The store's history, newest first, and what undo would revert")
    def history(limit: int = Query(50, ge=1, le=1000)) -> dict[str, Any]:
        return {"entries": [entry_json(e) for e in session.store.history(limit=limit)], "undo_would_revert": [e.seq for e in session.actions.last_action()]}

    @app.get("/api/export", summary="The store's current labels as CSV (path,label,...)", response_class=Response)
    def export() -> Response:
        from consist.audit.apply import export_labels

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "labels.csv"
            export_labels(session.store, path)
            data = path.read_bytes()
        return Response(data, media_type="text/csv", headers={"Content-Disposition": 'attachment; filename="labels.csv"'})

    # ----------------------------------------------------------------- writes

    def done(entries: list[Any], **extra: Any) -> dict[str, Any]:
        return {"entries": [entry_json(e) for e in entries], **extra}

    def act(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except StaleView as exc:
            raise HTTPException(409, detail={"code": "stale", "message": str(exc)}) from exc
        except NewLabel as exc:
            raise HTTPException(400, detail={"code": "new_label", "message": str(exc)}) from exc
        except (ReviewError, ValueError) as exc:
            raise fail(exc, 400) from exc
        except ConsistError as exc:  # a label conflict, an undo conflict, a store error
            raise fail(exc, 409) from exc

    @app.post("/api/actions/accept", summary="Relabel a sample to the audit's suggestion")
    def accept(body: SampleAction) -> dict[str, Any]:
        return done(act(lambda: session.actions.accept(body.sample, expect_label=body.expect_label)))

    @app.post("/api/actions/keep", summary="Keep the given label (reject the suggestion)")
    def keep(body: SampleAction) -> dict[str, Any]:
        return done(act(lambda: session.actions.keep(body.sample, expect_label=body.expect_label)))

    @app.post("/api/actions/relabel", summary="Relabel a sample (a label or an alias)")
    def relabel(body: RelabelAction) -> dict[str, Any]:
        return done(act(lambda: session.actions.relabel(body.sample, body.label, expect_label=body.expect_label, create=body.create)))

    @app.post("/api/actions/region", summary="Set (or clear, with neither box nor polygon) where the labelled object is")
    def region(body: RegionAction) -> dict[str, Any]:
        def run() -> list[Any]:
            reg = None
            if body.polygon is not None:
                reg = Region(polygon=tuple((float(p[0]), float(p[1])) for p in body.polygon if len(p) == 2))
            elif body.box is not None:
                x0, y0, x1, y1 = body.box
                reg = Region(box=(float(x0), float(y0), float(x1), float(y1)))
            return session.actions.set_region(body.sample, reg)

        return done(act(run))

    @app.post("/api/actions/tell", summary="A sentence about the sample, understood as consist tell understands it")
    def tell(body: TellAction) -> dict[str, Any]:
        return dict(act(lambda: session.actions.tell(body.sample, body.sentence, apply=body.apply)))

    @app.post("/api/actions/bulk", summary="Accept the suggestions of every pending sample a filter selects (one batch)")
    def bulk(body: BulkAction) -> dict[str, Any]:
        flt = attrs.evolve(_filter(body.status, body.label, body.min_confidence, body.max_confidence, "pending", "", "priority"), min_suggestion_confidence=body.min_suggestion_confidence)
        if body.dry_run:
            would = session.actions.bulk_candidates(flt)
            return {"entries": [], "would_change": len(would), "samples": [r["sample"] for r in would[:20]]}
        result = act(lambda: session.actions.bulk_accept(flt, expect=body.expect))
        return done(list(result.entries), batch=result.batch, skipped=result.skipped)

    @app.post("/api/actions/undo", summary="Undo one history entry, or the newest person's action")
    def undo(body: UndoAction | None = Body(None)) -> dict[str, Any]:
        seq = None if body is None else body.seq
        seqs = None if body is None else body.seqs

        def run() -> list[Any]:
            if seqs:
                return session.actions.undo_group(seqs)
            return session.actions.undo(seq) if seq is not None else session.actions.undo_last()

        return done(act(run))

    # ------------------------------------------------------ search and decide

    def _pixels(sample_id: str | None, image_b64: str | None) -> tuple[Any, str]:
        from consist.images import image_id, load_image

        if sample_id:
            s = session.store.get(sample_id)
            if s is None:
                raise ReviewError(f"no sample {sample_id!r}")
            return load_image(s, store=session.store), sample_id
        if not image_b64:
            raise ReviewError("give a sample or an image")
        try:
            data = base64.b64decode(image_b64, validate=False)
        except ValueError as exc:
            raise ReviewError("the image is not base64") from exc
        if len(data) > MAX_UPLOAD:
            raise ReviewError(f"the image is over {MAX_UPLOAD // 2**20} MB")
        pixels = load_image(io.BytesIO(data).getvalue())
        upload_id = "upload:" + image_id(pixels)
        session.thumbs.add_upload(upload_id, data)
        return pixels, upload_id

    def _region(box: list[float] | None, polygon: list[list[float]] | None) -> Region | None:
        if polygon:
            return Region(polygon=tuple((float(p[0]), float(p[1])) for p in polygon if len(p) == 2))
        if box:
            return Region(box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])))
        return None

    @app.post("/api/search", summary="Pixel retrieval: ranked samples with the query (region) localised in each")
    def search(body: SearchRequest) -> dict[str, Any]:
        from consist.review.search import search as run_search

        def run() -> dict[str, Any]:
            pixels, qid = _pixels(body.sample, body.image)
            exclude = (body.sample,) if body.sample else ()
            out = run_search(session.store, pixels, summary=session.index.summary, region=_region(body.box, body.polygon), top=body.top, depth=body.depth, exclude=exclude)
            out["query"]["id"] = qid
            for r in out["results"]:
                r["size"] = session.thumbs.size_of(r["id"])
            return out

        return dict(act(run))

    @app.post("/api/decide", summary="Verify a recognizer's candidates for an image: the decision, its confidence and evidence")
    def decide(body: DecideRequest) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            import attrs

            from consist.records import Candidate

            pixels, _qid = _pixels(None, body.image)
            rec = session.recognizer()
            prediction = rec.prediction(pixels, region=_region(body.box, None))
            if body.candidates:  # the caller's recognizer spoke: verify its candidates, not the built-in k-NN's
                prediction = attrs.evolve(prediction, candidates=tuple(Candidate(str(label), float(score), source="client") for label, score in body.candidates), recognizer="client")
            neighbours = rec.engine.neighbours(prediction, rec.k)
            return dict(to_dict(rec.engine.verify(prediction, neighbours, adapt=False)))

        return dict(act(run))

    return app
