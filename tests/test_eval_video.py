"""Video propagation: the SAM-2 memory tracker shares the model's modules, conditions on the
language-decoded frames and covers every frame; the predictor keeps the language decode on the
LLM frames. The real generation is steered to answers with [SEG] (``forced_answer``), so the mask
path runs; masks are checked to be non-trivial before they are compared."""
import pytest
import torch
from mmengine.config import Config

from projects.salma.models.video import SAM2MemoryTracker, VideoPredictor
from projects.salma.registry import MODELS
from projects.salma.testing import assert_nontrivial_masks, forced_answer, make_batch

TINY = "configs/tiny/salma_tiny.py"
SIZE = (48, 64)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MODELS.build(Config.fromfile(TINY).model).eval()


@pytest.fixture(scope="module")
def tracker(model):
    return SAM2MemoryTracker(model.grounding_encoder, memory_weights="random", seed=0)


@pytest.fixture
def one_seg():
    with forced_answer("Sure, [SEG]."):
        yield


@pytest.fixture
def two_segs():
    with forced_answer("Sure, [SEG] and [SEG]."):
        yield


def test_tracker_shares_the_runner_modules(model, tracker):
    sam2 = model.grounding_encoder.sam2
    video = tracker.video
    assert video.mask_decoder.iou_token.weight is sam2.mask_decoder.iou_token.weight
    assert video.prompt_encoder.no_mask_embed.weight is sam2.prompt_encoder.no_mask_embed.weight
    first = next(iter(sam2.vision_encoder.parameters()))
    assert any(p is first for p in video.vision_encoder.parameters())
    assert video.no_memory_embedding is sam2.no_memory_embedding


def test_original_decoder_needs_a_checkpoint(model):
    with pytest.raises(ValueError, match="checkpoint"):
        SAM2MemoryTracker(model.grounding_encoder, memory_weights="random", tracker_decoder="original")


@pytest.mark.parametrize("cond_frames", [(0, 3), (3,)])
def test_track_covers_every_frame_from_conditioning_masks(tracker, cond_frames):
    torch.manual_seed(1)
    frames = torch.randn(6, 3, 128, 128)
    mask = torch.zeros(2, 32, 32, dtype=torch.bool)
    mask[0, 4:20, 6:24] = True
    mask[1, 16:30, 2:12] = True
    out = tracker.track(frames, {t: mask for t in cond_frames}, SIZE)
    assert out.shape == (2, 6, *SIZE) and out.dtype == torch.bool
    expected = torch.nn.functional.interpolate(mask[:, None].float(), size=SIZE, mode="nearest")[:, 0].bool()
    for t in cond_frames:  # a conditioning frame's output is (SAM-2's version of) the given mask
        inter = (out[:, t] & expected).flatten(1).sum(1).float()
        union = (out[:, t] | expected).flatten(1).sum(1).float()
        assert (inter / union > 0.9).all()


def test_predictor_memory_keeps_language_decode_on_llm_frames(model, tracker, one_seg):
    batch = make_batch(model, [(1, 3), (1, 3)], tile_size=128, sam_size=128, mask_size=SIZE, with_answer=False)
    torch.manual_seed(2)
    frames = torch.randn(7, 3, 128, 128)
    llm = [0, 3, 6]
    batch["g_pixel_values"] = [frames[llm], frames[llm]]
    direct = model.predict(batch)
    out = VideoPredictor(model, propagation="memory", tracker=tracker)(batch, frames, llm, SIZE)
    assert [o["masks"].shape for o in out] == [(1, 7, *SIZE)] * 2
    for o, d in zip(out, direct):
        assert o["text"] == "Sure, [SEG]."
        assert_nontrivial_masks(o["masks"], "tracked masks (every frame)")
        assert torch.equal(o["masks"][:, llm], d["masks"])  # the LLM frames: the CMA + prior decode
        assert o["text"] == d["text"]


def test_predictor_decode_all_decodes_every_frame(model, one_seg):
    batch = make_batch(model, [(1, 2)], tile_size=128, sam_size=128, mask_size=SIZE, with_answer=False)
    frames = torch.randn(5, 3, 128, 128)
    out = VideoPredictor(model, propagation="decode_all")(batch, frames, [0, 4], SIZE)
    direct = model.predict(dict(batch, g_pixel_values=[frames]))
    assert_nontrivial_masks(out[0]["masks"], "decode_all masks")
    assert torch.equal(out[0]["masks"], direct[0]["masks"]) and out[0]["masks"].shape == (1, 5, *SIZE)


