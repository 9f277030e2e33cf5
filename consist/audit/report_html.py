"""``report.html``: one self-contained page (inline CSS, JS and JPEG thumbnails; no
network) that a person opens offline to review the audit.

Flagged samples come first, as cards: the sample beside the neighbours that decided
it, each pair drawn side by side with its inlier matches and the sample's outline
localised in the neighbour, both read from the checkers' pair evidence
(:class:`consist.contracts.PairEvidence`: nothing is re-verified for the page). Below, a table of every
sample, sortable by any column and filterable by label, status and confidence.
Thumbnails are drawn only for the first :data:`MAX_CARDS` flagged samples, and the
table embeds at most :data:`MAX_TABLE_ROWS` samples (flagged first; every sample is in
``audit.csv``), shown :data:`PAGE_ROWS` at a time: the page stays small and
responsive at 10^4 images and beyond (the review app, ``consist review``, serves a
whole audit interactively).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from consist.audit.decide import STATUSES, AuditRow
from consist.audit.outputs import atomic_open
from consist.contracts.evidence import PairEvidence, pairs_in_votes
from consist.contracts.reporter import AuditOutcome
from consist.records import Vote, from_dict

__all__ = ["MATCH_LINES", "MAX_CARDS", "MAX_TABLE_ROWS", "NEIGHBOURS_SHOWN", "PAGE_ROWS", "THUMB_SIDE", "write_report"]

#: Flagged samples drawn as cards (the table lists every sample).
MAX_CARDS = 200
#: Samples embedded in the table, flagged first (a 10k-row table is ~5 MB of HTML and
#: sorts in seconds in a browser; audit.csv has every row).
MAX_TABLE_ROWS = 5000
#: Table rows shown per page (the others are hidden, so layout and filtering stay fast).
PAGE_ROWS = 100
#: Neighbours drawn beside each flagged sample.
NEIGHBOURS_SHOWN = 3
#: Inlier matches drawn per pair at most (the pair evidence keeps up to
#: ``consist.contracts.MAX_DRAWN_MATCHES``, evenly spread over the inliers).
MATCH_LINES = 30
#: Long side of the thumbnails, in pixels.
THUMB_SIDE = 220


_THUMBS: dict[str, tuple[str, float, int, int] | None] = {}


def _thumb(uri: str | None) -> tuple[str, float, int, int] | None:
    """(data URI, scale from original pixels, width, height) of a JPEG thumbnail, or
    None if unreadable. JPEGs are decoded at reduced size (Pillow's draft mode)."""
    if not uri:
        return None
    if uri in _THUMBS:
        return _THUMBS[uri]
    from PIL import Image, ImageOps

    from consist.images import DEFAULT_MAX_PIXELS

    try:
        with Image.open(uri) as src:
            w0, h0 = src.size
            if w0 * h0 > DEFAULT_MAX_PIXELS:
                raise OSError("too large")
            src.draft("RGB", (THUMB_SIDE, THUMB_SIDE))
            img = ImageOps.exif_transpose(src).convert("RGB")
            # original (oriented) size, for coordinates in original pixels
            if img.size[0] != w0 and (img.size[0] < img.size[1]) != (w0 < h0):
                w0, h0 = h0, w0
    except Exception:  # unreadable: the card says so
        _THUMBS[uri] = None
        return None
    s = min(1.0, THUMB_SIDE / max(h0, w0))
    img = img.resize((max(1, round(w0 * s)), max(1, round(h0 * s))), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=72)
    out = ("data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode(), s, img.width, img.height)
    _THUMBS[uri] = out
    return out


def _pairs_of(rec: Mapping[str, Any]) -> dict[str, PairEvidence]:
    """The strongest verified pair evidence per neighbour in a journal record."""
    votes = []
    for v in (rec.get("decision") or {}).get("votes") or ():
        try:
            votes.append(from_dict(Vote, v))
        except Exception:  # a plugin's odd vote: no drawing for it
            continue
    best: dict[str, PairEvidence] = {}
    for _checker, pair in pairs_in_votes(votes):
        old = best.get(pair.neighbour)
        if pair.verified and (old is None or pair.inliers > old.inliers):
            best[pair.neighbour] = pair
    return best


def _matches(pair: PairEvidence | None) -> list[tuple[float, float, float, float]]:
    """Inlier matches ``(xq, yq, xn, yn)`` in original pixels, at most :data:`MATCH_LINES`."""
    if pair is None or not len(pair.query_points):
        return []
    n = len(pair.query_points)
    pick = sorted(set(int(round(i)) for i in _linspace(0, n - 1, min(MATCH_LINES, n))))
    q, b = pair.query_points, pair.neighbour_points
    return [(float(q[i, 0]), float(q[i, 1]), float(b[i, 0]), float(b[i, 1])) for i in pick]


def _linspace(a: float, b: float, n: int) -> list[float]:
    return [a] if n <= 1 else [a + (b - a) * i / (n - 1) for i in range(n)]


def _pair_svg(q: tuple[str, float, int, int], n: tuple[str, float, int, int], polygon: Sequence[Sequence[float]] | None, matches: Sequence[tuple[float, float, float, float]]) -> str:
    qd, qs, qw, qh = q
    nd, ns, nw, nh = n
    gap = 12
    W, H = qw + gap + nw, max(qh, nh)
    parts = [
        f'<svg class="pair" viewBox="0 0 {W} {H}" width="{W}" height="{H}" xmlns="http://www.w3.org/2000/svg">',
        f'<image href="{qd}" x="0" y="0" width="{qw}" height="{qh}"/>',
        f'<image href="{nd}" x="{qw + gap}" y="0" width="{nw}" height="{nh}"/>',
    ]
    if polygon:
        pts = " ".join(f"{qw + gap + x * ns:.1f},{y * ns:.1f}" for x, y in polygon)
        parts.append(f'<polygon points="{pts}" class="outline"/>')
    for i, (xq, yq, xn, yn) in enumerate(matches):
        parts.append(f'<line x1="{xq * qs:.1f}" y1="{yq * qs:.1f}" x2="{qw + gap + xn * ns:.1f}" y2="{yn * ns:.1f}" class="m{i % 4}"/>')
    parts.append("</svg>")
    return "".join(parts)


def _card(row: AuditRow, rec: Mapping[str, Any], uris: Mapping[str, str]) -> str:
    e = html.escape
    q = _thumb(rec.get("uri"))
    edges = [x for x in rec.get("edges", ()) if x.get("verified")][:NEIGHBOURS_SHOWN]
    evidence = _pairs_of(rec)
    pairs = []
    for edge in edges:
        nuri = uris.get(edge["b"])
        n = _thumb(nuri)
        label = e(str(edge.get("b_label")))
        caption = f'<div class="cap"><b>{label}</b> · {e(edge["b"])} · {edge["inliers"]} inliers</div>'
        if q is None or n is None:
            pairs.append(f'<div class="nb">{caption}<div class="missing">image unreadable</div></div>')
            continue
        matches = _matches(evidence.get(edge["b"]))
        pairs.append(f'<div class="nb">{_pair_svg(q, n, edge.get("polygon"), matches)}{caption}</div>')
    if not pairs:
        pairs.append('<div class="nb">decided through intermediate views (no direct verified neighbour)' + (f'<br><img src="{q[0]}">' if q else "") + "</div>")
    conf = "" if row.confidence is None else f"{row.confidence:.2f}"
    return (
        f'<section class="card" data-label="{e(row.given_label)}" data-suggested="{e(str(row.suggested_label))}" data-confidence="{conf}">'
        f'<h3>{e(row.sample)}</h3><p class="verdict">given <b>{e(row.given_label)}</b> → suggested <b>{e(str(row.suggested_label))}</b> (confidence {conf})</p>'
        f'<p class="reason">{e(row.reason)}</p><div class="pairs">{"".join(pairs)}</div></section>'
    )


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{margin:.2em 0}.stats span{margin-right:1.2em}.card{background:#fff;border:1px solid #ddd;border-left:5px solid #d9534f;border-radius:6px;padding:.6em 1em;margin:1em 0}
.card h3{margin:.2em 0;font-size:15px}.reason{color:#555;font-size:13px}.pairs{display:flex;flex-wrap:wrap;gap:14px}.nb{font-size:12px}
svg.pair{max-width:100%;height:auto;background:#111}.outline{fill:rgba(0,255,0,.12);stroke:#0f0;stroke-width:2}
line{stroke-width:1}.m0{stroke:#0cf}.m1{stroke:#f7d}.m2{stroke:#7f7}.m3{stroke:#fc5}.missing{color:#a00}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13px}th,td{border:1px solid #ddd;padding:3px 6px;text-align:left}
th{cursor:pointer;background:#eee;position:sticky;top:0}tr.flagged{background:#fde8e8}tr.suspect{background:#fdf3e0}tr.plausible,tr.unverifiable{color:#777}tr.unreadable{color:#a00}
.labels li{margin:.3em 0}.generic{color:#8a5a00;font-weight:bold}
.filters{margin:1em 0;display:flex;gap:1em;flex-wrap:wrap;align-items:center}
"""

_JS = """
const rows=[...document.querySelectorAll('#samples tbody tr')];const PAGE=PAGE_ROWS_VALUE;let page=0,visible=rows,shownRows=rows;
function show(){const n=visible.length,pages=Math.max(1,Math.ceil(n/PAGE));page=Math.min(Math.max(0,page),pages-1);const a=page*PAGE,b=Math.min(n,a+PAGE);
for(const r of shownRows)r.style.display='none';shownRows=visible.slice(a,b);for(const r of shownRows)r.style.display='';
document.getElementById('page-info').textContent=n?`rows ${a+1}-${b} of ${n}, page ${page+1} of ${pages}`:'no row';document.getElementById('shown').textContent=n;}
function apply(){const l=document.getElementById('f-label').value,s=document.getElementById('f-status').value,c=parseFloat(document.getElementById('f-conf').value);
document.getElementById('f-conf-v').textContent=c.toFixed(2);
visible=rows.filter(r=>(!l||r.dataset.label===l||r.dataset.suggested===l)&&(!s||r.dataset.status===s)&&((parseFloat(r.dataset.confidence)||0)>=c||(c===0)));
for(const k of document.querySelectorAll('.card')){const ok=(!l||k.dataset.label===l||k.dataset.suggested===l)&&((parseFloat(k.dataset.confidence)||0)>=c||(c===0))&&(!s||s==='flagged'||s==='suspect');k.style.display=ok?'':'none';}
page=0;show();}
for(const id of ['f-label','f-status','f-conf'])document.getElementById(id).addEventListener('input',apply);
document.getElementById('prev').addEventListener('click',()=>{page--;show();});document.getElementById('next').addEventListener('click',()=>{page++;show();});
document.querySelectorAll('#samples th').forEach((th,i)=>th.addEventListener('click',()=>{const tb=document.querySelector('#samples tbody');const dir=th.dataset.dir==='asc'?-1:1;th.dataset.dir=dir===1?'asc':'desc';
const num=th.dataset.num==='1';rows.sort((a,b)=>{let x=a.children[i].textContent,y=b.children[i].textContent;if(num){x=parseFloat(x)||0;y=parseFloat(y)||0;return (x-y)*dir;}return x.localeCompare(y)*dir;});
const frag=document.createDocumentFragment();rows.forEach(r=>frag.appendChild(r));tb.appendChild(frag);apply();}));
for(const r of rows)r.style.display='none';apply();
"""


def _label_findings(summary: Mapping[str, Any]) -> str:
    """Generic labels and labels that look like one object, as list items."""
    e = html.escape
    labels = summary.get("labels") or {}
    items = []
    for label, info in (labels.get("generic") or {}).items():
        where = ", ".join(f"{e(str(k))} ({v})" for k, v in list((info.get("communities") or {}).items())[:6])
        why = "declared generic" if info.get("declared") else f"{info.get('connected')} of its images verify with images of other labels, {info.get('agreeing')} with its own"
        items.append(f'<li><span class="generic">{e(label)}</span> names no particular object ({why}); nothing is moved into it{"; its images show " + where if where else ""}</li>')
    for pair in labels.get("same_object") or ():
        a, b = pair["labels"]
        items.append(
            f"<li><b>{e(a)}</b> and <b>{e(b)}</b> look like one object: {pair['cross_links']} verified links between them ({', '.join(f'{e(k)}: {v}' for k, v in pair['within_links'].items())} within)</li>"
        )
    return "".join(items) or "<li>every label names one object (no generic label, no two labels for one object)</li>"


def write_report(path: Path, outcome: AuditOutcome) -> None:
    """Write the page for a finished audit (one streamed pass over its records)."""
    e = html.escape
    rows: Sequence[AuditRow] = outcome.rows
    summary = outcome.summary
    flagged = sorted((r for r in rows if r.flagged), key=lambda r: -(r.confidence or 0.0))
    wanted = {r.sample for r in flagged[:MAX_CARDS]}
    uris: dict[str, str] = {}
    recs: dict[str, Mapping[str, Any]] = {}
    for rec in outcome.records():
        uris[str(rec["id"])] = str(rec.get("uri") or "")
        if rec["id"] in wanted:
            recs[str(rec["id"])] = rec
    cards = [_card(r, recs[r.sample], uris) for r in flagged[:MAX_CARDS] if r.sample in recs]
    c = summary["counts"]
    labels = sorted({r.given_label for r in rows} | {r.suggested_label for r in rows if r.suggested_label})
    cols = [("sample", 0), ("given", 0), ("suggested", 0), ("status", 0), ("confidence", 1), ("evidence", 0), ("inliers", 1), ("verified nbrs", 1), ("reason", 0)]
    body = []
    ordered = sorted(rows, key=lambda r: (not r.flagged, -(r.confidence or 0.0), r.sample))
    for r in ordered[:MAX_TABLE_ROWS]:
        conf = "" if r.confidence is None else f"{r.confidence:.3f}"
        body.append(
            f'<tr class="{r.status}" data-label="{e(r.given_label)}" data-suggested="{e(str(r.suggested_label or ""))}" data-status="{r.status}" data-confidence="{conf or 0}">'
            f"<td>{e(r.sample)}</td><td>{e(r.given_label)}</td><td>{e(str(r.suggested_label or ''))}</td><td>{r.status}</td><td>{conf}</td>"
            f"<td>{e(str(r.evidence_neighbour or ''))}</td><td>{'' if r.evidence_inliers is None else r.evidence_inliers}</td><td>{r.verified_neighbours}</td><td>{e(r.reason)}</td></tr>"
        )
    more = f"<p>{len(flagged) - MAX_CARDS} more flagged samples are in the table below and in audit.csv.</p>" if len(flagged) > MAX_CARDS else ""
    cut = f"<p>The table holds the first {MAX_TABLE_ROWS:,} of {len(ordered):,} samples (flagged first); audit.csv has them all.</p>" if len(ordered) > MAX_TABLE_ROWS else ""
    failures = "".join(f"<li>{e(f['message'])}</li>" for f in summary.get("failures", [])[:200])
    doc = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>consist audit: {e(str(summary["dataset"]["root"]))}</title><style>{_CSS}</style></head><body>
<h1>consist audit</h1><p>{e(str(summary["dataset"].get("csv") or summary["dataset"]["root"]))}</p>
<p class="stats"><span><b>{c["samples"]}</b> samples</span><span><b>{c["flagged"]}</b> flagged</span><span><b>{c["suspect"]}</b> suspect (retrieval only)</span><span><b>{c["ok"]}</b> confirmed</span><span><b>{c["plausible"]}</b> plausible (retrieval only)</span><span><b>{c["unverifiable"]}</b> without neighbours</span><span><b>{c["unreadable"]}</b> unreadable</span><span><b>{c["near_duplicate_pairs"]}</b> near-duplicate pairs with different labels</span><span>{summary["timings"].get("total_s")} s</span></p>
<h2>Labels</h2><ul class="labels">{_label_findings(summary)}</ul>
<div class="filters"><label>label <select id="f-label"><option value="">all</option>{"".join(f'<option value="{e(lab)}">{e(lab)}</option>' for lab in labels)}</select></label>
<label>status <select id="f-status"><option value="">all</option>{"".join(f'<option value="{s}">{s}</option>' for s in STATUSES)}</select></label>
<label>confidence ≥ <input id="f-conf" type="range" min="0" max="1" step="0.05" value="0"> <span id="f-conf-v">0.00</span></label><span><span id="shown"></span> rows shown</span></div>
<h2>Flagged samples</h2>{"".join(cards) or "<p>No sample was flagged.</p>"}{more}
<h2>All samples</h2>{cut}<p class="pager"><button id="prev" type="button">previous</button> <span id="page-info"></span> <button id="next" type="button">next</button></p><table id="samples"><thead><tr>{"".join(f'<th data-num="{n}">{h}</th>' for h, n in cols)}</tr></thead><tbody>{"".join(body)}</tbody></table>
<h2>Problems</h2><ul>{failures or "<li>none</li>"}</ul>
<script>{_JS.replace("PAGE_ROWS_VALUE", str(PAGE_ROWS))}</script></body></html>"""
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(doc)
