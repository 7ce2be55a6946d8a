"""Mask decoding (polygon / RLE, against pycocotools on hand cases) and image transforms."""
import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from projects.salma.constants import IMAGENET_MEAN, IMAGENET_STD
from projects.salma.datasets.errors import DataError
from projects.salma.datasets.masks import decode_rle, decode_segmentation, encode_mask
from projects.salma.datasets.transforms import (closest_grid, dynamic_preprocess, internvl_pixel_values,
                                                load_image, num_tiles, resize_masks, sam_pixel_values)


def test_polygon_matches_pycocotools_and_unions_parts():
    h, w = 10, 12
    square = [1, 1, 5, 1, 5, 5, 1, 5]
    tri = [4, 4, 10, 4, 7, 9]  # overlaps the square: the union stays in {0, 1}
    got = decode_segmentation([square, tri], h, w, source="x")
    ref = mask_utils.decode(mask_utils.frPyObjects([square, tri], h, w))
    assert got.dtype == np.uint8 and got.shape == (h, w)
    assert set(np.unique(got)) <= {0, 1}
    np.testing.assert_array_equal(got, np.minimum(ref.sum(axis=2), 1))
    np.testing.assert_array_equal(decode_segmentation([square], h, w),
                                  mask_utils.decode(mask_utils.frPyObjects([square], h, w))[:, :, 0])


def test_degenerate_polygons():
    # a 4-number "polygon" would be read as a box by pycocotools: it is dropped (zero area)
    got = decode_segmentation([[0, 0, 3, 3], [1, 1, 5, 1, 5, 5, 1, 5]], 8, 8)
    np.testing.assert_array_equal(got, decode_segmentation([[1, 1, 5, 1, 5, 5, 1, 5]], 8, 8))
    with pytest.raises(DataError, match="ann 7"):
        decode_segmentation([[0, 0, 3, 3]], 8, 8, source="ann 7")


def test_rle_compressed_uncompressed_and_none():
    m = np.zeros((7, 9), dtype=np.uint8)
    m[2:5, 3:8] = 1
    compressed = encode_mask(m)
    assert isinstance(compressed["counts"], str)
    np.testing.assert_array_equal(decode_segmentation(compressed, 7, 9), m)
    np.testing.assert_array_equal(decode_rle({**compressed, "counts": compressed["counts"].encode()}, 7, 9), m)
    # uncompressed (column-major run lengths), as COCO's iscrowd annotations
    flat = m.flatten(order="F")
    runs, cur, n = [], 0, 0
    for v in flat:
        if v != cur:
            runs.append(n)
            cur, n = v, 0
        n += 1
    runs.append(n)
    np.testing.assert_array_equal(decode_segmentation({"size": [7, 9], "counts": runs}, 7, 9), m)
    np.testing.assert_array_equal(decode_rle(None, 7, 9), np.zeros((7, 9), np.uint8))


def test_rle_size_mismatch_names_source():
    rle = encode_mask(np.ones((4, 4), np.uint8))
    with pytest.raises(DataError, match=r"mask_dict.json: anno_id 3.*\[4, 4\].*\[5, 4\]") as err:
        decode_rle(rle, 5, 4, source="mask_dict.json: anno_id 3")
    assert err.value.reason == "rle_size"


@pytest.mark.parametrize("size,grid", [((448, 448), (1, 1)), ((896, 448), (2, 1)), ((640, 480), (4, 3)),
                                       ((1000, 100), (10, 1)), ((100, 1000), (1, 10)), ((128, 96), (4, 3))])
def test_closest_grid_like_internvl(size, grid):
    assert closest_grid(*size, min_num=1, max_num=12, image_size=448) == grid


def test_dynamic_preprocess_tiles_and_thumbnail():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (48, 96, 3), dtype=np.uint8))
    tiles = dynamic_preprocess(image, min_num=1, max_num=6, image_size=32, use_thumbnail=True)
    assert closest_grid(96, 48, max_num=6, image_size=32) == (2, 1)
    assert len(tiles) == 3 == num_tiles(96, 48, max_num=6, image_size=32)
    assert all(t.size == (32, 32) for t in tiles)
    resized = np.asarray(image.resize((64, 32), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(np.asarray(tiles[1]), resized[:, 32:])  # row-major tiles
    single = dynamic_preprocess(image, max_num=1, image_size=32, use_thumbnail=True)
    assert len(single) == 1  # no thumbnail for a single tile
    pv = internvl_pixel_values(image, image_size=32, max_num=6)
    assert pv.shape == (3, 3, 32, 32) and pv.dtype == torch.float32


def test_sam_direct_resize_and_normalisation():
    image = Image.new("RGB", (40, 20), (255, 255, 255))
    pv = sam_pixel_values(image, size=64)
    assert pv.shape == (3, 64, 64) and pv.dtype == torch.float32
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(pv[:, 10, 10], expected)


def test_resize_masks():
    m = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    m[0, :, 2:6, 2:6] = 1
    out = resize_masks(m, 4)
    assert out.shape == (2, 3, 4, 4) and out.dtype == torch.uint8
    assert out[0, 0, 1:3, 1:3].all() and out[1].sum() == 0
    assert resize_masks(m, (16, 12)).shape == (2, 3, 16, 12)
    assert resize_masks(torch.zeros(0, 1, 8, 8, dtype=torch.uint8), 4).shape == (0, 1, 4, 4)


def test_load_image_errors(tmp_path):
    with pytest.raises(DataError, match="missing.jpg.*not found") as err:
        load_image(str(tmp_path / "missing.jpg"))
    assert err.value.reason == "missing_image"
    good = tmp_path / "good.jpg"
    Image.new("RGB", (32, 32), (10, 200, 30)).save(good, quality=95)
    assert load_image(str(good)).size == (32, 32)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(good.read_bytes()[:200])  # truncated JPEG
    with pytest.raises(DataError, match="bad.jpg") as err:
        load_image(str(bad))
    assert err.value.reason == "corrupt_image"
