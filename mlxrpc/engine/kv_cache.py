"""KV-cache layouts for batched decoding: quantized KV, and what a token costs.

mlx-lm 0.32's ``BatchGenerator`` batches ``KVCache`` and ``RotatingKVCache``
(through ``BatchKVCache`` / ``BatchRotatingKVCache``) but has no batched
quantized cache: ``QuantizedKVCache`` has no ``merge``, so a quantized cache
cannot join a batch. ``BatchQuantizedKVCache`` fills that gap: the batch's
keys and values are stored as ``mx.quantize`` triples (packed, scales,
biases) with the same left-padding bookkeeping as ``BatchKVCache``; it carries
``bits``/``group_size``, which makes mlx-lm's attention take its quantized
path (``quantized_matmul``). A sequence leaving the batch comes out as a
``SequenceQuantizedKVCache`` (quantized at rest in the prefix cache), which
merges back into a batch without a dequantize/requantize round trip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlx.core as mx
from mlx.utils import tree_map
from mlx_lm.models.cache import (
    BatchKVCache,
    KVCache,
    QuantizedKVCache,
    RotatingKVCache,
    dynamic_roll,
    make_prompt_cache,
)

Triple = tuple[mx.array, mx.array, mx.array]

QUANT_GROUP_SIZES = (32, 64, 128)


@dataclass(frozen=True)
class KVLayout:
    """How one model's KV cache is stored: quantized (bits/group), rotating (max_size), or plain."""

    bits: int | None = None
    group_size: int = 64
    max_size: int | None = None

    def make_cache(self, model: Any) -> list[Any] | None:
        """A fresh per-sequence cache, or None for mlx-lm's default.

        The model's own cache with each full-attention ``KVCache`` replaced;
        its sliding-window and recurrent layers keep theirs. (mlx-lm's
        ``make_prompt_cache(model, max_kv_size)`` ignores the size for the
        many models that define ``make_cache``, llama and qwen3 among them.)
        """
        if self.bits is None and self.max_size is None:
            return None
        if self.bits is not None:
            def replace() -> Any:
                return SequenceQuantizedKVCache(self.group_size, self.bits)
        else:
            def replace() -> Any:
                return RotatingKVCache(max_size=self.max_size, keep=4)  # mlx-lm's generate keeps 4 too
        return [replace() if type(c) is KVCache else c for c in make_prompt_cache(model)]


class SequenceQuantizedKVCache(QuantizedKVCache):
    """mlx-lm's single-sequence quantized cache, made mergeable into a batch."""

    @classmethod
    def merge(cls, caches: list[QuantizedKVCache]) -> BatchQuantizedKVCache:
        return BatchQuantizedKVCache.merge(caches)

    @property
    def nbytes(self) -> int:
        # mlx-lm's raises on an empty cache (one waiting in the generator's queue).
        return 0 if self.keys is None else super().nbytes


def _slice(t: Triple, start: int, stop: int) -> Triple:
    return tuple(x[..., start:stop, :] for x in t)  # type: ignore[return-value]


