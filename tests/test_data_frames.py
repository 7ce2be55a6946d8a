"""Frames read one at a time (datasets/frames.py): a folder, a list of images, a video file read
forwards and backwards (seeking, checked against each frame's timestamp), SAM-2 input made on
demand; and the evaluation reader's streamed items (``stream_frames=True``), equal to the items
that hold every frame in memory."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from projects.salma.datasets import frames as frames_module
from projects.salma.datasets.errors import DataError
from projects.salma.datasets.frames import ImageFrames, SamFrames, VideoFileFrames, open_video
from projects.salma.datasets.ref_vos import sample_frame_indices
from projects.salma.datasets.synthetic import write_video_file
from projects.salma.datasets.transforms import stack_normalized
from projects.salma.datasets.video_files import VideoEndedEarly

from test_data_video_files import decode_all  # an OpenCV read loop, independent of the readers

cv2 = pytest.importorskip("cv2")  # installed with mmengine
N_FRAMES = 40


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 40-frame mp4 whose frames all differ (a bar moves one step per frame), and its frames."""
    path = str(tmp_path_factory.mktemp("clip") / "clip.mp4")
    images = []
    for t in range(N_FRAMES):
        a = np.full((48, 64, 3), 30, np.uint8)
        a[:, t : t + 6] = (200, 60 + 4 * t, 20)
        images.append(Image.fromarray(a))
    write_video_file(path, images, fps=12)
    return path, [np.asarray(image) for image in decode_all(path)]


def test_video_file_read_forwards_then_backwards_gives_the_decoded_frames(clip):
    path, expected = clip
    video = VideoFileFrames(path, chunk=8)
    assert len(video) == N_FRAMES and video.size == (64, 48) and video.names[:2] == ["00000", "00001"]
    order = [12, 25] + list(range(13, N_FRAMES)) + list(range(11, -1, -1))  # a tracker's reads
    for t in order:
        assert np.array_equal(np.asarray(video.image(t)), expected[t]), t
    assert len(video._chunk) <= 8  # backwards: one chunk of decoded frames in memory


def test_backward_reads_seek_once_per_chunk(clip, monkeypatch):
    path, expected = clip
    video = VideoFileFrames(path, chunk=8)
    video.image(N_FRAMES - 1)  # the decoder at the end
    seeks = []
    original_seek = VideoFileFrames._seek
    monkeypatch.setattr(VideoFileFrames, "_seek", lambda self, f: seeks.append(f) or original_seek(self, f))
    for t in range(N_FRAMES - 2, -1, -1):
        assert np.array_equal(np.asarray(video.image(t)), expected[t]), t
    assert seeks == [31, 23, 15, 7, 0]  # chunks 31..38, 23..30, ... 0..6


class LyingCapture:
    """A VideoCapture whose seeks land 3 frames early but report the frame asked for (what a
    variable-frame-rate file can do)."""

    def __init__(self, path):
        self.inner = cv2.VideoCapture(path)
        self.offset = 0

    def set(self, prop, value):
        if prop == cv2.CAP_PROP_POS_FRAMES:
            self.offset = 3 if value >= 3 else 0
            return self.inner.set(prop, value - self.offset)
        return self.inner.set(prop, value)

    def get(self, prop):
        value = self.inner.get(prop)
        return value + self.offset if prop == cv2.CAP_PROP_POS_FRAMES else value

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_seek_that_lands_elsewhere_is_caught_and_read_exactly(clip, monkeypatch):
    path, expected = clip
    monkeypatch.setattr(frames_module, "_cv2", lambda: type("cv2", (), {**vars(cv2), "VideoCapture": LyingCapture}))
    video = VideoFileFrames(path, chunk=8)
    logged = []
    monkeypatch.setattr(frames_module, "print_log", lambda msg, **kw: logged.append(msg))
    video.image(30)
    for t in range(29, 9, -1):
        assert np.array_equal(np.asarray(video.image(t)), expected[t]), t
    assert video._seek_ok is False and len(logged) == 1 and "not frame-exact" in logged[0]


def test_selected_frame_numbers_and_a_short_file(clip):
    path, expected = clip
    video = VideoFileFrames(path, frame_numbers=[0, 4, 8, 36])  # Ref-SAV: every 4th frame of the file
    assert len(video) == 4 and video.names == ["00000", "00004", "00008", "00036"]
    for t in (3, 1, 2, 0):
        assert np.array_equal(np.asarray(video.image(t)), expected[[0, 4, 8, 36][t]])
    beyond = VideoFileFrames(path, frame_numbers=[2, N_FRAMES + 5])
    with pytest.raises(VideoEndedEarly, match=rf"ends after {N_FRAMES} frames"):
        beyond.image(1)


def test_image_frames_check_sizes_up_front_and_decode_when_asked(tmp_path, monkeypatch):
    paths = []
    for t in range(5):
        paths.append(str(tmp_path / f"{t:05d}.jpg"))
        Image.fromarray(np.full((24, 32, 3), 40 * t, np.uint8)).save(paths[-1])
    decoded = []
    load = frames_module.load_image
    monkeypatch.setattr(frames_module, "load_image", lambda p, **kw: decoded.append(p) or load(p, **kw))
    video = open_video(tmp_path)
    assert isinstance(video, ImageFrames) and len(video) == 5 and video.size == (32, 24) and decoded == []
    assert video.names == [f"{t:05d}" for t in range(5)]
    assert np.asarray(video.image(3)).mean() == pytest.approx(120, abs=2) and decoded == [paths[3]]
    Image.fromarray(np.zeros((20, 32, 3), np.uint8)).save(paths[4])  # the last frame: never decoded below
    with pytest.raises(DataError, match=r"00004.jpg: size 32x20 differs from 32x24 of the video's other frames"):
        open_video(tmp_path)
    arrays = [np.zeros((24, 32, 3), np.uint8)] * 2 + [np.zeros((24, 30, 3), np.uint8)]
    with pytest.raises(DataError, match=r"frame 2: size 30x24 differs from 32x24"):
        ImageFrames(arrays)


