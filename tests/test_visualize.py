"""Overlays (evaluation --show, tools/infer.py, the web demo): small frames enlarged by an integer
factor with nearest-neighbour pixels (a mask pixel stays a block of pixels, nothing smoothed),
captions wrapped to the picture's width, tiles of a strip apart, one colour per mask."""
import numpy as np
from PIL import Image, ImageFont

from projects.salma.evaluation.visualize import (MIN_DISPLAY_SIZE, PALETTE, display_scale, hstack, overlay,
                                                 paint_masks, wrap_text)

CAPTION = "frame 3 (LLM): the small green triangle that moves to the right of the frame\n-> Sure, it is [SEG]."


def _frame(height=128, width=128, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8))


def test_display_scale_brings_small_frames_to_the_minimum_size():
    assert MIN_DISPLAY_SIZE == 256
    assert display_scale(128, 128) == 2 and display_scale(96, 128) == 2 and display_scale(40, 50) == 6
    assert display_scale(480, 854) == 1 and display_scale(256, 100) == 1


def test_wrapped_lines_fit_the_width_and_keep_every_word():
    font = ImageFont.load_default()
    lines = wrap_text(CAPTION, font, 124)
    assert all(font.getlength(line) <= 124 for line in lines) and len(lines) > 2
    assert " ".join(lines).split() == CAPTION.split()  # nothing dropped or cut (words fit the width here)
    assert lines[-1] == "-> Sure, it is [SEG]."  # a newline of the caption starts a line
    long_word = wrap_text("x" * 200, font, 50)  # a word wider than the picture is broken, not clipped
    assert "".join(long_word) == "x" * 200 and all(font.getlength(line) <= 50 for line in long_word)


def test_overlay_enlarges_a_small_frame_and_keeps_its_pixels():
    image = _frame(48, 64)
    pred = np.zeros((48, 64), bool)
    pred[10:30, 5:40] = True
    out = np.asarray(overlay(image, pred, "the red circle"))
    scale = display_scale(48, 64)
    picture = out[out.shape[0] - 48 * scale:]  # the caption band is on top
    assert picture.shape[:2] == (48 * scale, 64 * scale)
    small = picture[::scale, ::scale].astype(int)
    blocks = picture.reshape(48, scale, 64, scale, 3)
    assert (blocks == blocks[:, :1, :, :1]).all()  # nearest-neighbour: each source pixel is a block
    source = np.asarray(image).astype(int)
    assert (small[~pred] == source[~pred]).all()
    expected = source[pred] + 0.5 * (np.array([255, 40, 40]) - source[pred])  # Image.blend, alpha 0.5
    assert np.abs(small[pred] - expected).max() <= 1


def test_strip_captions_stay_inside_their_tiles():
    """128-px demo frames with long captions: each caption wraps inside its own tile (the text used to
    run into the next frame's) and the tiles are set apart."""
    tiles = [overlay(_frame(seed=t), None, CAPTION) for t in range(4)]
    strip = np.asarray(hstack(tiles, gap=4))
    assert strip.shape[1] == sum(t.width for t in tiles) + 3 * 4
    band = tiles[0].height - 128 * display_scale(128, 128)  # the caption band above the picture
    lines = len(wrap_text(CAPTION, ImageFont.load_default(), tiles[0].width - 4))
    assert lines > 2 and band >= 12 * lines  # the band holds every wrapped line
    x = 0
    for k, tile in enumerate(tiles):
        text = strip[:band, x : x + tile.width].max(-1) > 128  # white caption pixels
        assert text.any() and not text[:, -2:].any()  # written in the tile, clear of its right edge
        x += tile.width
        if k < len(tiles) - 1:
            assert (strip[:, x : x + 4] == 0).all()  # the gap
            x += 4


def test_paint_masks_gives_each_mask_its_colour_in_order():
    image = _frame(20, 30, seed=2)
    masks = np.zeros((2, 20, 30), bool)
    masks[0, :10] = True
    masks[1, 5:15] = True  # overlaps mask 0 on rows 5..9: the later mask is on top
    out = np.asarray(paint_masks(image, masks, scale=3)).astype(int)[::3, ::3]
    source = np.asarray(image).astype(int)

    def blend(colour, where):
        return source[where] + 0.5 * (np.array(colour) - source[where])

    only0, on1, none = masks[0] & ~masks[1], masks[1], ~masks.any(0)
    assert np.abs(out[only0] - blend(PALETTE[0], only0)).max() <= 1
    assert np.abs(out[on1] - blend(PALETTE[1], on1)).max() <= 1
    assert (out[none] == source[none]).all()
    assert len(set(PALETTE)) == len(PALETTE) >= 8
