"""The prefix cache's disk tier (--prompt-cache-dir): entries that survive a restart.

Each entry is one safetensors file written with mlx-lm's ``save_prompt_cache``
(the per-layer cache states) whose metadata carries the model's identity and
the entry's tokens. Files live under a folder named by the model identity — a
hash of its config, weight files (names, sizes, modification times), adapter
and KV layout — so a changed model never matches an old entry, and the
identity is checked again in each file. At start only the headers are read
(lazily, on the first lookup); an entry's arrays are loaded when a prompt
shares a longer prefix with it than the memory cache offers. A corrupt or
foreign file is skipped with a log line. The folder is bounded by bytes,
least recently used files first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlx_lm.models.cache import QuantizedKVCache, load_prompt_cache, save_prompt_cache

from .kv_cache import KVLayout, SequenceQuantizedKVCache

log = logging.getLogger(__name__)

FORMAT = "mlxrpc-prompt-cache-1"
# Shorter entries are cheaper to prefill again than to write and read.
MIN_TOKENS = 64


def model_identity(path: Path, adapter_path: str | None, layout: KVLayout) -> str:
    """A hash that changes whenever the weights, config, adapter or KV layout do."""
    h = hashlib.sha256(FORMAT.encode())
    h.update((path / "config.json").read_bytes())
    folders = [path] + ([Path(adapter_path).expanduser()] if adapter_path else [])
    for folder in folders:
        for f in sorted(folder.glob("*.safetensors")):
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    h.update(repr(layout).encode())
    return h.hexdigest()


@dataclass
class _Entry:
    tokens: tuple[int, ...]
    path: Path
    nbytes: int


def _header(path: Path) -> dict[str, Any]:
    """A safetensors file's metadata, without reading its arrays."""
    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        if size > 64 * 1024 * 1024:
            raise ValueError("header too large")
        return json.loads(f.read(size)).get("__metadata__", {})


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens two sequences share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class DiskPromptCache:
    """One model's entries on disk (engine thread only)."""

    def __init__(self, root: Path, identity: str, max_bytes: int) -> None:
        self.folder = root / identity[:32]
        self.identity = identity
        self.max_bytes = max_bytes
        self._entries: dict[str, _Entry] | None = None  # read on first use

    def _index(self) -> dict[str, _Entry]:
        if self._entries is None:
            self._entries = {}
            for path in sorted(self.folder.glob("*.safetensors")) if self.folder.is_dir() else []:
                try:
                    meta = _header(path)
                    if meta.get("0.format") != FORMAT or meta.get("0.model") != self.identity:
                        log.warning("prompt cache: skipping %s: written for another model or format", path)
                        continue
                    tokens = tuple(int(t) for t in meta["0.tokens"].split(","))
                except (OSError, ValueError, KeyError, struct.error) as exc:
                    log.warning("prompt cache: skipping unreadable %s: %s", path, exc)
                    continue
                self._entries[path.stem] = _Entry(tokens, path, path.stat().st_size)
        return self._entries

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self._index().values())

    def best(self, prompt: list[int], trimmable: bool = True) -> tuple[_Entry, int] | None:
        """The entry sharing the longest usable prefix with ``prompt``, and that length.

        An entry longer than the shared prefix is usable only if its cache can
        be trimmed back to it (not a rotating cache that wrapped).
        """
        best = None
        for entry in self._index().values():
            n = common_prefix(entry.tokens, prompt)
            if n < len(entry.tokens) and not trimmable:
                continue
            if n and (best is None or n > best[1]):
                best = (entry, n)
        return best

    def load(self, entry: _Entry) -> list[Any] | None:
        """The entry's cache, or None (logged, entry dropped) if the file is bad."""
        try:
            cache, meta = load_prompt_cache(str(entry.path), return_metadata=True)
            if meta.get("model") != self.identity:
                raise ValueError("written for another model")
            os.utime(entry.path)  # least recently used goes first
        except Exception as exc:
            log.warning("prompt cache: skipping %s: %s", entry.path, exc)
            self._index().pop(entry.path.stem, None)
            return None
        return [SequenceQuantizedKVCache.from_state(c.state) if type(c) is QuantizedKVCache else c
                for c in cache]

    def store(self, tokens: list[int], cache: list[Any]) -> None:
        """Writes an entry (replacing its own prefixes), then trims the folder to its bound."""
        if len(tokens) < MIN_TOKENS or self.max_bytes <= 0:
            return
        index = self._index()
        key = hashlib.sha256(",".join(map(str, tokens)).encode()).hexdigest()[:40]
        if key in index:
            os.utime(index[key].path)
            return
        plain = [QuantizedKVCache.from_state(c.state) if isinstance(c, SequenceQuantizedKVCache) else c
                 for c in cache]
        path = self.folder / f"{key}.safetensors"
        tmp = self.folder / f".{key}.tmp.safetensors"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            save_prompt_cache(str(tmp), plain, {"format": FORMAT, "model": self.identity,
                                                "tokens": ",".join(map(str, tokens))})
            tmp.replace(path)
        except Exception as exc:  # a full disk must not fail the request
            log.warning("prompt cache: cannot write %s: %s", path, exc)
            tmp.unlink(missing_ok=True)
            return
        entry = _Entry(tuple(tokens), path, path.stat().st_size)
        for other_key, other in list(index.items()):
            if len(other.tokens) < len(entry.tokens) and entry.tokens[:len(other.tokens)] == other.tokens:
                self._remove(other_key)
        index[key] = entry
        self._trim()

    def _remove(self, key: str) -> None:
        entry = self._index().pop(key)
        entry.path.unlink(missing_ok=True)

    def _trim(self) -> None:
        index = self._index()
        total = sum(e.nbytes for e in index.values())
        for key in sorted(index, key=lambda k: index[k].path.stat().st_mtime_ns):
            if total <= self.max_bytes:
                break
            total -= index[key].nbytes
            self._remove(key)
