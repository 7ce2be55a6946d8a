"""What an evaluation leaves on disk: per-item results (resumable), the submission zip, summaries.

* ``<run_dir>/results-rank<r>.jsonl``: one JSON line per finished item (image or video), written by
  rank r with a single ``write`` + ``fsync``. Each record carries the ``fingerprint`` of what it was
  computed from (the model: checkpoint content hash and model config; the item's inputs:
  annotation records and file sizes / mtimes). A restart reads every rank's file (any world
  size) and reuses a record only if its fingerprint is the current one; otherwise the item is
  predicted again and the new record appended (the runner counts these as ``recomputed``). A
  line cut short by a crash (no trailing newline) is not a result: it is reported and dropped,
  and the item is predicted again.
* ``<run_dir>/run_meta.json``: what produced the results (dataset config, options, checkpoint
  path); a restart with different settings fails instead of mixing results.
* ``submission.zip``: ``Annotations/<vid>/<exp_id>/<frame>.png`` (0 / 255, frame size) for
  benchmarks without public GT (Ref-YouTube-VOS, MeViS valid).
* ``summary.json`` / ``summary.md`` in the work dir: every run's numbers (merged with earlier runs
  of the same work dir).

All whole-file writes go through a temporary file and ``os.replace`` (atomic on POSIX). A rerun
parses every file it will read (:func:`check_work_dir`) before any work: a corrupt one is an error
naming it. Ids that become zip entries or file names (video, expression, frame) must be plain
names (``datasets.io.safe_name``).
"""
from __future__ import annotations

import glob
import io
import json
import math
import os
import zipfile
from typing import Any, Iterable

import numpy as np
from mmengine.logging import MMLogger
from PIL import Image

from ..datasets.io import read_json, safe_name
from ..datasets.masks import decode_rle

_RESULTS_GLOB = "results-rank*.jsonl"


def atomic_write_bytes(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _jsonable(obj: Any) -> Any:
    """JSON round trip (tuples -> lists, ConfigDict -> dict) so stored and fresh metas compare equal."""
    return json.loads(json.dumps(obj, sort_keys=True, default=lambda o: o.to_dict() if hasattr(o, "to_dict") else str(o)))


class ResultStore:
    """Finished items of one run (one dataset split): append-only JSON lines, one file per rank.

    Args:
        run_dir: the run's folder (created).
        rank: this process's rank; it appends to ``results-rank<rank>.jsonl`` only.
    """

    def __init__(self, run_dir: str, rank: int = 0) -> None:
        os.makedirs(run_dir, exist_ok=True)
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, f"results-rank{rank}.jsonl")

    def load(self) -> dict[str, list[dict]]:
        """{item key: its records} from every rank's file, one per fingerprint (an item recomputed
        for another model or other inputs has several); an unterminated last line is dropped."""
        records: dict[str, list[dict]] = {}
        for path in sorted(glob.glob(os.path.join(self.run_dir, _RESULTS_GLOB))):
            with open(path, "rb") as f:
                data = f.read()
            lines = data.split(b"\n")
            if lines[-1]:
                MMLogger.get_current_instance().warning(
                    f"{path}: last line is incomplete ({len(lines[-1])} bytes, an interrupted write); "
                    f"that item will be predicted again")
            for n, line in enumerate(lines[:-1], start=1):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{n}: not a JSON record ({err}); the results file is corrupt") from err
                if not isinstance(record, dict) or "key" not in record:
                    raise ValueError(f"{path}:{n}: a result record needs a 'key'; the results file is corrupt")
                versions = records.setdefault(record["key"], [])
                same = [r for r in versions if r.get("fingerprint") == record.get("fingerprint")]
                if any(r != record for r in same):
                    raise ValueError(f"{path}:{n}: item {record['key']!r} already recorded with the same fingerprint "
                                     f"and different content")
                if not same:
                    versions.append(record)
        return records

    def append(self, record: dict) -> None:
        """Append one finished item (``record['key']`` set) durably, as a single write."""
        if "key" not in record:
            raise ValueError("a result record needs a 'key'")
        self._drop_incomplete_tail()
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"{self.path}: short write ({written} of {len(line)} bytes)")
            os.fsync(fd)
        finally:
            os.close(fd)

    def _drop_incomplete_tail(self) -> None:
        """Cut an interrupted last line off this rank's file so the next record starts a line."""
        if not os.path.exists(self.path) or os.path.getsize(self.path) == 0:
            return
        with open(self.path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) == b"\n":
                return
            f.seek(0)
            keep = f.read().rfind(b"\n") + 1
            f.truncate(keep)
        MMLogger.get_current_instance().warning(f"{self.path}: removed an incomplete last line")


