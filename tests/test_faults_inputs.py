"""Fault injection (issue 29), input side: images that claim more pixels than they hold, pixel
modes PIL converts wrongly, zips of frames that decode to far more than they weigh, hidden files.

Every entry point decodes through ``datasets.image_policy``: the readers, ``tools/infer.py``,
``SALMAModel.predict`` (``as_rgb_image``) and the web demo's uploads.
"""
import os
import struct
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from projects.salma.app import read_frames_zip, read_upload
from projects.salma.datasets.errors import DataError
from projects.salma.datasets.frames import as_rgb_image, open_video
from projects.salma.datasets.image_policy import DEFAULT_MAX_PIXELS, set_max_pixels
from projects.salma.datasets.transforms import image_size, load_image
from test_data_errors import _refcoco, refcoco_copy  # noqa: F401


def claimed_png(width: int, height: int) -> bytes:
    """A ~100-byte PNG whose header says ``width`` x ``height`` (greyscale; the pixel data is a stub)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(autouse=True)
def default_budget():
    set_max_pixels(None)
    yield
    set_max_pixels(None)


# ------------------------------------------------------------------ pixel budget, from the header
@pytest.mark.parametrize("width, height", [(40000, 40000), (12000, 12000)])
def test_an_image_over_the_pixel_budget_is_refused_from_its_header(width, height, tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(claimed_png(width, height))
    assert path.stat().st_size < 200
    for read in (load_image, image_size, as_rgb_image):
        # PIL itself refuses 40000x40000 while opening (over twice its limit): its pixel count is named
        with pytest.raises(DataError, match=rf"{path}: image of ({width}x{height} = )?{width * height} pixels is over "
                                            rf"the pixel budget of {DEFAULT_MAX_PIXELS}") as err:
            read(str(path))
        assert err.value.reason == "too_large"


def test_the_pixel_budget_is_configurable(tmp_path, monkeypatch):
    path = tmp_path / "wide.png"
    Image.new("L", (300, 200), 7).save(path)
    monkeypatch.setenv("SALMA_MAX_IMAGE_PIXELS", "50000")
    with pytest.raises(DataError, match=r"300x200 = 60000 pixels is over the pixel budget of 50000"):
        load_image(str(path))
    set_max_pixels(60000)  # --max-pixels
    assert load_image(str(path)).size == (300, 200)


def test_a_bomb_in_a_training_set_is_a_counted_skip(build_data, data_cfgs, refcoco_copy):  # noqa: F811
    ds = _refcoco(build_data, data_cfgs, refcoco_copy)
    image_id, _ = ds.items[0]
    path = refcoco_copy / "images" / ds.images[image_id]["file_name"]
    path.write_bytes(claimed_png(40000, 40000))
    with pytest.raises(DataError, match=rf"{path}: image of 1600000000 pixels is over"):
        ds[0]
    sample = _refcoco(build_data, data_cfgs, refcoco_copy, on_error="skip", mode="train")[0]
    assert sample["meta"]["index"] == 1 and sample["meta"]["skipped"] == {"too_large": 1}


def test_infer_refuses_a_bomb_naming_the_file(tmp_path, monkeypatch):
    import tools.infer as infer

    path = tmp_path / "bomb.png"
    path.write_bytes(claimed_png(40000, 40000))
    monkeypatch.setattr(infer.SALMAModel, "from_pretrained", classmethod(lambda cls, *a, **k: object()))
    with pytest.raises(DataError, match=rf"{path}: image of 1600000000 pixels is over"):
        infer.main(["--model", "m", "--image", str(path), "--text", "x", "--out", str(tmp_path / "out")])
    with pytest.raises(DataError, match=r"^bomb.png: image of 1600000000 pixels is over"):
        read_upload(str(path))


# ------------------------------------------------------------------ pixel modes
def _grey16() -> np.ndarray:
    return np.linspace(0, 65535, 64 * 32).astype(np.uint16).reshape(32, 64)


def test_a_16_bit_grey_png_is_scaled_not_clipped(tmp_path):
    values = _grey16()
    path = tmp_path / "grey16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    expected = np.round(values / 257.0).astype(np.uint8)
    for image in (load_image(str(path)), as_rgb_image(Image.open(path)), read_upload(str(path)).frames[0]):
        rgb = np.asarray(image)
        assert rgb.dtype == np.uint8 and rgb.shape == (32, 64, 3)
        np.testing.assert_array_equal(rgb[..., 0], expected)
        assert rgb.min() == 0 and rgb.max() == 255 and len(np.unique(rgb)) > 200


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparent_pixels_are_composited_over_white(mode, tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:4, :, :] = (200, 10, 10, 255)  # the top half opaque red, the bottom half transparent black
    image = Image.fromarray(rgba, mode="RGBA")
    if mode == "LA":
        image = image.convert("LA")
    elif mode == "P":
        image = image.convert("P")
        image.info["transparency"] = image.getpixel((0, 7))
    path = tmp_path / f"{mode}.png"
    image.save(path, **({"transparency": image.info["transparency"]} if mode == "P" else {}))
    rgb = np.asarray(load_image(str(path)))
    assert (rgb[4:] == 255).all()  # transparent: white, not the stored black
    assert (rgb[:4] != 255).any()


def test_a_float_image_is_refused_by_name(tmp_path):
    path = tmp_path / "depth.tiff"
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(path)
    with pytest.raises(DataError, match=rf"{path}: image mode 'F' is not supported") as err:
        load_image(str(path))
    assert err.value.reason == "bad_image_mode"


def test_exif_orientation_turns_inference_inputs_upright(tmp_path):
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = 255  # left half white, as stored
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    assert load_image(str(path)).size == (40, 20)  # readers: the stored pixels (annotations are drawn on them)
    for image in (as_rgb_image(str(path)), read_upload(str(path)).frames[0]):
        shown = np.asarray(image)
        assert image.size == (20, 40) and shown[:20].mean() > 200 and shown[20:].mean() < 50  # white on top


# ------------------------------------------------------------------ zips of frames
def _zip(path, members: dict) -> str:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return str(path)


def _png(array) -> bytes:
    import io

    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def test_zip_frames_are_bounded_by_decoded_size_and_count_before_decoding(tmp_path, monkeypatch):
    frame = _png(np.zeros((10, 10, 3), np.uint8))
    bombs = _zip(tmp_path / "bombs.zip", {f"v/{t}.png": claimed_png(12000, 12000) for t in range(8)})
    with pytest.raises(DataError, match=r"bombs.zip:v/0.png: image of 12000x12000 .* over the pixel budget"):
        read_upload(bombs)
    many = _zip(tmp_path / "many.zip", {f"v/{t:03d}.png": frame for t in range(5)})
    with pytest.raises(DataError, match=r"many.zip: 5 frames, more than 4"):
        read_frames_zip(many, max_frames=4)
    with pytest.raises(DataError, match=r"many.zip: 500 pixels in 5 frames, more than the zip budget of 400"):
        read_frames_zip(many, max_pixels=400)

    def no_reading(*args, **kwargs):
        raise AssertionError("a member was read before the zip was checked")
    monkeypatch.setattr(zipfile.ZipFile, "read", no_reading)
    big = _zip(tmp_path / "big.zip", {"v/0.png": frame + b"\0" * 5000})
    with pytest.raises(DataError, match=r"big.zip:v/0.png: \d+ bytes uncompressed, more than 1000 for one frame"):
        read_frames_zip(big, max_file_bytes=1000)


def test_folder_and_zip_readers_skip_the_same_hidden_files(tmp_path):
    frames = {f"{t:05d}.png": _png(np.full((6, 6, 3), 40 * t, np.uint8)) for t in range(3)}
    junk = {"._00000.png": b"\0\5\26\7AppleDouble", ".DS_Store": b"junk", "Thumbs.db": b"junk",
            ".hidden.png": b"junk"}
    folder = tmp_path / "frames"
    folder.mkdir()
    for name, data in {**frames, **junk}.items():
        (folder / name).write_bytes(data)
    zipped = _zip(tmp_path / "frames.zip", {**{f"clip/{n}": d for n, d in {**frames, **junk}.items()},
                                            "__MACOSX/clip/._00001.png": b"junk"})
    from_folder, from_zip = open_video(str(folder)), read_upload(zipped)
    assert from_folder.names == from_zip.names == ["00000", "00001", "00002"]
    for t in range(3):
        assert np.array_equal(np.asarray(from_folder.image(t)), np.asarray(from_zip.frames[t]))