def test_sam_frames_are_the_rows_of_the_stacked_input(clip):
    path, expected = clip
    video = open_video(path)
    sam = SamFrames(video, 32)
    stacked = stack_normalized([Image.fromarray(f) for f in expected], 32)
    assert len(sam) == N_FRAMES
    for t in (N_FRAMES - 1, 0, 17):
        assert torch.equal(sam[t], stacked[t])
    with pytest.raises(IndexError):
        sam[N_FRAMES]


def test_uniform_floor_is_sa2va_i_sampling():
    """Sa2VA-i: np.linspace(0, T - 1, K, dtype=int), for short videos too (repeats)."""
    rng = np.random.default_rng(0)
    assert sample_frame_indices(8, 5, "uniform_floor", rng) == [0, 1, 3, 5, 7]
    assert sample_frame_indices(8, 5, "uniform", rng) == [0, 2, 4, 5, 7]  # SALMA's rounds
    assert sample_frame_indices(3, 5, "uniform_floor", rng) == [0, 0, 1, 1, 2]
    assert sample_frame_indices(100, 5, "uniform_floor", rng) == [0, 24, 49, 74, 99]


# ------------------------------------------------------------------ the evaluation reader, streamed
@pytest.mark.parametrize("reader", ["mevis_valid_u", "ref_sav"])
def test_streamed_eval_item_equals_the_item_with_every_frame_in_memory(build_data, data_cfgs, reader):
    streamed = build_data(data_cfgs[reader], stream_frames=True)
    full = build_data(data_cfgs[reader], sam_all_frames=True)
    for index in range(len(streamed)):
        s, f = streamed[index], full[index]
        llm = s["meta"]["frame_indices"]
        assert llm == f["meta"]["frame_indices"] and s["meta"]["sam_frame_indices"] == llm
        assert torch.equal(s["pixel_values"], f["pixel_values"])
        assert torch.equal(s["g_pixel_values"], f["g_pixel_values"][llm])  # the LLM frames' SAM-2 input
        n = len(f["meta"]["all_frame_paths"])
        assert len(s["sam_frames"]) == n == f["g_pixel_values"].shape[0]
        for t in reversed(range(n)):
            assert torch.equal(s["sam_frames"][t], f["g_pixel_values"][t]), (index, t)
            np.testing.assert_array_equal(s["gt_frames"][t], f["masks"][:, t].numpy())
        assert f["masks"][:, llm].any() and torch.equal(s["masks"], f["masks"][:, llm])


def test_streamed_foreground_equals_the_loaded_one_and_options_exclude_each_other(build_data, data_cfgs, tmp_path,
                                                                                   synthetic_data):
    import json
    import shutil

    root = tmp_path / "revos"
    shutil.copytree(synthetic_data["mevis_valid_u"], root)
    meta = json.loads((root / "meta_expressions.json").read_text())
    from projects.salma.datasets.masks import encode_mask

    rng = np.random.default_rng(0)
    fg = {vid: {"masks_rle": [encode_mask((rng.random((96, 128)) < 0.3).astype(np.uint8)) for _ in v["frames"]]}
          for vid, v in meta["videos"].items()}
    (root / "fg.json").write_text(json.dumps(fg))
    ds = build_data(data_cfgs["mevis_valid_u"], data_root=str(root), foreground_file="fg.json", stream_frames=True)
    loaded, lazy = ds.load_foreground_masks(0), ds.foreground_frames(0)
    assert len(lazy) == len(loaded) == 8 and loaded.any()
    for t in range(8):
        np.testing.assert_array_equal(lazy[t], loaded[t])
    with pytest.raises(ValueError, match="exclude each other"):
        build_data(data_cfgs["mevis_valid_u"], stream_frames=True, sam_all_frames=True)
    with pytest.raises(ValueError, match="stream_frames is for evaluation items"):
        build_data(data_cfgs["mevis_valid_u"], stream_frames=True, mode="train", mask_file="mask_dict.json")


def test_streamed_item_refuses_a_frame_of_another_size_before_any_work(build_data, data_cfgs, tmp_path, synthetic_data):
    import shutil

    root = tmp_path / "mevis"
    shutil.copytree(synthetic_data["mevis_valid_u"], root)
    ds = build_data(data_cfgs["mevis_valid_u"], data_root=str(root), stream_frames=True)
    vid = ds.items[0]["vid"]
    odd = root / "JPEGImages" / vid / "00006.jpg"  # not an LLM frame ([0, 2, 4, 5, 7])
    Image.open(odd).resize((64, 48)).save(odd)
    with pytest.raises(DataError, match=rf"{vid}/00006.jpg: size 64x48 differs from 128x96 .*\(video {vid}\)"):
        ds[0]
    assert os.path.exists(odd)