def check_run_meta(run_dir: str, meta: dict) -> None:
    """Write ``run_meta.json``, or check that an earlier run of this folder used the same settings."""
    path = os.path.join(run_dir, "run_meta.json")
    meta = _jsonable(meta)
    if not os.path.exists(path):
        atomic_write_text(path, json.dumps(meta, indent=2, sort_keys=True))
        return
    old = read_json(path, expect=dict, what="(run settings)")
    if old != meta:
        changed = sorted(k for k in set(old) | set(meta) if old.get(k) != meta.get(k))
        raise ValueError(
            f"{path}: results in {run_dir} were produced with different settings (changed: {changed}); "
            f"use another --work-dir or remove that folder")


def check_work_dir(work_dir: str, run_names: Iterable[str]) -> None:
    """Parse what a rerun in ``work_dir`` will read (``summary.json``, each run's ``run_meta.json``
    and results files), so that a corrupt file stops the run before the model is built, naming the
    file, instead of after hours of prediction."""
    summary = os.path.join(work_dir, "summary.json")
    if os.path.exists(summary):
        read_json(summary, expect=dict, what="(run name -> results)")
    for name in run_names:
        run_dir = os.path.join(work_dir, name)
        meta = os.path.join(run_dir, "run_meta.json")
        if os.path.exists(meta):
            read_json(meta, expect=dict, what="(run settings)")
        if glob.glob(os.path.join(run_dir, _RESULTS_GLOB)):
            ResultStore(run_dir).load()


# ------------------------------------------------------------------ submission
def _png(mask: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def frame_stem(name: str) -> str:
    """Frame name without its image extension ('00005.jpg' -> '00005')."""
    stem, ext = os.path.splitext(name)
    return stem if ext.lower() in (".jpg", ".jpeg", ".png") else name


def write_submission_zip(path: str, video_records: Iterable[dict]) -> dict[str, int]:
    """``Annotations/<vid>/<exp_id>/<frame>.png`` for every frame of every expression.

    Masks are 0 / 255 greyscale PNGs of the frame size; an expression without ``[SEG]`` gets
    empty masks (it is part of the benchmark). An id that is not a plain name ('../x', 'a/b') is
    a ValueError and no zip is written. Returns counts of videos, expressions, PNGs.
    """
    tmp = f"{path}.tmp{os.getpid()}"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    counts = {"videos": 0, "expressions": 0, "pngs": 0}
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for rec in video_records:
                height, width = rec["size"]
                vid = safe_name(rec["video_id"], what="video_id", where=f"{path}: results")
                stems = [frame_stem(safe_name(n, what="frame", where=f"{path}: video {vid}"))
                         for n in rec["frame_names"]]
                counts["videos"] += 1
                for exp in rec["expressions"]:
                    exp_id = safe_name(exp["exp_id"], what="exp_id", where=f"{path}: video {vid}")
                    counts["expressions"] += 1
                    rles = exp["masks"] or [None] * len(stems)
                    if len(rles) != len(stems):
                        raise ValueError(f"video {vid} exp {exp_id}: {len(rles)} masks for {len(stems)} frames")
                    for stem, rle in zip(stems, rles):
                        mask = decode_rle(rle, height, width, source=f"results: video {vid} exp {exp_id}")
                        zf.writestr(f"Annotations/{vid}/{exp_id}/{stem}.png", _png(mask))
                        counts["pngs"] += 1
    except BaseException:
        if os.path.exists(tmp):  # no partial zip is left behind
            os.remove(tmp)
        raise
    os.replace(tmp, path)
    return counts


# ------------------------------------------------------------------ summaries
def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.2f}"
    return str(value)


def _label(name: str, entry: dict) -> str:
    """Run name, flagged when only the first items were evaluated (``--max-items``)."""
    n, total = entry.get("n_items"), entry.get("n_dataset_items")
    return f"{name} (first {n} of {total} items)" if n is not None and total is not None and n < total else name



def _subset_table(entries: dict, subsets: tuple[str, ...], extra: tuple[str, ...]) -> list[str]:
    """Markdown rows of per-subset video metrics: J&F, J, F, the ``extra`` keys, expressions."""
    keys = ("J&F", "J", "F", *extra)
    lines = ["| dataset | subset | " + " | ".join(keys) + " | expressions |", "|---" * (len(keys) + 3) + "|"]
    for name, e in entries.items():
        for subset in subsets:
            m = e["metrics"][subset]
            lines.append(f"| {name} | {subset} | " + " | ".join(_fmt(m[k]) for k in keys) + f" | {m['n']} |")
    return lines + [""]