def test_predictor_without_seg_gives_no_masks(model, tracker):
    batch = make_batch(model, [(1, 2)], tile_size=128, sam_size=128, mask_size=SIZE, with_answer=False)
    frames = torch.randn(4, 3, 128, 128)
    with forced_answer("There is none."):
        out = VideoPredictor(model, propagation="memory", tracker=tracker)(batch, frames, [0, 1], SIZE)
    assert out[0]["text"] == "There is none." and out[0]["n_seg"] == 0
    assert out[0]["masks"].shape == (0, 4, *SIZE)


def test_memory_mode_needs_a_tracker(model):
    with pytest.raises(ValueError, match="SAM2MemoryTracker"):
        VideoPredictor(model, propagation="memory")
    with pytest.raises(ValueError, match="propagation"):
        VideoPredictor(model, propagation="nearest")


def test_memory_modules_come_from_a_sam2_video_checkpoint(model, tmp_path):
    """An HF sam2_video folder (what the converter writes from Meta's .pt) gives the memory
    modules; the image modules stay the runner's own."""
    from projects.salma.models.video import video_config_from_image
    from transformers import Sam2VideoModel

    torch.manual_seed(3)
    saved = Sam2VideoModel(video_config_from_image(model.grounding_encoder))
    saved.save_pretrained(tmp_path / "sam2_video")
    tracker = SAM2MemoryTracker(model.grounding_encoder, memory_weights=str(tmp_path / "sam2_video"))
    assert torch.equal(tracker.video.memory_attention.layers[0].self_attn.q_proj.weight,
                       saved.memory_attention.layers[0].self_attn.q_proj.weight)
    assert tracker.video.mask_decoder.iou_token.weight is model.grounding_encoder.sam2.mask_decoder.iou_token.weight
    original = SAM2MemoryTracker(model.grounding_encoder, memory_weights=str(tmp_path / "sam2_video"),
                                 tracker_decoder="original")
    assert torch.equal(original.video.mask_decoder.iou_token.weight, saved.mask_decoder.iou_token.weight)
    assert not torch.equal(original.video.mask_decoder.iou_token.weight,
                           model.grounding_encoder.sam2.mask_decoder.iou_token.weight)


def test_only_the_first_seg_of_an_answer_is_tracked(model, tracker, two_segs):
    batch = make_batch(model, [(1, 2)], tile_size=128, sam_size=128, mask_size=SIZE, with_answer=False)
    frames = torch.randn(4, 3, 128, 128)
    batch["g_pixel_values"] = [frames[[0, 2]]]
    direct = model.predict(batch)[0]
    assert direct["masks"].shape[0] == 2
    assert_nontrivial_masks(direct["masks"], "language decode of both [SEG]")
    assert not torch.equal(direct["masks"][0], direct["masks"][1])  # so "the first" is a real choice
    for mode, kwargs in (("memory", dict(tracker=tracker)), ("decode_all", {})):
        out = VideoPredictor(model, propagation=mode, **kwargs)(batch, frames, [0, 2], SIZE)[0]
        assert out["n_seg"] == 2 and out["masks"].shape == (1, 4, *SIZE)
        if mode == "memory":  # the LLM frames carry the first [SEG]'s language decode
            assert torch.equal(out["masks"][0, [0, 2]], direct["masks"][0])


@pytest.mark.parametrize("propagation", ["memory", "decode_all"])
def test_predictor_track_all_seg_gives_every_seg_its_masks(model, tracker, two_segs, propagation):
    batch = make_batch(model, [(1, 2)], tile_size=128, sam_size=128, mask_size=SIZE, with_answer=False)
    torch.manual_seed(4)
    frames = torch.randn(5, 3, 128, 128)
    llm = [1, 3]
    batch["g_pixel_values"] = [frames[llm]]
    kw = dict(propagation=propagation, tracker=tracker if propagation == "memory" else None)
    first = VideoPredictor(model, **kw)(batch, frames, llm, SIZE)[0]
    every = VideoPredictor(model, track_all_seg=True, **kw)(batch, frames, llm, SIZE)[0]
    assert first["n_seg"] == every["n_seg"] == 2
    assert first["masks"].shape == (1, 5, *SIZE) and every["masks"].shape == (2, 5, *SIZE)
    assert_nontrivial_masks(every["masks"], "masks of both [SEG]")
    assert torch.equal(every["masks"][:1], first["masks"])  # SAM-2 tracks each object on its own


