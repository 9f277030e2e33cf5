"""Reading a labelled image dataset from disk: class sub-folders, or a CSV of labels.

Two layouts are understood:

* **class sub-folders**: ``ROOT/<label>/.../<image>``; the label is the name of the
  first-level folder, images may sit in deeper folders below it;
* **a CSV** ``path,label[,more columns]`` (a header naming the columns is required;
  ``path`` is relative to the dataset root, which is the CSV's folder unless given;
  extra columns are kept, as strings, in each item's ``meta``).

The result is a :class:`Dataset`: the items (sample id = the path relative to the
root, in POSIX form; uri = the absolute path; label; meta) in a deterministic order
(sorted paths for folders, row order for a CSV), and the problems found on the way
(a CSV row naming a missing file, a duplicate row, an image outside any class
folder...), each one line naming the file. Problems do not stop the reading: the
offending entry is skipped and listed, so that a command can report them all at
once. Only what makes the whole dataset unusable raises :class:`DatasetError`
(missing folder, a CSV without ``path``/``label`` columns or not UTF-8, no images).

This module only lists files; it never decodes an image (that is
:func:`consist.images.load_image`'s job, done by whoever consumes the items), so
it is cheap and needs neither Pillow nor OpenCV.
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import attrs

from consist.csvcells import read_csv_cell
from consist.errors import ConsistError

__all__ = [
    "IMAGE_EXTENSIONS",
    "LABEL_COLUMNS",
    "PATH_COLUMNS",
    "Dataset",
    "DatasetError",
    "DatasetItem",
    "DatasetProblem",
    "is_image_file",
    "read_dataset",
]

#: File extensions taken for images when scanning folders (compared case-insensitively).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


class DatasetError(ConsistError):
    """The dataset cannot be read at all (the CLI prints it and exits 2)."""


@attrs.frozen
class DatasetItem:
    """One labelled image of a dataset.

    Attributes:
        id: path relative to the dataset root, POSIX separators (``cat/001.jpg``):
            stable across machines, so it is the sample id.
        uri: absolute path of the file.
        label: the class (folder name or CSV ``label``).
        meta: extra CSV columns (strings), or ``{}``.
        line: the CSV line the item came from (1 = header), ``None`` for folders.
    """

    id: str
    uri: str
    label: str
    meta: dict[str, Any] = attrs.field(factory=dict)
    line: int | None = None


@attrs.frozen
class DatasetProblem:
    """Something wrong with one entry; the entry was skipped.

    ``kind`` is one of ``missing_file``, ``duplicate``, ``empty_label``,
    ``empty_path``, ``not_a_file``, ``outside_class_folder``, ``bad_row``,
    ``bad_name`` (a file name that is not UTF-8), ``outside_root`` (a CSV row naming
    a file outside the dataset folder), ``symlink_loop`` (a linked folder
    that leads back into the dataset or to a folder already read: not followed).
    ``message`` is one line naming the file (and the CSV line).
    """

    kind: str
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        return self.message


@attrs.frozen
class Dataset:
    """A dataset read from disk: ``items`` and the ``problems`` met reading it.

    Iterating over a dataset yields its items.
    """

    root: str
    layout: str  # "folders", "csv" or "names"
    items: tuple[DatasetItem, ...]
    problems: tuple[DatasetProblem, ...] = ()
    csv: str | None = None
    #: files that were not taken as images (extension not in IMAGE_EXTENSIONS), relative paths
    ignored: tuple[str, ...] = ()

    def __iter__(self) -> Iterator[DatasetItem]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def labels(self) -> dict[str, int]:
        """Label -> number of items, most frequent first (ties by name)."""
        counts = Counter(item.label for item in self.items)
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def summary(self) -> dict[str, Any]:
        """JSON-able counts for reports."""
        return {
            "root": self.root,
            "layout": self.layout,
            "csv": self.csv,
            "items": len(self.items),
            "labels": len(self.labels()),
            "problems": len(self.problems),
            "ignored": len(self.ignored),
        }


def is_image_file(name: str | os.PathLike[str]) -> bool:
    """True when the file name has an image extension (case-insensitive)."""
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def _not_utf8(text: str) -> bool:
    """A name decoded by the OS with surrogate escapes (bytes that are not UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _printable(text: str) -> str:
    """``text`` with undecodable bytes shown as ``\\xNN``."""
    return os.fsencode(text).decode("utf-8", errors="backslashreplace")


def _hidden(name: str) -> bool:
    return name.startswith(".")


#: Header names taken for the path and the label column when none is named
#: (compared case-insensitively, first match wins).
#: Only unambiguous names: a column called ``class`` may be a super-category, so
#: anything else is named explicitly (``label_column="instance"``).
PATH_COLUMNS = ("path", "file", "filename", "file_name", "filepath")
LABEL_COLUMNS = ("label",)


def read_dataset(
    path: str | os.PathLike[str],
    labels: str | os.PathLike[str] | None = None,
    *,
    root: str | os.PathLike[str] | None = None,
    path_column: str | None = None,
    label_column: str | None = None,
    name_pattern: str | None = None,
    allow_outside: bool = False,
) -> Dataset:
    """Read the dataset at ``path``.

    Args:
        path: a folder of class sub-folders; or any folder together with ``labels``;
            or a ``.csv`` file itself (then the root is the CSV's folder).
        labels: a CSV ``path,label,...`` listing the images of the folder ``path``
            (relative paths are taken from that folder).
        root: the folder CSV paths are relative to, when it is neither of the above.
        path_column, label_column: the CSV columns holding the image path and the
            label (default: the first header among :data:`PATH_COLUMNS` /
            :data:`LABEL_COLUMNS`, e.g. ``path``/``file`` and ``label``/``class``).
        name_pattern: take each image's label from its file name instead: the first
            group of this regular expression matched against the name without its
            extension (:data:`NAME_PATTERN`, ``radcliffe_camera_03.jpg`` ->
            ``radcliffe_camera``); images anywhere under ``path``. Names it does not
            match are reported and skipped.
        allow_outside: read CSV rows naming files outside the dataset folder too
            (``../other/x.jpg``, ``/abs/path.jpg``). By default they are reported
            (``outside_root``) and skipped: a label file must not make the audit read,
            thumbnail and publish any file of the machine. (Symbolic links inside
            the folder are followed: the folder's owner placed them.)

    Raises:
        DatasetError: missing folder or CSV, CSV without ``path``/``label`` columns,
            CSV not UTF-8, or no usable image at all (the message says why, and
            counts the skipped entries).
    """
    p = Path(path)
    if labels is None and p.suffix.lower() == ".csv" and not p.is_dir():
        labels, p = p, Path(root) if root is not None else p.parent
    elif root is not None:
        p = Path(root)
    if not p.exists():
        raise DatasetError(f"{path}: no such folder")
    if not p.is_dir():
        raise DatasetError(f"{path}: not a folder (give a folder of class sub-folders, or a CSV path,label)")
    base = p.resolve()
    if name_pattern is not None:
        if labels is not None:
            raise DatasetError(f"{labels}: give either a label CSV or a file-name pattern, not both")
        ds = _read_names(base, name_pattern)
        if not ds.items:
            detail = f" ({len(ds.problems)} skipped; first: {ds.problems[0].message})" if ds.problems else ""
            raise DatasetError(f"{path}: no image whose file name gives a label with the pattern {name_pattern!r}{detail}")
        return ds
    if labels is not None:
        ds = _read_csv(base, Path(labels), path_column, label_column, allow_outside)
        if not ds.items:
            detail = f" ({len(ds.problems)} rows skipped; first: {ds.problems[0].message})" if ds.problems else ""
            raise DatasetError(f"{labels}: no usable image rows{detail}")
        return ds
    ds = _read_folders(base)
    if not ds.items:
        detail = f" ({len(ds.problems)} skipped; first: {ds.problems[0].message})" if ds.problems else ""
        raise DatasetError(f"{path}: no images found in class sub-folders (expected {path}/<label>/<image>.jpg|png|..., or a CSV path,label){detail}")
    return ds


# ---------------------------------------------------------------------- folders


def _inside(base: Path, real: Path) -> bool:
    return real == base or base in real.parents


def _read_folders(base: Path, *, allow_top_level: bool = False) -> Dataset:
    items: list[DatasetItem] = []
    problems: list[DatasetProblem] = []
    ignored: list[str] = []
    # folders already walked, by (device, inode): a symbolic link is followed only to
    # a folder not seen before and outside the dataset (a link to a folder inside it,
    # ``ln -s .. photos/a/loop``, is a loop or a second path to the same images)
    visited: set[tuple[int, int]] = {_dir_key(base)}
    for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
        dirnames[:] = _descend(base, Path(dirpath), sorted(d for d in dirnames if not _hidden(d)), visited, problems)
        rel_dir = Path(dirpath).relative_to(base)
        for name in sorted(filenames):
            if _hidden(name):
                continue
            rel = (rel_dir / name).as_posix()
            if not is_image_file(name):
                ignored.append(rel)
                continue
            full = Path(dirpath) / name
            if _not_utf8(rel):
                shown = _printable(str(full))
                problems.append(DatasetProblem("bad_name", _printable(rel), f"{shown}: file name is not valid UTF-8, so it cannot be stored or reported faithfully; rename it (skipped)"))
                continue
            if not full.is_file():  # a dangling link, a fifo
                problems.append(DatasetProblem("not_a_file", rel, f"{full}: not a regular file (skipped)"))
                continue
            if rel_dir == Path(".") and not allow_top_level:
                problems.append(DatasetProblem("outside_class_folder", rel, f"{full}: image outside any class sub-folder, so it has no label (skipped)"))
                continue
            label = rel_dir.parts[0] if rel_dir.parts else ""  # top level: labelled by the caller
            items.append(DatasetItem(id=rel, uri=str(full), label=label))
    items.sort(key=lambda it: it.id)
    return Dataset(root=str(base), layout="folders", items=tuple(items), problems=tuple(problems), ignored=tuple(sorted(ignored)))


def _dir_key(path: Path) -> tuple[int, int]:
    st = path.stat()
    return (st.st_dev, st.st_ino)


def _descend(base: Path, here: Path, names: list[str], visited: set[tuple[int, int]], problems: list[DatasetProblem]) -> list[str]:
    """The sub-folders of ``here`` to walk into: each folder once, no link loops."""
    keep = []
    for name in names:
        full = here / name
        rel = full.relative_to(base).as_posix()
        try:
            key = _dir_key(full)
        except OSError as exc:
            problems.append(DatasetProblem("not_a_file", rel, f"{full}: cannot open the folder ({exc.strerror or exc}; skipped)"))
            continue
        if full.is_symlink():
            target = Path(os.path.realpath(full))
            if _inside(base, target):
                problems.append(DatasetProblem("symlink_loop", rel, f"{full}: symbolic link to {target}, a folder inside the dataset (a loop or a second path to the same images; skipped)"))
                continue
            if key in visited:
                problems.append(DatasetProblem("symlink_loop", rel, f"{full}: symbolic link to {target}, a folder already read (a loop; skipped)"))
                continue
        elif key in visited:  # a bind mount or a hard-linked folder back to an ancestor
            problems.append(DatasetProblem("symlink_loop", rel, f"{full}: the same folder as one already read (a loop; skipped)"))
            continue
        visited.add(key)
        keep.append(name)
    return keep


# ------------------------------------------------------------------- file names

#: The label in a file name: everything before a trailing number and its separator
#: (``Abyssinian_12.jpg`` -> ``Abyssinian``, the Oxford-IIIT Pets convention;
#: ``radcliffe camera (3).jpg`` -> ``radcliffe camera``; ``bodleian.jpg`` -> ``bodleian``;
#: a name of digits only, ``0042.jpg``, has no label and is reported).
NAME_PATTERN = r"^(.*?\D.*?)[\s_.()\[\]-]*\d*[)\]]?$"


def _read_names(base: Path, pattern: str) -> Dataset:
    """Every image under ``base``, labelled by the first group of ``pattern`` on its stem."""
    import re

    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise DatasetError(f"file-name pattern {pattern!r} is not a regular expression: {exc}") from exc
    if rx.groups < 1:
        raise DatasetError(f"file-name pattern {pattern!r} needs a group (...) around the label")
    folders = _read_folders(base, allow_top_level=True)
    items: list[DatasetItem] = []
    problems = list(folders.problems)
    for it in folders.items:
        stem = Path(it.id).stem
        m = rx.match(stem)
        label = (m.group(1) or "").strip() if m else ""
        if not label:
            problems.append(DatasetProblem("empty_label", it.id, f"{it.uri}: no label in the file name (pattern {pattern!r}; skipped)"))
            continue
        items.append(attrs.evolve(it, label=label))
    return Dataset(root=str(base), layout="names", items=tuple(items), problems=tuple(problems), ignored=folders.ignored)


# -------------------------------------------------------------------------- CSV


def _normalise_rel(text: str) -> str:
    """``./a//b.jpg`` -> ``a/b.jpg`` (Windows separators too); ``..`` is kept."""
    cleaned = text.strip().replace("\\", "/")
    parts = [q for q in PurePosixPath(cleaned).parts if q not in ("", ".")]
    if cleaned.startswith("/"):
        return "/" + "/".join(parts[1:]) if parts and parts[0] == "/" else cleaned
    return "/".join(parts)


def _item_id(base: Path, rel: str) -> str:
    if rel.startswith("/"):
        try:
            return Path(rel).resolve().relative_to(base).as_posix()
        except ValueError:
            return rel
    return rel


def _find_column(lowered: list[str], names: list[str], wanted: str | None, aliases: tuple[str, ...], what: str, csv_path: Path) -> int:
    if wanted is not None:
        if wanted.strip().lower() in lowered:
            return lowered.index(wanted.strip().lower())
        found = ", ".join(repr(n) for n in names if n) or "nothing"
        raise DatasetError(f"{csv_path}: no column {wanted!r} for the {what} in the header line (found {found})")
    for alias in aliases:
        if alias in lowered:
            return lowered.index(alias)
    found = ", ".join(repr(n) for n in names if n) or "nothing"
    option = "--path-column" if what == "path" else "--label-column"
    raise DatasetError(f"{csv_path}: no {what!r} column in the header line (found {found}); the first line must name the columns, e.g. path,label, or name the column with {option}")


def _read_csv(base: Path, csv_path: Path, path_column: str | None = None, label_column: str | None = None, allow_outside: bool = False) -> Dataset:
    if not csv_path.exists():
        raise DatasetError(f"{csv_path}: no such file")
    if csv_path.is_dir():
        raise DatasetError(f"{csv_path}: is a folder, not a CSV file")
    raw = csv_path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DatasetError(f"{csv_path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}); save it as UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    # a cell consist wrote as '=x (a formula neutralised for spreadsheets) reads back as =x
    rows = ([read_csv_cell(c) for c in r] for r in reader)
    try:
        header = next(rows)
    except StopIteration:
        raise DatasetError(f"{csv_path}: empty file (expected a header line path,label)") from None
    except csv.Error as exc:
        raise DatasetError(f"{csv_path}: not a readable CSV ({exc})") from None
    names = [h.strip() for h in header]
    lowered = [h.lower() for h in names]
    i_path = _find_column(lowered, names, path_column, PATH_COLUMNS, "path", csv_path)
    i_label = _find_column(lowered, names, label_column, LABEL_COLUMNS, "label", csv_path)
    if i_path == i_label:
        raise DatasetError(f"{csv_path}: the path and the label cannot be the same column ({names[i_path]!r})")
    extra = [(i, n) for i, n in enumerate(names) if i not in (i_path, i_label) and n]

    items: list[DatasetItem] = []
    problems: list[DatasetProblem] = []
    seen: dict[str, DatasetItem] = {}
    seen_real: dict[str, DatasetItem] = {}
    line = 1
    try:
        for row in rows:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue  # blank line
            if len(row) <= max(i_path, i_label):
                problems.append(DatasetProblem("bad_row", "", f"{csv_path}:{line}: {len(row)} fields, the header has {len(names)} (skipped)", line))
                continue
            rel = _normalise_rel(row[i_path])
            label = row[i_label].strip()
            if not rel:
                problems.append(DatasetProblem("empty_path", "", f"{csv_path}:{line}: empty path (skipped)", line))
                continue
            # ``cat/../cat/x.jpg`` is ``cat/x.jpg``: ids are taken from the path with ``..`` resolved
            full = Path(os.path.normpath(rel if rel.startswith("/") else base / rel))
            sid = full.relative_to(base).as_posix() if _inside(base, full) else _item_id(base, rel)
            if not label:
                problems.append(DatasetProblem("empty_label", sid, f"{csv_path}:{line}: {full}: empty label (skipped)", line))
                continue
            real = os.path.realpath(full)
            # the row's own path decides (a link the folder's owner placed inside it, to
            # a file store or a git-annex object, is theirs to follow)
            if not allow_outside and not _inside(base, full):
                problems.append(DatasetProblem("outside_root", sid, f"{csv_path}:{line}: {row[i_path].strip()}: outside the dataset folder {base} (skipped; --allow-outside reads it)", line))
                continue
            if sid in seen:
                first = seen[sid]
                same = "same label" if first.label == label else f"label {label!r}, first said {first.label!r}"
                problems.append(DatasetProblem("duplicate", sid, f"{csv_path}:{line}: {sid} is listed again ({same}; line {first.line} kept)", line))
                continue
            if not full.exists():
                problems.append(DatasetProblem("missing_file", sid, f"{csv_path}:{line}: {full}: no such file (skipped)", line))
                continue
            if not full.is_file():
                problems.append(DatasetProblem("not_a_file", sid, f"{csv_path}:{line}: {full}: not a regular file (skipped)", line))
                continue
            if real in seen_real:
                first = seen_real[real]
                problems.append(DatasetProblem("duplicate", sid, f"{csv_path}:{line}: {sid} is the same file as {first.id} (line {first.line} kept)", line))
                continue
            meta = {n: row[i].strip() for i, n in extra if i < len(row) and row[i].strip() != ""}
            item = DatasetItem(id=sid, uri=str(full.resolve()), label=label, meta=meta, line=line)
            seen[sid] = item
            seen_real[real] = item
            items.append(item)
    except csv.Error as exc:
        raise DatasetError(f"{csv_path}:{reader.line_num}: not a readable CSV ({exc})") from None
    return Dataset(root=str(base), layout="csv", items=tuple(items), problems=tuple(problems), csv=str(csv_path))
