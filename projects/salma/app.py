"""The web demo (``tools/app.py``): an exported SALMA model behind a local Gradio page.

    demo = SegmentationDemo(SALMAModel.from_pretrained(folder), name=folder)
    build_app(demo).launch(...)

The page takes an image, a video file or a zip of frames, and a text: a referring expression
(asked with the evaluation's template, as ``tools/test.py`` asks it) or a free question whose
answer may hold ``[SEG]``; questions continue a chat (``SALMAModel.predict(history=...)``).
Regions painted on the image (one editor layer each) or typed as boxes are visual prompts named
region1, region2, ... Every answer goes through ``SALMAModel.predict``, the code path of the
evaluation. It shows the answer, an overlay with one colour per ``[SEG]`` (small frames enlarged,
nearest-neighbour, so each mask pixel is visible as predicted), a legend (the ``<p>phrase</p>``
before each ``[SEG]``), the masks as PNGs, and for a video every frame's overlay.

:class:`SegmentationDemo` holds the logic (plain Python, tested without a browser);
:func:`build_app` lays out the Gradio page around it. Bad uploads (not an image, an empty zip) are
a :class:`~projects.salma.datasets.errors.DataError` naming the file, shown in the page
(``gr.Error``); the server keeps serving.
"""
from __future__ import annotations

import contextlib
import functools
import html
import os
import posixpath
import re
import shutil
import signal
import tempfile
import zipfile
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
from PIL import Image

from .constants import PHRASE_END, PHRASE_START, SEG_TOKEN
from .datasets.errors import DataError
from .datasets.image_policy import bomb_error, check_pixels, is_hidden, open_image
from .datasets.image_policy import max_pixels as image_max_pixels
from .datasets.inference import FRAME_EXTENSIONS, VIDEO_EXTENSIONS, read_video
from .datasets.transforms import load_image
from .evaluation.visualize import PALETTE, display_scale, paint_masks
from .inference import mask_name, save_mask

MODES = ("Referring expression", "Question / chat")
# A zip of frames, checked before any frame is decoded (a zip bomb stops here, named):
MAX_ZIP_FRAMES = 2000  # frame files
MAX_FRAME_FILE_BYTES = 256 << 20  # one frame file, uncompressed
ZIP_PIXELS_PER_IMAGE_BUDGET = 4  # all frames together: 4x the per-image pixel budget (2^28 by default)
_PHRASE = re.compile(re.escape(PHRASE_START) + r"(.*?)" + re.escape(PHRASE_END), re.S)


# ------------------------------------------------------------------ uploads
@dataclass
class Media:
    """An uploaded image (one frame) or video: RGB frames and their names."""

    kind: str  # 'image' | 'video'
    frames: list[Image.Image]
    names: list[str]
    source: str  # the uploaded file's name, for messages


def _frame_members(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The zip's frame files: image extension, not a folder, not hidden (:func:`is_hidden`, as the
    frame-folder reader skips them), not under macOS's ``__MACOSX/``."""
    return [m for m in archive.infolist() if not m.is_dir() and m.filename.lower().endswith(FRAME_EXTENSIONS)
            and not any(is_hidden(part) for part in m.filename.split("/"))]


def _check_zip_budget(members: list[zipfile.ZipInfo], archive: zipfile.ZipFile, name: str, *, max_frames: int,
                      max_file_bytes: int, max_pixels: int) -> None:
    """Count, declared size and header pixel size of every frame, before any is decoded: a small
    zip can hold many frames that each decode to hundreds of MB (each, and all together, bounded).
    zipfile stops reading a member at its declared size, so the declared size bounds what is read."""
    if len(members) > max_frames:
        raise DataError(f"{name}: {len(members)} frames, more than {max_frames}", reason="too_large")
    total = 0
    for m in members:
        where = f"{name}:{m.filename}"
        if m.file_size > max_file_bytes:
            raise DataError(f"{where}: {m.file_size} bytes uncompressed, more than {max_file_bytes} for one frame",
                            reason="too_large")
        try:
            with archive.open(m) as f, Image.open(f) as image:
                check_pixels(*image.size, where)
                total += image.size[0] * image.size[1]
        except DataError:
            raise
        except Image.DecompressionBombError as err:
            raise bomb_error(err, where) from err
        except Exception as err:  # noqa: BLE001  PIL raises many kinds for a bad header; all name the member
            raise DataError(f"{where}: cannot decode image ({err})", reason="corrupt_image") from err
    if total > max_pixels:
        raise DataError(f"{name}: {total} pixels in {len(members)} frames, more than the zip budget of {max_pixels}",
                        reason="too_large")


