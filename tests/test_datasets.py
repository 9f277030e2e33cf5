"""Reading labelled datasets from disk (consist.datasets): folders of classes, CSVs,
and the problems a real folder has (missing files, duplicates, odd encodings)."""

from __future__ import annotations

from pathlib import Path

import pytest

from consist.datasets import IMAGE_EXTENSIONS, Dataset, DatasetError, is_image_file, read_dataset


def touch(path: Path, data: bytes = b"\x89PNG fake") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def folders(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    touch(root / "dog" / "b.png")
    touch(root / "dog" / "a.JPG")  # extensions are case-insensitive
    touch(root / "cat" / "x.jpeg")
    touch(root / "cat" / "deeper" / "y.webp")  # nested below the class folder: still "cat"
    touch(root / "cat" / ".hidden.jpg")  # hidden files are skipped
    touch(root / ".git" / "objects" / "z.png")  # hidden folders too
    touch(root / "cat" / "notes.txt")  # not an image: ignored, listed
    touch(root / "stray.png")  # no class folder: a problem
    (root / "empty_class").mkdir()
    return root


def test_class_folders_are_read_in_sorted_order_with_relative_ids(folders: Path) -> None:
    ds = read_dataset(folders)
    assert isinstance(ds, Dataset) and ds.layout == "folders"
    assert [it.id for it in ds] == ["cat/deeper/y.webp", "cat/x.jpeg", "dog/a.JPG", "dog/b.png"]
    assert [it.label for it in ds] == ["cat", "cat", "dog", "dog"]
    for it in ds:
        assert Path(it.uri).is_absolute() and Path(it.uri).exists()
        assert it.uri == str(folders.resolve() / it.id)
        assert it.meta == {} and it.line is None
    assert ds.labels() == {"cat": 2, "dog": 2}
    assert ds.ignored == ("cat/notes.txt",)
    assert [(p.kind, p.path) for p in ds.problems] == [("outside_class_folder", "stray.png")]
    assert "stray.png" in ds.problems[0].message and "no label" in ds.problems[0].message
    assert ds.summary()["items"] == 4 and ds.summary()["problems"] == 1
    assert read_dataset(folders).items == ds.items  # deterministic


def test_image_extensions() -> None:
    assert {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"} == set(IMAGE_EXTENSIONS)
    assert is_image_file("A.TIFF") and is_image_file("b.Pgm") and not is_image_file("c.gif.txt") and not is_image_file("noext")


def test_missing_and_empty_datasets_are_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"nope: no such folder"):
        read_dataset(tmp_path / "nope")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    touch(tmp_path / "empty" / "cat" / "readme.md")
    with pytest.raises(DatasetError, match=r"empty: no images found in class sub-folders"):
        read_dataset(tmp_path / "empty")
    f = touch(tmp_path / "file.png")
    with pytest.raises(DatasetError, match="not a folder"):
        read_dataset(f)


def test_only_stray_images_is_an_error_that_says_why(tmp_path: Path) -> None:
    touch(tmp_path / "flat" / "a.jpg")
    with pytest.raises(DatasetError, match=r"no images found.*1 skipped; first: .*a\.jpg: image outside any class sub-folder"):
        read_dataset(tmp_path / "flat")


# ---------------------------------------------------------------------- CSV


@pytest.fixture
def csv_root(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for name in ("img/1.jpg", "img/2.jpg", "img/3.png", "other/4.jpg", "noext"):
        touch(root / name)
    return root


def write_csv(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_csv_rows_keep_order_and_extra_columns(csv_root: Path) -> None:
    labels = write_csv(
        csv_root / "labels.csv",
        "path,label,source,note\nimg/2.jpg,mug,phone,\n./img/1.jpg, cup ,camera,front view\n\nnoext,cup,scan,files need no image extension in a CSV\n",
    )
    ds = read_dataset(csv_root, labels)
    assert ds.layout == "csv" and ds.csv == str(labels)
    assert [(it.id, it.label) for it in ds] == [("img/2.jpg", "mug"), ("img/1.jpg", "cup"), ("noext", "cup")]
    assert ds.items[0].meta == {"source": "phone"}  # empty cells are dropped
    assert ds.items[1].meta == {"source": "camera", "note": "front view"}
    assert [it.line for it in ds] == [2, 3, 5]
    assert ds.items[1].uri == str((csv_root / "img" / "1.jpg").resolve())
    assert ds.problems == ()
    # the CSV itself as the dataset: its folder is the root
    assert read_dataset(labels).items == ds.items


def test_csv_header_may_be_any_case_and_order_and_carry_a_bom(csv_root: Path) -> None:
    labels = write_csv(csv_root / "l.csv", "\ufeffLabel,Path\nmug,img/3.png\n")
    ds = read_dataset(csv_root, labels)
    assert [(it.id, it.label) for it in ds] == [("img/3.png", "mug")]


def test_csv_problems_are_listed_and_skipped(csv_root: Path) -> None:
    labels = write_csv(
        csv_root / "labels.csv",
        "path,label\nimg/1.jpg,mug\nimg/missing.jpg,mug\nimg/1.jpg,mug\nimg//1.jpg,cup\nimg/2.jpg,\nimg,mug\nonlyonefield\nother/4.jpg,plate\n",
    )
    ds = read_dataset(csv_root, labels)
    assert [(it.id, it.label) for it in ds] == [("img/1.jpg", "mug"), ("other/4.jpg", "plate")]
    kinds = [(p.kind, p.line) for p in ds.problems]
    assert kinds == [("missing_file", 3), ("duplicate", 4), ("duplicate", 5), ("empty_label", 6), ("not_a_file", 7), ("bad_row", 8)]
    msgs = [p.message for p in ds.problems]
    assert all(str(labels) in m for m in msgs)  # every message names the CSV and the line
    assert f"{labels}:3: " in msgs[0] and "img/missing.jpg: no such file" in msgs[0]
    assert "same label" in msgs[1] and "line 2 kept" in msgs[1]
    assert "label 'cup', first said 'mug'" in msgs[2]
    assert all("\n" not in m for m in msgs)


def test_csv_without_required_columns_is_an_error(csv_root: Path) -> None:
    no_label = write_csv(csv_root / "a.csv", "path,class\nimg/1.jpg,mug\n")
    with pytest.raises(DatasetError, match=r"a\.csv: no 'label' column in the header line \(found 'path', 'class'\)"):
        read_dataset(csv_root, no_label)
    headerless = write_csv(csv_root / "b.csv", "img/1.jpg,mug\n")
    with pytest.raises(DatasetError, match=r"b\.csv: no 'path' column.*e\.g\. path,label"):
        read_dataset(csv_root, headerless)
    empty = write_csv(csv_root / "c.csv", "")
    with pytest.raises(DatasetError, match=r"c\.csv: empty file"):
        read_dataset(csv_root, empty)
    with pytest.raises(DatasetError, match=r"d\.csv: no such file"):
        read_dataset(csv_root, csv_root / "d.csv")


def test_non_utf8_csv_is_an_error_naming_the_line(csv_root: Path) -> None:
    latin = write_csv(csv_root / "latin.csv", "path,label\nimg/1.jpg,caf\u00e9\n", encoding="latin-1")
    with pytest.raises(DatasetError, match=r"latin\.csv: not UTF-8 text \(byte 0xe9 on line 2\); save it as UTF-8"):
        read_dataset(csv_root, latin)


def test_csv_with_no_usable_row_is_an_error(csv_root: Path) -> None:
    labels = write_csv(csv_root / "gone.csv", "path,label\nx.jpg,a\ny.jpg,b\n")
    with pytest.raises(DatasetError, match=r"gone\.csv: no usable image rows \(2 rows skipped; first: .*x\.jpg: no such file"):
        read_dataset(csv_root, labels)


def test_csv_quoted_fields_and_utf8_labels(csv_root: Path) -> None:
    touch(csv_root / "img" / "with, comma.jpg")
    labels = write_csv(csv_root / "q.csv", 'path,label,note\n"img/with, comma.jpg",Caf\u00e9 \u2615,"two\nlines"\n')
    ds = read_dataset(csv_root, labels)
    assert [(it.id, it.label, it.meta["note"]) for it in ds] == [("img/with, comma.jpg", "Caf\u00e9 \u2615", "two\nlines")]


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("Abyssinian_12.jpg", "Abyssinian"),  # Oxford-IIIT Pets
        ("great_basset_hound_45.jpg", "great_basset_hound"),
        ("radcliffe camera (3).png", "radcliffe camera"),
        ("oxford-001.jpg", "oxford"),
        ("bodleian.jpg", "bodleian"),
        ("route66_2.jpg", "route66"),
        ("0042.jpg", None),  # digits only: no label
    ],
)
def test_the_default_name_pattern(name: str, label: str | None) -> None:
    import re

    from consist.datasets import NAME_PATTERN

    m = re.match(NAME_PATTERN, Path(name).stem)
    assert (m.group(1) if m else None) == label


def test_labels_from_file_names_anywhere_under_the_folder(tmp_path: Path) -> None:
    from consist.datasets import NAME_PATTERN

    for rel in ("Abyssinian_1.jpg", "Abyssinian_2.jpg", "sub/Bengal_7.png", "0001.jpg", "notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    ds = read_dataset(tmp_path, name_pattern=NAME_PATTERN)
    assert ds.layout == "names"
    assert [(it.id, it.label) for it in ds.items] == [("Abyssinian_1.jpg", "Abyssinian"), ("Abyssinian_2.jpg", "Abyssinian"), ("sub/Bengal_7.png", "Bengal")]
    assert [p.kind for p in ds.problems] == ["empty_label"] and "0001.jpg" in ds.problems[0].message
    assert ds.ignored == ("notes.txt",)
    with pytest.raises(DatasetError, match="needs a group"):
        read_dataset(tmp_path, name_pattern=r"\w+")
    with pytest.raises(DatasetError, match="not a regular expression"):
        read_dataset(tmp_path, name_pattern=r"(")
    with pytest.raises(DatasetError, match="not both"):
        read_dataset(tmp_path, tmp_path / "labels.csv", name_pattern=NAME_PATTERN)
    with pytest.raises(DatasetError, match="no image whose file name gives a label"):
        read_dataset(tmp_path, name_pattern=r"^(zzz)")