def test_llm_frame_masks_tracker_gives_sam2s_output_on_the_llm_frames(model, tracker, one_seg):
    """Sa2VA-i's choice: every frame's mask is the tracker's, the LLM frames included (SAM-2's
    rendering of the language decode it was prompted with); the default keeps the decode itself."""
    batch = make_batch(model, [(1, 2)], tile_size=128, sam_size=128, mask_size=SIZE, with_answer=False)
    torch.manual_seed(5)
    frames = torch.randn(6, 3, 128, 128)
    llm = [1, 4]
    batch["g_pixel_values"] = [frames[llm]]
    direct = model.predict(batch)[0]
    language = VideoPredictor(model, tracker=tracker)(batch, frames, llm, SIZE)[0]["masks"]
    sam2 = VideoPredictor(model, tracker=tracker, llm_frame_masks="tracker")(batch, frames, llm, SIZE)[0]["masks"]
    cond = {t: direct["mask_logits"][:, k] for k, t in enumerate(llm)}
    expected = tracker.track(frames, cond, SIZE)  # (1, 6, H, W): SAM-2's output everywhere
    assert_nontrivial_masks(sam2[:, llm], "SAM-2's masks on the LLM frames")
    assert torch.equal(sam2, expected)
    assert torch.equal(language[:, llm], direct["masks"]) and not torch.equal(sam2[:, llm], language[:, llm])
    others = [t for t in range(6) if t not in llm]
    assert torch.equal(sam2[:, others], language[:, others])
    with pytest.raises(ValueError, match="llm_frame_masks"):
        VideoPredictor(model, tracker=tracker, llm_frame_masks="both")


def test_decode_all_in_chunks_equals_one_call(model, one_seg):
    batch = make_batch(model, [(1, 2), (1, 2)], tile_size=128, sam_size=128, mask_size=SIZE, with_answer=False)
    torch.manual_seed(6)
    frames = torch.randn(7, 3, 128, 128)
    whole = VideoPredictor(model, propagation="decode_all")(batch, frames, [0, 6], SIZE)
    chunks = VideoPredictor(model, propagation="decode_all", decode_chunk=3)
    stream = chunks.stream(batch, frames, [0, 6], SIZE)
    assert [t for t, _ in stream] == list(range(7))  # chunks of 3, 3, 1 frames, in order
    chunked = chunks(batch, frames, [0, 6], SIZE)
    for a, b in zip(whole, chunked):
        assert_nontrivial_masks(a["masks"], "decode_all masks")
        assert torch.equal(a["masks"], b["masks"]) and a["text"] == b["text"]


def test_streamed_evaluation_equals_the_evaluation_with_every_frame_in_memory(model, tracker, build_data, data_cfgs):
    """The reader's streamed item (every frame and its GT read when the tracker reaches it) and the
    item holding every frame give the same record: masks (RLE per frame), J, F, A. LLM frames
    drawn at random, so the first is not frame 0 and SAM-2 also tracks backwards."""
    from projects.salma.evaluation.ref_vos import RefVOSEvaluator

    kw = dict(image_size=128, num_frames=2, frame_sampling="random")
    streamed = build_data(data_cfgs["mevis_valid_u"], stream_frames=True, **kw)[1]
    in_memory = build_data(data_cfgs["mevis_valid_u"], sam_all_frames=True, **kw)[1]
    assert streamed["meta"]["frame_indices"][0] > 0
    answers = {e: "No." if k == 0 else "Sure, [SEG]." for k, e in enumerate(streamed["meta"]["expressions"])}
    with forced_answer(lambda prompt: next(a for e, a in answers.items() if e in prompt)):
        for propagation in ("memory", "decode_all"):
            evaluator = RefVOSEvaluator(VideoPredictor(model, propagation=propagation, tracker=tracker),
                                        protocol="refsav")
            ours, theirs = evaluator.predict_item(model, streamed), evaluator.predict_item(model, in_memory)
            assert ours == theirs, propagation
            masks = [e["masks"] for e in ours["expressions"]]
            assert masks[0] is None and all(m is not None and len(m) == 8 for m in masks[1:])
            assert all(0 < e["J"] < 1 and 0 < e["F"] <= 1 for e in ours["expressions"][1:])