def read_frames_zip(path: str, *, max_frames: int = MAX_ZIP_FRAMES, max_file_bytes: int = MAX_FRAME_FILE_BYTES,
                    max_pixels: int | None = None) -> tuple[list[Image.Image], list[str]]:
    """Frames of a zipped folder (one folder; names sorted as ``read_video`` sorts a folder's),
    decoded in memory: nothing is extracted, so member paths never reach the file system.
    ``max_pixels``: all frames together (default :data:`ZIP_PIXELS_PER_IMAGE_BUDGET` times the
    per-image pixel budget)."""
    name = os.path.basename(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(f"{name}: not a readable zip file ({err})", reason="corrupt_image") from err
    with archive:
        members = _frame_members(archive)
        if not members:
            raise DataError(f"{name}: no frames ({', '.join(FRAME_EXTENSIONS)}) in this zip", reason="empty_video")
        folders = sorted({posixpath.dirname(m.filename) for m in members})
        if len(folders) > 1:
            shown = ", ".join(repr(f) for f in folders[:3])
            raise DataError(f"{name}: frames in {len(folders)} folders ({shown}, ...); zip the frames of one video",
                            reason="bad_video")
        members.sort(key=lambda m: m.filename)
        names = [os.path.splitext(posixpath.basename(m.filename))[0] for m in members]
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise DataError(f"{name}: two frames named {twice[0]!r} (their masks would overwrite each other)",
                            reason="duplicate_frame")
        _check_zip_budget(members, archive, name, max_frames=max_frames, max_file_bytes=max_file_bytes,
                          max_pixels=max_pixels or ZIP_PIXELS_PER_IMAGE_BUDGET * image_max_pixels())
        frames = [open_image(archive.read(m), where=f"{name}:{m.filename}", orient=True) for m in members]
    return frames, names


def read_upload(path: str) -> Media:
    """An uploaded file as :class:`Media`: a zip of frames, a video file (OpenCV) or an image.
    Errors name the file as uploaded (not the server's copy)."""
    name = os.path.basename(path)
    lower = name.lower()
    try:
        if lower.endswith(".zip"):
            return Media("video", *read_frames_zip(path), source=name)
        if lower.endswith(VIDEO_EXTENSIONS):
            return Media("video", *read_video(path), source=name)
        return Media("image", [load_image(path, orient=True)], [os.path.splitext(name)[0]], source=name)
    except DataError as err:
        raise DataError(str(err).replace(path, name), reason=err.reason) from err


# ------------------------------------------------------------------ regions
def parse_boxes(text: str) -> list[tuple[float, float, float, float]]:
    """Boxes typed as ``x0,y0,x1,y1`` (pixels), one per line or separated by ';'."""
    boxes = []
    for part in re.split(r"[;\n]", text or ""):
        if not part.strip():
            continue
        try:
            box = tuple(float(v) for v in part.split(","))
        except ValueError:
            box = ()
        if len(box) != 4:
            raise ValueError(f"box {part.strip()!r}: expected x0,y0,x1,y1 (four numbers, pixels)")
        boxes.append(box)
    return boxes


def painted_regions(editor: dict | None, height: int, width: int) -> list[np.ndarray]:
    """One bool (H, W) mask per editor layer with paint on it (alpha > 0), in layer order, brought
    to the image's size (nearest) if the editor's canvas differs."""
    masks = []
    for layer in (editor or {}).get("layers") or []:
        if layer is None:
            continue
        rgba = np.asarray(layer.convert("RGBA") if isinstance(layer, Image.Image) else layer)
        alpha = rgba[..., 3] if rgba.ndim == 3 and rgba.shape[2] == 4 else rgba.reshape(*rgba.shape[:2], -1).max(-1)
        if not alpha.any():
            continue
        if alpha.shape != (height, width):
            alpha = np.asarray(Image.fromarray((alpha > 0).astype(np.uint8) * 255).resize((width, height),
                                                                                          Image.NEAREST))
        masks.append(alpha > 0)
    return masks


# ------------------------------------------------------------------ answers
def seg_phrases(answer: str) -> list[str | None]:
    """Per ``[SEG]`` of ``answer``: the last ``<p>phrase</p>`` before it (what the model reads as
    that mask's expression, ``VideoLLaVASAMModel._answer_expr_positions``), else None."""
    phrases, before = [], ""
    for chunk in answer.split(SEG_TOKEN)[:-1]:
        before += chunk
        found = _PHRASE.findall(before)
        phrases.append(found[-1].strip() if found else None)
        before += SEG_TOKEN
    return phrases


def colour_of(k: int) -> tuple[int, int, int]:
    return PALETTE[k % len(PALETTE)]


def legend_html(answer: str, n_masks: int) -> str:
    """A colour swatch and a label per mask (the phrase, else '[SEG] k')."""
    if n_masks == 0:
        return "<p>No [SEG] in the answer: nothing was segmented.</p>"
    rows = []
    for k, phrase in enumerate((seg_phrases(answer) + [None] * n_masks)[:n_masks]):
        r, g, b = colour_of(k)
        label = html.escape(phrase) if phrase else f"[SEG] {k + 1}"
        rows.append(f'<li data-seg="{k}"><span style="display:inline-block;width:1em;height:1em;'
                    f'background:rgb({r},{g},{b});vertical-align:middle"></span> {k + 1}: {label}</li>')
    return '<ul style="list-style:none;padding-left:0">' + "".join(rows) + "</ul>"


@dataclass
class Result:
    """One answered turn: what the page shows."""

    question: str
    answer: str
    masks: np.ndarray  # bool (n_seg, H, W) for an image, (n_seg, T, H, W) for a video
    overlay: Image.Image | None  # image: the masks over it (enlarged if small)
    frames: list[tuple[Image.Image, str]] = field(default_factory=list)  # video: (overlay, caption) per frame
    files: list[str] = field(default_factory=list)  # mask PNGs (image) / zips of per-frame PNGs (video)
    legend: str = ""


@contextlib.contextmanager
def propagation_progress(report: Callable[[int, int], None]) -> Iterator[None]:
    """While active, predict's SAM-2 propagation bar (the tqdm of ``models.video``) also calls
    ``report(frames done, total)`` at each frame.

    Gradio's ``Progress(track_tqdm=True)`` follows every tqdm instead, and the tracker's bar
    advances between the steps of transformers' own (disabled) bar inside it, so the page showed
    the inner one past 100 % and the frames at 0. Only ``models.video``'s name is rebound, for the
    duration of one prediction (the page runs one at a time).
    """
    from .models.video import predictor as video  # the module whose tqdm draws the frames bar

    plain = video.tqdm

    class Reporting(plain):
        def update(self, n=1):
            shown = super().update(n)
            report(int(self.n), int(self.total or 0))
            return shown

    video.tqdm = Reporting
    try:
        yield
    finally:
        video.tqdm = plain


class SegmentationDemo:
    """What the page does, without the page: read an upload, ask the model, draw the result.

    Args:
        model: the exported model (``SALMAModel``).
        name: how the page names the model (e.g. its folder).
        work_dir: where mask files are written for download (default: a temporary folder removed
            by :meth:`close`).
    """

    def __init__(self, model, *, name: str = "SALMA", work_dir: str | None = None) -> None:
        self.model = model
        self.name = name
        self._tmp = None if work_dir else tempfile.TemporaryDirectory(prefix="salma_app_")
        self.work_dir = work_dir or self._tmp.name
        self._turns = 0

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()

    def describe(self) -> str:
        """The page's model line: folder, device, dtype and video settings."""
        video = self.model.config.video
        dtype = str(self.model.dtype).replace("torch.", "")
        return (f"Model `{self.name}` runs on **{self.model.device}** in **{dtype}** · video: the LLM sees "
                f"{video['num_llm_frames']} frames ({video['llm_frame_sampling']}), "
                f"propagation `{video['propagation']}`")

    def respond(self, media: Media, text: str, *, chat: bool = False, history: Sequence[tuple[str, str]] = (),
                regions: Sequence = (), max_new_tokens: int | None = None, progress=None) -> Result:
        """Answer ``text`` about ``media``: a referring expression (evaluation template), or with
        ``chat`` a question sent as typed after ``history``; ``regions`` (image only) are visual
        prompts. ``progress``: a callable (fraction, desc) told about the phases (Gradio's)."""
        text = (text or "").strip()
        if not text:
            raise ValueError("type a referring expression or a question first")
        if regions and media.kind != "image":
            raise ValueError("regions are for an image (visual prompts index an image's tiles)")
        kwargs = dict(text=text, max_new_tokens=max_new_tokens, template=not chat,
                      history=list(history) if chat else ())
        if media.kind == "image":
            if progress is not None:
                progress(0.0, desc="answering")
            out = self.model.predict(image=media.frames[0], regions=list(regions) or None, **kwargs)
        else:
            out = self._predict_video(media, kwargs, progress)
        masks = out["masks"].numpy()
        self._turns += 1
        folder = os.path.join(self.work_dir, f"turn{self._turns:04d}")
        os.makedirs(folder, exist_ok=True)
        if media.kind == "image":
            image = media.frames[0]
            overlay = paint_masks(image, masks, scale=display_scale(image.height, image.width))
            files = [save_mask(m, os.path.join(folder, f"{mask_name(k)}.png")) for k, m in enumerate(masks)]
            return Result(out["question"], out["text"], masks, overlay, files=files,
                          legend=legend_html(out["text"], len(masks)))
        frames = []
        for t, (frame, name) in enumerate(zip(media.frames, media.names, strict=True)):
            tag = " (LLM)" if t in out["llm_frames"] else ""
            frames.append((paint_masks(frame, masks[:, t], scale=display_scale(frame.height, frame.width)),
                           f"frame {name}{tag}"))
        files = [self._zip_masks(m, media.names, os.path.join(folder, mask_name(k))) for k, m in enumerate(masks)]
        return Result(out["question"], out["text"], masks, None, frames=frames, files=files,
                      legend=legend_html(out["text"], len(masks)))

    def _predict_video(self, media: Media, kwargs: dict, progress) -> dict:
        """One predict over the whole video; ``progress`` follows SAM-2's propagation frame by frame
        (:func:`propagation_progress`). A per-frame iterator of predict would be consumed here
        instead, calling ``progress((t, n_frames))`` itself."""
        if progress is None:
            return self.model.predict(video=media.frames, **kwargs)
        progress(0.0, desc="the LLM answers")
        with propagation_progress(lambda done, total: progress((done, total), desc="SAM-2 propagation",
                                                               unit="frame")):
            return self.model.predict(video=media.frames, progress=True, **kwargs)

    @staticmethod
    def _zip_masks(masks: np.ndarray, names: list[str], stem: str) -> str:
        """One PNG per frame (``<frame name>.png``, 0 / 255) of one ``[SEG]``, zipped."""
        os.makedirs(stem, exist_ok=True)
        for mask, name in zip(masks, names, strict=True):
            save_mask(mask, os.path.join(stem, f"{name}.png"))
        archive = shutil.make_archive(stem, "zip", root_dir=stem)
        shutil.rmtree(stem)
        return archive


# ------------------------------------------------------------------ the page
UPLOAD_TYPES = [".png", ".jpg", ".jpeg", ".bmp", ".webp", ".zip", *VIDEO_EXTENSIONS]
BRUSH_COLOURS = ["#ff2828", "#2878ff", "#ffc800", "#c83ce6"]


def _system_fonts(gr):
    """Gradio's default theme with system fonts: the page fetches nothing from outside the server."""
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "Consolas", "monospace"])