def summary_markdown(summary: dict[str, dict]) -> str:
    """Markdown tables of a ``{run name: entry}`` summary (entry: ``task``, ``protocol``, ``metrics``)."""
    summary = {_label(name, entry): entry for name, entry in summary.items()}
    res = {k: v for k, v in summary.items() if v["task"] == "res"}
    vos = {k: v for k, v in summary.items() if v["task"] == "ref_vos" and "J" in v["metrics"]}
    revos = {k: v for k, v in summary.items() if v["task"] == "ref_vos" and "referring" in v["metrics"]}
    refsav = {k: v for k, v in summary.items() if v["task"] == "ref_vos" and "long" in v["metrics"]}
    subs = {k: v for k, v in summary.items() if v["task"] == "ref_vos" and "submission" in v}
    lines = ["# SALMA evaluation", ""]
    if res:
        lines += ["## Referring expression segmentation (%)", "",
                  "Strict: a sentence without `[SEG]` is an empty prediction. Lenient (Sa2VA's evaluator): "
                  "such sentences are skipped, which inflates the numbers.", "",
                  "| dataset | cIoU | gIoU | cIoU (lenient) | gIoU (lenient) | sentences | no [SEG] |",
                  "|---|---|---|---|---|---|---|"]
        for name, e in res.items():
            m = e["metrics"]
            lines.append(f"| {name} | {_fmt(m['cIoU'])} | {_fmt(m['gIoU'])} | {_fmt(m.get('cIoU_lenient', '-'))} | "
                         f"{_fmt(m.get('gIoU_lenient', '-'))} | {m['n_sentences']} | {m['n_no_seg']} |")
        lines.append("")
    if vos:
        lines += ["## Referring video object segmentation (%)", "",
                  "Per expression J and F averaged over all frames; means over expressions.", "",
                  "| dataset | J&F | J | F | expressions | no [SEG] |", "|---|---|---|---|---|---|"]
        for name, e in vos.items():
            m = e["metrics"]
            lines.append(f"| {name} | {_fmt(m['J&F'])} | {_fmt(m['J'])} | {_fmt(m['F'])} | {m['n']} | {m['n_no_seg']} |")
        lines.append("")
    if revos:
        lines += ["## ReVOS (%)", ""] + _subset_table(revos, ("referring", "reasoning", "overall"), ("A", "R"))
    if refsav:
        lines += ["## Ref-SAV (%)", "", "Long (type 0) and short (type 1) expressions; overall = their mean.", ""]
        lines += _subset_table(refsav, ("long", "short", "overall"), ("A",))
    attention = {k: v for k, v in res.items() if "n_attention" in v["metrics"]}
    if attention:
        lines += ["## Where CMA's output lands (%, --attention-stats)", "",
                  "Share of the norm CMA adds to the image features on the referred object, on objects "
                  "annotated as distractors and on the other objects; the area shares are what an output "
                  "spread evenly would give. Mean over sentences with a CMA decode.", "",
                  "| dataset | target | distractor | other objects | target area | distractor area | sentences |",
                  "|---|---|---|---|---|---|---|"]
        for name, e in attention.items():
            m = e["metrics"]
            cells = [_fmt(m.get(f"attn_{k}", "-")) for k in ("target", "distractor", "other", "target_area",
                                                             "distractor_area")]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {m['n_attention']} |")
        lines.append("")
    if subs:
        lines += ["## Submissions (no public GT)", "", "| dataset | zip | videos | expressions | no [SEG] |",
                  "|---|---|---|---|---|"]
        for name, e in subs.items():
            m = e["metrics"]
            lines.append(f"| {name} | {e['submission']} | {m['n_videos']} | {m['n_expressions']} | {m['n_no_seg']} |")
        lines.append("")
    return "\n".join(lines)


def write_summary(work_dir: str, entries: dict[str, dict]) -> dict[str, dict]:
    """Merge ``entries`` into ``<work_dir>/summary.json`` and rewrite ``summary.md``; returns the whole summary."""
    path = os.path.join(work_dir, "summary.json")
    summary: dict[str, dict] = {}
    if os.path.exists(path):
        summary = read_json(path, expect=dict, what="(run name -> results)")
    summary.update(_jsonable(entries))
    atomic_write_text(path, json.dumps(summary, indent=2, sort_keys=True))
    atomic_write_text(os.path.join(work_dir, "summary.md"), summary_markdown(summary))
    return summary