class BatchQuantizedKVCache(BatchKVCache):
    """``BatchKVCache`` with quantized storage (see the module docstring)."""

    def __init__(self, left_padding: list[int], group_size: int = 64, bits: int = 8) -> None:
        super().__init__(left_padding)
        self.group_size = group_size
        self.bits = bits

    def _alloc(self, shape: tuple[int, int, int], dim: int, dtype: mx.Dtype) -> Triple:
        per_int = 32 // self.bits
        groups = dim // self.group_size
        return (mx.zeros((*shape, dim // per_int), dtype=mx.uint32),
                mx.zeros((*shape, groups), dtype=dtype), mx.zeros((*shape, groups), dtype=dtype))

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[Triple, Triple]:
        prev, n = self._idx, keys.shape[2]
        if self.keys is None or prev + n > self.keys[0].shape[2]:
            B, H = keys.shape[:2]
            shape = (B, H, (self.step + n - 1) // self.step * self.step)
            new_k = self._alloc(shape, keys.shape[3], keys.dtype)
            new_v = self._alloc(shape, values.shape[3], values.dtype)
            if self.keys is None:
                self.keys, self.values = new_k, new_v
            else:
                old_k, old_v = _slice(self.keys, 0, prev), _slice(self.values, 0, prev)
                self.keys = tuple(mx.concatenate([a, b], axis=2) for a, b in zip(old_k, new_k, strict=True))
                self.values = tuple(mx.concatenate([a, b], axis=2) for a, b in zip(old_v, new_v, strict=True))
        self.offset = self.offset + n
        self._idx += n
        for store, new in ((self.keys, keys), (self.values, values)):
            for part, q in zip(store, mx.quantize(new, group_size=self.group_size, bits=self.bits), strict=True):
                part[..., prev:self._idx, :] = q
        return self.keys_and_values()

    def keys_and_values(self) -> tuple[Triple, Triple]:
        return _slice(self.keys, 0, self._idx), _slice(self.values, 0, self._idx)

    def finalize(self) -> None:
        if self._right_padding is not None:
            padding = self._right_padding[:, None]
            self.keys = tuple(dynamic_roll(x, padding, axis=2) for x in self.keys)
            self.values = tuple(dynamic_roll(x, padding, axis=2) for x in self.values)
            self.offset = self.offset - self._right_padding
            self.left_padding += self._right_padding
            self._right_padding = None

    @property
    def state(self) -> tuple[Any, ...]:
        return self.keys, self.values, self.offset, self.left_padding, self._idx

    @state.setter
    def state(self, v: tuple[Any, ...]) -> None:
        self.keys, self.values, self.offset, self.left_padding, self._idx = v

    def filter(self, batch_indices: Any) -> None:
        if self.keys is not None:
            self.keys = tuple(x[batch_indices] for x in self.keys)
            self.values = tuple(x[batch_indices] for x in self.values)
        self.offset = self.offset[batch_indices]
        self.left_padding = self.left_padding[batch_indices]
        shift = min(self.left_padding.tolist())
        if shift > 0:
            if self.keys is not None:
                self.keys = _slice(self.keys, shift, self.keys[0].shape[2])
                self.values = _slice(self.values, shift, self.values[0].shape[2])
            self._idx -= shift
            self.left_padding -= shift

    def extend(self, other: BatchQuantizedKVCache) -> None:
        if self.keys is None and other.keys is None:
            self.left_padding = mx.concatenate([self.left_padding, other.left_padding])
            self.offset = mx.concatenate([self.offset, other.offset])
            return
        max_idx = max(self._idx, other._idx)
        template = self if self.keys is not None else other
        max_size = max(c.keys[0].shape[2] for c in (self, other) if c.keys is not None)

        def pad(c: BatchQuantizedKVCache) -> tuple[Triple, Triple, mx.array, mx.array]:
            left = max_idx - c._idx
            if c.keys is None:
                B = c.offset.shape[0]
                k = tuple(mx.zeros((B, *x.shape[1:2], 0, x.shape[3]), dtype=x.dtype) for x in template.keys)
                v = tuple(mx.zeros((B, *x.shape[1:2], 0, x.shape[3]), dtype=x.dtype) for x in template.values)
            else:
                k, v = c.keys, c.values
            right = max_size - k[0].shape[2] - left
            if right < 0:
                k, v = _slice(k, 0, k[0].shape[2] + right), _slice(v, 0, v[0].shape[2] + right)
                right = 0
            if left or right:
                widths = [(0, 0), (0, 0), (left, right), (0, 0)]
                k, v = tree_map(lambda x: mx.pad(x, widths), (k, v))
            return k, v, c.offset, c.left_padding + left

        (k1, v1, o1, p1), (k2, v2, o2, p2) = pad(self), pad(other)
        self.keys = tuple(mx.concatenate([a, b]) for a, b in zip(k1, k2, strict=True))
        self.values = tuple(mx.concatenate([a, b]) for a, b in zip(v1, v2, strict=True))
        self.offset = mx.concatenate([o1, o2])
        self.left_padding = mx.concatenate([p1, p2])
        self._idx = max_idx

    def extract(self, idx: int) -> SequenceQuantizedKVCache:
        cache = SequenceQuantizedKVCache(self.group_size, self.bits)
        mx.eval(self.left_padding)
        padding = self.left_padding.tolist()[idx]
        cache.keys = tuple(mx.contiguous(x[idx:idx + 1, :, padding:self._idx]) for x in self.keys)
        cache.values = tuple(mx.contiguous(x[idx:idx + 1, :, padding:self._idx]) for x in self.values)
        cache.offset = self._idx - padding
        return cache

    @classmethod
    def merge(cls, caches: list[QuantizedKVCache]) -> BatchQuantizedKVCache:
        first = caches[0]
        lengths = [c.offset if c.keys is not None else 0 for c in caches]
        longest = max(lengths)
        batch = cls([longest - n for n in lengths], first.group_size, first.bits)
        if longest == 0:
            return batch
        ref = next(c for c in caches if c.keys is not None)

        def stack(parts: list[Triple | None], like: Triple) -> Triple:
            out = []
            for j, x in enumerate(like):
                buf = mx.zeros((len(caches), x.shape[1], longest, x.shape[3]), dtype=x.dtype)
                for i, (part, n) in enumerate(zip(parts, lengths, strict=True)):
                    if part is not None and n:
                        buf[i:i + 1, :, longest - n:] = part[j][..., :n, :]
                out.append(buf)
            return tuple(out)  # type: ignore[return-value]

        batch.keys = stack([c.keys for c in caches], ref.keys)
        batch.values = stack([c.values for c in caches], ref.values)
        batch.offset += longest
        batch._idx = longest
        return batch

    @property
    def nbytes(self) -> int:
        if self.keys is None:
            return 0
        return sum(x.nbytes for x in (*self.keys, *self.values))


def _shape(config: dict[str, Any]) -> tuple[int, int, int]:
    """(layers, kv heads, head dim) from a model's config (text_config for multimodal ones)."""
    cfg = {**config.get("text_config", {}), **config}
    layers = int(cfg.get("num_hidden_layers") or cfg.get("n_layers") or 0)
    heads = int(cfg.get("num_attention_heads") or cfg.get("n_heads") or 1)
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or (int(cfg.get("hidden_size") or 0) // heads))
    return layers, kv_heads, head_dim


def _activation_bytes(model: Any) -> int:
    """Bytes of the model's float dtype (its KV dtype): the first floating parameter's."""
    from mlx.utils import tree_flatten

    for _, p in tree_flatten(model.parameters()):
        if mx.issubdtype(p.dtype, mx.floating):
            return p.dtype.size
    return 2


def check_layout(model: Any, config: dict[str, Any], layout: KVLayout) -> int:
    """Checks the layout fits the model; returns its KV bytes per token (ValueError if not)."""
    _, _, head_dim = _shape(config)
    if layout.bits is not None and head_dim % layout.group_size:
        raise ValueError(f"--kv-group-size {layout.group_size} does not divide the head dimension {head_dim}")
    return kv_bytes_per_token(config, layout, _activation_bytes(model))


def kv_bytes_per_token(config: dict[str, Any], layout: KVLayout, dtype_bytes: int = 2) -> int:
    """KV bytes one token of one sequence takes: layers × kv heads × head dim × 2 (K and V) × element size.

    Quantized storage costs ``bits/8`` per element plus a scale and a bias per
    group. For models with sliding-window or recurrent layers it is an upper bound.
    """
    layers, kv_heads, head_dim = _shape(config)
    elements = layers * kv_heads * head_dim * 2
    if layout.bits is None:
        return elements * dtype_bytes
    return elements * layout.bits // 8 + elements // layout.group_size * 2 * dtype_bytes
