"""A disk cache of encoder features, keyed by what they depend on: the encoder's identity and the input's content.

Encoders are frozen, so a connector trained for many epochs needs each item encoded once. Entries are
safetensors files (no pickle) under ``<anymoda home>/native-features/<2 hex>/<sha256>.safetensors``,
written to a temporary name and renamed, so a reader never sees half an entry. An entry that does not
read back (truncated, corrupt, from another encoder) is deleted and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from orchestrator.config import current_settings
from orchestrator.errors import InvalidInputError
from orchestrator.storage.atomic_files import partial_path
from orchestrator.storage.media import AudioClip, TimeSeries

from .encoders import FeatureEncoder, MediaFeatures

logger = logging.getLogger(__name__)

FORMAT_VERSION = "1"  # part of every key: a change in what is stored invalidates old entries


def canonical_bytes(value: Any) -> bytes:
    """The bytes that decide an encoder's output for ``value``: equal inputs give equal bytes.

    A header names the kind, shape and rate so that, say, the same samples at another sample rate
    or the same pixels in another shape never share a key.
    """
    from PIL import Image

    if isinstance(value, Image.Image):
        image = value if value.mode in ("RGB", "RGBA", "L", "LA", "I", "F", "I;16") else value.convert("RGBA")
        return f"image:{image.mode}:{image.width}x{image.height}\n".encode() + image.tobytes()
    if isinstance(value, AudioClip):
        samples = np.ascontiguousarray(value.samples, dtype="<f4")
        return f"audio:{value.sample_rate}:{samples.shape}\n".encode() + samples.tobytes()
    if isinstance(value, (str, Path)):
        path = Path(value)
        if not path.is_file():
            raise InvalidInputError(f"feature cache: {str(path)!r} is not a file")
        return f"file:{path.suffix.lower()}\n".encode() + path.read_bytes()
    if isinstance(value, TimeSeries):
        values = value.values
    elif isinstance(value, torch.Tensor):
        values = value.detach().cpu().numpy()
    else:
        try:
            values = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidInputError(f"feature cache: cannot key a value of type {type(value).__name__}") from None
    values = np.asarray(values, dtype="<f8")
    values = np.where(np.isnan(values), np.nan, values)  # one bit pattern for every NaN
    return f"series:{values.shape}\n".encode() + np.ascontiguousarray(values).tobytes()


class FeatureCache:
    """Features on disk by (encoder identity, input content); counts hits, misses and recomputed corrupt entries."""

    def __init__(self, root: str | os.PathLike[str] | None = None):
        self.root = Path(root).expanduser() if root is not None else current_settings().home / "native-features"
        self.hits = 0
        self.misses = 0
        self.corrupt = 0

    def key(self, encoder: FeatureEncoder, value: Any) -> str:
        digest = hashlib.sha256()
        digest.update(f"anymoda-native-features/{FORMAT_VERSION}\n{encoder.identity}\n".encode())
        digest.update(canonical_bytes(value))
        return digest.hexdigest()

    def path_for(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def load(self, key: str, identity: str) -> MediaFeatures | None:
        """The stored features, or None when absent or unreadable (an unreadable entry is removed)."""
        from safetensors import safe_open

        path = self.path_for(key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as entry:
                metadata = entry.metadata() or {}
                if metadata.get("identity") != identity or metadata.get("version") != FORMAT_VERSION:
                    raise ValueError(f"written by {metadata.get('identity')!r} (format {metadata.get('version')!r})")
                features = entry.get_tensor("features")
                mask = entry.get_tensor("mask") if "mask" in entry.keys() else None
            labels = json.loads(metadata["token_texts"]) if "token_texts" in metadata else None
            return MediaFeatures(metadata["modality"], features, mask, metadata.get("prefix_text", ""), labels,
                                 metadata.get("token_texts_after") == "1")
        except Exception as exc:  # truncated file, bad header, wrong shapes: all mean "compute it again"
            logger.warning("feature cache entry %s is unreadable (%s); recomputing it", path, exc)
            self.corrupt += 1
            path.unlink(missing_ok=True)
            return None

    def store(self, key: str, identity: str, features: MediaFeatures) -> Path:
        from safetensors.torch import save_file

        path = self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"features": features.features.contiguous()}
        if features.mask is not None:
            tensors["mask"] = features.mask.contiguous()
        metadata = {"identity": identity, "modality": features.modality, "prefix_text": features.prefix_text,
                    "version": FORMAT_VERSION}
        if features.token_texts is not None:
            metadata["token_texts"] = json.dumps(list(features.token_texts))
            metadata["token_texts_after"] = "1" if features.token_texts_after else "0"
        partial = partial_path(path)
        try:
            save_file(tensors, str(partial), metadata=metadata)
            os.replace(partial, path)  # atomic: readers see the old entry or the whole new one
        finally:
            partial.unlink(missing_ok=True)
        return path


def encode_cached(encoder: FeatureEncoder, value: Any, cache: FeatureCache | None) -> MediaFeatures:
    """``encoder.encode(value)``, read from ``cache`` when it has it and written there when not."""
    if cache is None:
        return encoder.encode(value)
    key = cache.key(encoder, value)
    found = cache.load(key, encoder.identity)
    if found is not None:
        cache.hits += 1
        return found
    cache.misses += 1
    features = encoder.encode(value)
    cache.store(key, encoder.identity, features)
    return features


def encode_all(encoder: FeatureEncoder, values: Iterable[Any], cache: FeatureCache | None = None, *,
               progress: bool = True, description: str | None = None) -> list[MediaFeatures]:
    """Encode many values (through the cache), with a progress bar."""
    from tqdm.auto import tqdm

    items = list(values)
    bar = tqdm(items, desc=description or f"encoding with {encoder.identity}", unit="item", disable=not progress)
    return [encode_cached(encoder, value, cache) for value in bar]
