"""Shared pieces of the checkpoint converters: the mismatch error, key renaming by explicit rules,
and the final "every key accounted for" check.

A converter maps every source key through an explicit rule table (a full-match regex and its
replacement). A key that no rule matches is *unexpected*; a key the target model has that no source
key produced is *missing*; a key whose tensor has the wrong shape is *mismatched*. Any of these is an
error: nothing is silently dropped. Keys a target legitimately does not have are listed by name in
the converter's own ignore table, with the reason.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

_MAX_NAMES_IN_MESSAGE = 20

# the ``dtype`` names the loaders, converters and exports accept
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit its target model.

    Attributes:
        missing: target keys that no source key provides.
        unexpected: source keys that no mapping rule covers (or that the target does not have).
        mismatched: ``(key, source_shape, target_shape)`` for tensors of the wrong shape.
        source: what was being loaded (a path or a description), for the message.
    """

    def __init__(
        self,
        *,
        missing: Iterable[str] = (),
        unexpected: Iterable[str] = (),
        mismatched: Iterable[tuple[str, tuple[int, ...], tuple[int, ...]]] = (),
        source: str = "checkpoint",
    ) -> None:
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)
        self.mismatched = sorted(mismatched)
        self.source = source
        super().__init__(self._message())

    def _message(self) -> str:
        parts = [f"{self.source} does not match the target model:"]
        for label, names in (("missing", self.missing), ("unexpected", self.unexpected)):
            if names:
                shown = ", ".join(names[:_MAX_NAMES_IN_MESSAGE])
                more = f" ... (+{len(names) - _MAX_NAMES_IN_MESSAGE} more)" if len(names) > _MAX_NAMES_IN_MESSAGE else ""
                parts.append(f"{len(names)} {label} key(s): {shown}{more}")
        if self.mismatched:
            shown = ", ".join(f"{k} {tuple(s)} vs target {tuple(t)}" for k, s, t in self.mismatched[:_MAX_NAMES_IN_MESSAGE])
            parts.append(f"{len(self.mismatched)} shape mismatch(es): {shown}")
        return "\n  ".join(parts)


# a ``re`` template, or a function of the match returning the new key (None: the rule does not apply)
Replacement = str | Callable[[re.Match], str | None]


@dataclass(frozen=True)
class RenameRule:
    """One row of a mapping table: source keys that fully match ``pattern`` become ``replacement``
    (a ``re`` template such as ``r"blocks.\\1.layer_norm\\2"``, or a function of the match that may
    return None to decline the key)."""

    pattern: str
    replacement: Replacement

    def apply(self, key: str) -> str | None:
        match = re.fullmatch(self.pattern, key)
        if match is None:
            return None
        if callable(self.replacement):
            return self.replacement(match)
        return match.expand(self.replacement)


def rename_keys(keys: Iterable[str], rules: Iterable[RenameRule], *, source: str) -> dict[str, str]:
    """Map each key through the first rule that fully matches it.

    Returns ``{source_key: target_key}``. Raises :class:`CheckpointMismatchError` naming every key no
    rule covers, and every pair of source keys that would land on the same target key.
    """
    rules = tuple(rules)
    mapping: dict[str, str] = {}
    unmatched: list[str] = []
    for key in keys:
        for rule in rules:
            new_key = rule.apply(key)
            if new_key is not None:
                mapping[key] = new_key
                break
        else:
            unmatched.append(key)
    if unmatched:
        raise CheckpointMismatchError(unexpected=unmatched, source=source)
    seen: dict[str, str] = {}
    for key, new_key in mapping.items():
        if new_key in seen:
            raise ValueError(f"{source}: keys {seen[new_key]!r} and {key!r} both map to {new_key!r}")
        seen[new_key] = key
    return mapping


def matches_any(key: str, patterns: Iterable[str]) -> bool:
    """Whether ``key`` fully matches one of the regexes in ``patterns``."""
    return any(re.fullmatch(p, key) for p in patterns)


def check_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    *,
    source: str,
) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``state_dict`` has exactly the keys of ``expected``
    (a model's ``state_dict()``) with the same shapes."""
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        (k, tuple(v.shape), tuple(expected[k].shape))
        for k, v in state_dict.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(missing=missing, unexpected=unexpected, mismatched=mismatched, source=source)


def safetensors_weight_map(folder: str | Path) -> dict[str, str]:
    """``{tensor name: file}`` of a safetensors checkpoint folder: the shards listed by
    ``model.safetensors.index.json`` (each shard's header checked against the index), or the single
    ``model.safetensors``. Reads headers only."""
    folder = Path(folder)
    index_path = folder / "model.safetensors.index.json"
    if index_path.is_file():
        weight_map = dict(json.loads(index_path.read_text(encoding="utf-8"))["weight_map"])
        for shard in sorted(set(weight_map.values())):
            with safe_open(str(folder / shard), framework="pt") as f:
                stored = set(f.keys())
            listed = {k for k, v in weight_map.items() if v == shard}
            if stored != listed:
                raise CheckpointMismatchError(
                    missing=listed - stored,
                    unexpected=stored - listed,
                    source=f"shard {folder / shard} against {index_path.name}",
                )
        return weight_map
    single = folder / "model.safetensors"
    if single.is_file():
        with safe_open(str(single), framework="pt") as f:
            return dict.fromkeys(f.keys(), single.name)
    raise FileNotFoundError(f"{folder}: neither model.safetensors.index.json nor model.safetensors found")


def load_safetensors_folder(folder: str | Path, *, keys: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """Read the tensors of a safetensors checkpoint folder (see :func:`safetensors_weight_map`):
    every one, or only ``keys`` (the other tensors are never read)."""
    folder = Path(folder)
    weight_map = safetensors_weight_map(folder)
    if keys is not None:
        keys = list(keys)
        absent = [k for k in keys if k not in weight_map]
        if absent:
            raise CheckpointMismatchError(missing=absent, source=str(folder))
        weight_map = {k: weight_map[k] for k in keys}
    state_dict: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        with safe_open(str(folder / shard), framework="pt") as f:
            for key in (k for k, v in weight_map.items() if v == shard):
                state_dict[key] = f.get_tensor(key)
    return state_dict


def save_sharded_safetensors(state_dict: Mapping[str, torch.Tensor], folder: str | Path, *, num_shards: int) -> None:
    """Write ``state_dict`` as ``model-0000i-of-0000n.safetensors`` shards plus
    ``model.safetensors.index.json`` (the layout ``load_safetensors_folder`` reads)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    keys = sorted(state_dict)
    if not 1 <= num_shards <= len(keys):
        raise ValueError(f"num_shards must be in [1, {len(keys)}], got {num_shards}")
    weight_map: dict[str, str] = {}
    for i in range(num_shards):
        name = f"model-{i + 1:05d}-of-{num_shards:05d}.safetensors"
        shard = {k: state_dict[k].contiguous() for k in keys[i::num_shards]}
        save_file(shard, str(folder / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
    total_size = sum(t.numel() * t.element_size() for t in state_dict.values())
    index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")


def torch_load_state_dict(path: str | Path, *, key: str | None) -> dict[str, torch.Tensor]:
    """``torch.load`` a checkpoint on CPU with ``weights_only=True``; return ``obj[key]`` (or ``obj``
    itself when ``key`` is None)."""
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            found = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
            raise ValueError(f"{path}: expected a dict with a {key!r} entry, found {found}")
        obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: not a state dict of tensors")
    return dict(obj)