def build_app(demo: SegmentationDemo):
    """The Gradio page around ``demo``; the answer event is also the API route ``/segment``
    (inputs: file, regions editor, boxes, mode, text, max new tokens; the chat is kept per session)."""
    import gradio as gr

    def user_error(fn):
        """Input problems (a bad upload, a region the text does not name, ...) become a message in
        the page (and an error of the API call); the server keeps serving."""
        @functools.wraps(fn)  # Gradio reads the parameters (API names, the progress tracker) through it
        def wrapped(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except (DataError, ValueError) as err:
                raise gr.Error(str(err), print_exception=False) from err
        return wrapped

    def load(path):
        if not path:
            raise ValueError("upload an image, a video file or a .zip of frames first")
        return read_upload(path)

    def describe_media(media: Media) -> str:
        size = f"{media.frames[0].width}x{media.frames[0].height}"
        if media.kind == "image":
            return f"`{media.source}`: image, {size}"
        return f"`{media.source}`: video, {len(media.frames)} frames of {size}"

    @user_error
    def on_upload(path):
        """A new upload: the image goes to the region editor; the chat starts over."""
        if not path:
            return gr.ImageEditor(value=None, visible=False), "", [], [], None
        media = load(path)
        editor = (gr.ImageEditor(value={"background": media.frames[0], "layers": [], "composite": None}, visible=True)
                  if media.kind == "image" else gr.ImageEditor(value=None, visible=False))
        return editor, describe_media(media), [], [], ""

    @user_error
    def on_submit(path, editor, boxes, mode, text, max_new_tokens, turns, progress=gr.Progress()):
        media = load(path)
        image = media.frames[0]
        regions = painted_regions(editor, image.height, image.width) if media.kind == "image" else []
        regions += parse_boxes(boxes)
        chat = mode == MODES[1] or bool(regions)  # a question about regions is sent as typed
        history = [(t["question"], t["answer"]) for t in turns if t["chat"]]
        result = demo.respond(media, text, chat=chat, history=history, regions=regions,
                              max_new_tokens=int(max_new_tokens) if max_new_tokens else None, progress=progress)
        turns = turns + [{"question": result.question, "answer": result.answer, "chat": chat, "shown": text.strip()}]
        return (_messages(turns), result.answer, result.overlay, result.frames or None, result.legend,
                result.files or None, turns, media.kind)

    def show_result_of(kind):
        """The overlay for an image, the frame gallery for a video (a step of its own, so that the
        API route returns plain values)."""
        return gr.Image(visible=kind != "video"), gr.Gallery(visible=kind == "video")

    with gr.Blocks(title="SALMA demo", delete_cache=(600, 3600), analytics_enabled=False) as app:
        turns = gr.State([])
        kind = gr.State("image")
        gr.Markdown("## SALMA: referring segmentation\n" + demo.describe(), elem_id="model-info")
        with gr.Row():
            with gr.Column():
                media = gr.File(label="Image, video file, or .zip of frames", file_types=UPLOAD_TYPES,
                                type="filepath", elem_id="media")
                media_info = gr.Markdown(elem_id="media-info")
                editor = gr.ImageEditor(label="Regions (optional): paint one layer per region: region1, region2, ...",
                                        type="pil", image_mode="RGBA", sources=[], layers=True, format="png",
                                        transforms=[], brush=gr.Brush(colors=BRUSH_COLOURS, color_mode="fixed"),
                                        visible=False, elem_id="regions")
                boxes = gr.Textbox(label="Region boxes (optional, after the painted ones): x0,y0,x1,y1 per line",
                                   elem_id="boxes")
                mode = gr.Radio(list(MODES), value=MODES[0], label="The text is", elem_id="mode",
                                info="an expression is asked as the evaluation asks it; a question is sent as "
                                     "typed and continues the chat (regions: always a question naming region1, ...)")
                text = gr.Textbox(label="Text", placeholder="the red circle on the left", elem_id="text")
                with gr.Row():
                    submit = gr.Button("Segment", variant="primary", elem_id="submit")
                    new_chat = gr.Button("New chat", elem_id="new-chat")
                with gr.Accordion("Options", open=False):
                    max_new_tokens = gr.Slider(1, 1024, value=demo.model.config.max_new_tokens, step=1,
                                               label="Max new tokens", elem_id="max-new-tokens")
            with gr.Column():
                chatbot = gr.Chatbot(label="Conversation", height=220, elem_id="chat")
                answer = gr.Textbox(label="Answer", interactive=False, elem_id="answer")
                overlay = gr.Image(label="Overlay (one colour per [SEG])", type="pil", format="png",
                                   interactive=False, elem_id="overlay")
                gallery = gr.Gallery(label="Frames (one colour per [SEG])", format="png", columns=4,
                                     object_fit="contain", visible=False, elem_id="frames")
                legend = gr.HTML(label="Legend", elem_id="legend")
                files = gr.File(label="Masks: a PNG per [SEG] (video: a zip of per-frame PNGs)", file_count="multiple",
                                interactive=False, elem_id="masks")
        outputs = [chatbot, answer, overlay, gallery, legend, files, turns, kind]
        inputs = [media, editor, boxes, mode, text, max_new_tokens, turns]
        media.change(on_upload, [media], [editor, media_info, turns, chatbot, answer], api_name=False)
        submit.click(on_submit, inputs, outputs, api_name="segment").success(
            show_result_of, [kind], [overlay, gallery], api_name=False)
        text.submit(on_submit, inputs, outputs, api_name=False).success(
            show_result_of, [kind], [overlay, gallery], api_name=False)
        new_chat.click(lambda: ([], [], ""), None, [turns, chatbot, answer], api_name=False)
    return app


def _messages(turns: list[dict]) -> list[dict]:
    """The chat as Gradio messages, the text escaped (an answer's <p> is shown, not rendered)."""
    messages = []
    for turn in turns:
        messages.append({"role": "user", "content": html.escape(turn["shown"])})
        messages.append({"role": "assistant", "content": html.escape(turn["answer"]) or "(empty answer)"})
    return messages


def launch(demo: SegmentationDemo, *, host: str = "127.0.0.1", port: int | None = None, block: bool = True):
    """Serve ``demo`` on ``host:port`` (one prediction at a time: one model); returns (app, url).
    ``block=False`` returns while the server runs in a thread (``app.close()`` stops it)."""
    import gradio as gr

    app = build_app(demo).queue(default_concurrency_limit=1)
    _, url, _ = app.launch(server_name=host, server_port=port, prevent_thread_lock=True, show_error=True,
                           quiet=True, ssr_mode=False, theme=_system_fonts(gr), footer_links=["api"])
    print(f"SALMA demo on {url} ({demo.describe().replace('`', '').replace('**', '')})", flush=True)
    if block:
        signal.signal(signal.SIGTERM, _exit)  # a plain kill stops the page as Ctrl-C does: cleanup runs
        try:
            app.block_thread()
        finally:
            app.close()
    return app, url


def _exit(signum, frame):
    raise SystemExit(0)
