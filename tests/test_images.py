"""Image decoding: every bad input is a one-line ImageError naming the file."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from consist.errors import ImageError
from consist.images import image_id, load_image


def png_bytes(arr):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def one_line(exc):
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_reads_real_photo(tmp_path, photos):
    p = tmp_path / "cat.png"
    Image.fromarray(photos["cat"]).save(p)
    arr = load_image(p)
    assert arr.shape == photos["cat"].shape and arr.dtype == np.uint8
    assert np.array_equal(arr, photos["cat"])


@pytest.mark.parametrize(
    "make, expect",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
        (lambda p: p.write_text("just text, not pixels"), "not an image"),
        (lambda p: p.write_bytes(png_bytes(np.zeros((300, 300, 3), np.uint8) + 77)[:200]), "corrupt or truncated"),
        (lambda p: p.mkdir(), "is a folder"),
    ],
    ids=["missing", "zero-byte", "not-image", "truncated", "folder"],
)
def test_bad_files(tmp_path, make, expect):
    p = tmp_path / "ünïcode näme.png"
    make(p)
    with pytest.raises(ImageError) as info:
        load_image(p)
    msg = one_line(info)
    assert str(p) in msg and expect in msg


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    p = tmp_path / "bomb.png"
    Image.new("L", (12000, 10000)).save(p)  # 120 MP of zeros: a few hundred kB on disk
    assert p.stat().st_size < 2_000_000
    with pytest.raises(ImageError, match="120 MP, over the 100 MP limit"):
        load_image(p)
    with pytest.raises(ImageError, match="over the 1 MP limit"):
        load_image(png_bytes(np.zeros((2000, 1000), np.uint8)), max_pixels=1_000_000)


def test_exif_orientation_is_honoured(tmp_path, photos):
    img = Image.fromarray(photos["coffee"])
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    p = tmp_path / "rotated.jpg"
    img.save(p, exif=exif.tobytes(), quality=95)
    arr = load_image(p)
    h, w = photos["coffee"].shape[:2]
    assert arr.shape[:2] == (w, h)


def test_arrays_and_greyscale_become_rgb_uint8(photos):
    grey = photos["cat"].mean(axis=2)
    assert load_image(grey).shape == photos["cat"].shape
    assert load_image(photos["cat"].astype(np.float32) / 255).dtype == np.uint8
    with pytest.raises(ImageError, match="expected HxW or HxWx3"):
        load_image(np.zeros((2, 2, 2, 2)))


def test_image_id_is_content_addressed(photos):
    assert image_id(photos["cat"]) == image_id(photos["cat"].copy())
    assert image_id(photos["cat"]) != image_id(photos["coffee"])


def test_artefact_uri_reads_from_store(store, photos):
    store.put_artefact("q", "image", png_bytes(photos["rocket"]))
    assert np.array_equal(load_image("artefact://q/image", store=store), photos["rocket"])
    with pytest.raises(ImageError, match="no such image"):
        load_image("artefact://nope/image", store=store)


def test_records_resolve_to_pixels(tmp_path, photos, store):
    import consist

    p = tmp_path / "r.png"
    Image.fromarray(photos["rocket"]).save(p)
    assert load_image(consist.Query("q", uri=str(p))).shape == photos["rocket"].shape
    assert load_image(consist.Query("q", image=photos["cat"])).shape == photos["cat"].shape
    assert load_image(consist.Sample("s", uri=str(p))).shape == photos["rocket"].shape
    with pytest.raises(ImageError, match="query 'q': has neither pixels nor a uri"):
        load_image(consist.Query("q"))
