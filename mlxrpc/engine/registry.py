"""Model ids and aliases → loaded models.

Loading goes through ``mlx_lm.load`` (a Hugging Face id or a local path), the
same call real users make; it runs on the engine thread, which owns MLX.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .disk_cache import model_identity
from .draft import load_draft
from .embeddings import EmbeddingSpec, embedding_spec, load_embedding_model
from .errors import EngineError, ErrorCode, invalid, not_found
from .kv_budget import KVUsage
from .kv_cache import KVLayout, check_layout
from .model_options import ModelOptions
from .speculative import Speculation
from .structured import build_tokenizer
from .token_bytes import TokenBytes
from .types import KVCacheInfo, ModelDescription, ModelKind, Parallelism

log = logging.getLogger(__name__)

DEFAULT_ALIAS = "default"


@dataclass(frozen=True)
class ModelSource:
    """What to load, and the id requests use for it."""

    id: str
    source: str
    options: ModelOptions = ModelOptions()

    @classmethod
    def parse(cls, spec: str) -> ModelSource:
        """``SOURCE`` or ``ID=SOURCE`` (a short name for a long hub id or path)."""
        name, sep, source = spec.partition("=")
        if not sep:
            return cls(id=spec, source=spec)
        if not name or not source:
            raise ValueError(f"model spec {spec!r} must be SOURCE or ID=SOURCE")
        return cls(id=name, source=source)


@dataclass
class LoadedModel:
    id: str
    source: str
    kind: ModelKind
    model: Any
    tokenizer: Any
    config: dict[str, Any]
    created: int
    aliases: list[str] = field(default_factory=list)
    # llguidance's view of the tokenizer, for grammars; None if it cannot be built.
    grammar_tokenizer: Any = None
    # Bytes of its weights (for --max-model-bytes).
    nbytes: int = 0
    # The mlx-vlm processor (image preprocessing) of a vision model.
    processor: Any = None
    last_used: float = field(default_factory=time.monotonic)
    # Token ids that stay out of generated text (skip_special_tokens), and each
    # token's bytes for logprobs; set at load.
    special_ids: frozenset[int] = frozenset()
    token_bytes: Any = None
    # Chat-template arguments every request gets unless it sets its own.
    template_defaults: dict[str, Any] = field(default_factory=dict)
    # Pooling and size of an embedding model (kind EMBEDDING).
    embedding: EmbeddingSpec | None = None
    # Set when this is one rank's shard of a model split over a distributed world.
    parallelism: Parallelism | None = None
    # How its KV cache is stored (--kv-bits, --max-kv-size) and what a token of it costs.
    kv: KVLayout = KVLayout()
    kv_token_bytes: int = 0
    # Changes whenever its weights, config, adapter or KV layout do (disk prefix cache).
    identity: str = ""
    # Its KV bytes now, published by the engine core.
    kv_usage: KVUsage = KVUsage()
    # Speculative decoding of its batches (--speculative), None when off, and
    # the draft model it uses (--draft-model).
    speculation: Speculation | None = None
    draft: Any = None

    @property
    def vocab_size(self) -> int:
        return int(self.config.get("vocab_size") or len(self.tokenizer))

    @property
    def context_length(self) -> int:
        for key in ("max_position_embeddings", "max_seq_len", "seq_length", "n_positions"):
            if isinstance(self.config.get(key), int):
                return int(self.config[key])
        return 4096

    @property
    def eos_token_ids(self) -> list[int]:
        return sorted(self.tokenizer.eos_token_ids)

    def describe(self) -> ModelDescription:
        return ModelDescription(
            id=self.id,
            aliases=list(self.aliases),
            kind=self.kind,
            source=self.source,
            loaded=True,
            created=self.created,
            context_length=self.context_length,
            vocab_size=self.vocab_size,
            quantization=_quantization(self),
            architecture=str(self.config.get("model_type", "")),
            eos_token_ids=self.eos_token_ids,
            has_chat_template=bool(getattr(self.tokenizer, "has_chat_template", False)),
            embedding_dimensions=self.embedding.dimensions if self.embedding else 0,
            capabilities=["embeddings"] if self.embedding else [],
            parallelism=self.parallelism,
            kv_cache=None if self.kind is ModelKind.EMBEDDING else KVCacheInfo(
                bytes_per_token=self.kv_token_bytes, bits=self.kv.bits or 0,
                group_size=self.kv.group_size if self.kv.bits else 0, max_kv_size=self.kv.max_size or 0,
                budget_bytes=self.kv_usage.budget, reserved_bytes=self.kv_usage.reserved,
                in_use_bytes=self.kv_usage.in_use, cached_bytes=self.kv_usage.cached,
                waiting=self.kv_usage.waiting),
        )


def load_model(source: ModelSource, path: Path | None = None) -> LoadedModel:
    """Loads one checkpoint: mlx-lm for text, mlx-vlm when it has a vision tower.

    Must run on the engine thread; ``path`` is the checkpoint already fetched
    by ``local_path`` (so a download need not hold the engine thread).
    """
    started = time.perf_counter()
    log.info("loading model %s from %s", source.id, source.source)
    try:
        path = path or local_path(source.source)
        config = json.loads((path / "config.json").read_text())
        if spec := embedding_spec(path, config):
            loaded = _load_embedding(source, path, config, spec)
        elif "vision_config" in config:
            loaded = _load_vision(source, path, config)
        else:
            loaded = _load_text(source, path)
    except FileNotFoundError as exc:
        raise EngineError(ErrorCode.NOT_FOUND, f"cannot load '{source.source}': {exc}",
                          field="model") from exc
    loaded.nbytes = checkpoint_bytes(path)
    loaded.template_defaults = dict(source.options.template_defaults)
    if loaded.kind is not ModelKind.EMBEDDING:
        # The vision batch makes its own caches: only text models take the layout.
        loaded.kv = source.options.kv if loaded.kind is ModelKind.TEXT else KVLayout()
        loaded.identity = model_identity(path, source.options.adapter_path, loaded.kv)
        try:
            loaded.kv_token_bytes = check_layout(loaded.model, loaded.config, loaded.kv)
        except ValueError as exc:
            raise invalid("model", f"{source.id}: {exc}") from None
    loaded.speculation = source.options.speculation
    if loaded.speculation is not None and loaded.speculation.draft_model:
        if loaded.kind is not ModelKind.TEXT:
            raise invalid("draft_model", f"'{source.id}' is not a text model: no draft model")
        loaded.draft = load_draft(loaded.speculation.draft_model, loaded.tokenizer)
    loaded.special_ids = special_token_ids(loaded.tokenizer)
    loaded.token_bytes = TokenBytes(loaded.tokenizer)
    try:
        if loaded.kind is not ModelKind.EMBEDDING:  # embedding models never sample
            loaded.grammar_tokenizer = build_tokenizer(loaded.tokenizer._tokenizer, loaded.vocab_size)
    except Exception as exc:  # e.g. a slow (non-Rust) tokenizer
        log.warning("structured output is off for %s: %s", source.id, exc)
    log.info("loaded %s (%s) in %.2fs", source.id, loaded.kind.value, time.perf_counter() - started)
    return loaded


def special_token_ids(tokenizer: Any) -> frozenset[int]:
    """The tokenizer's special tokens: its named ones and added tokens marked special."""
    hf = getattr(tokenizer, "_tokenizer", tokenizer)
    ids = set(getattr(hf, "all_special_ids", None) or ())
    for token_id, added in (getattr(hf, "added_tokens_decoder", None) or {}).items():
        if getattr(added, "special", False):
            ids.add(int(token_id))
    return frozenset(ids)


def local_path(source: str) -> Path:
    """A local folder for a path or a Hugging Face id (downloaded if needed)."""
    local = Path(source).expanduser()
    if local.exists():
        return local
    if source.startswith(("/", ".", "~")):
        raise FileNotFoundError(f"no such folder: {source}")
    from mlx_lm.utils import _download

    return Path(_download(source))


def checkpoint_bytes(path: Path) -> int:
    """What a checkpoint's weights take in memory, estimated from its files."""
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


def _load_text(source: ModelSource, path: Path) -> LoadedModel:
    import mlx_lm

    options = source.options
    tokenizer_config: dict[str, Any] = {"trust_remote_code": options.trust_remote_code}
    if options.chat_template is not None:
        tokenizer_config["chat_template"] = options.chat_template
    parallelism = None
    if options.parallel:
        from ..distributed.loading import load_shard

        model, tokenizer, config, parallelism = load_shard(path, options.parallel, tokenizer_config,
                                                           options.trust_remote_code)
    else:
        model, tokenizer, config = mlx_lm.load(str(path), tokenizer_config=tokenizer_config,
                                               adapter_path=options.adapter_path, return_config=True,
                                               trust_remote_code=options.trust_remote_code)
    return LoadedModel(id=source.id, source=source.source, kind=ModelKind.TEXT, model=model,
                       tokenizer=tokenizer, config=config, created=int(time.time()), parallelism=parallelism)


def _load_embedding(source: ModelSource, path: Path, config: dict[str, Any], spec: EmbeddingSpec) -> LoadedModel:
    model, tokenizer = load_embedding_model(path, config, spec)
    return LoadedModel(id=source.id, source=source.source, kind=ModelKind.EMBEDDING, model=model,
                       tokenizer=tokenizer, config=config, created=int(time.time()), embedding=spec)


def _load_vision(source: ModelSource, path: Path, config: dict[str, Any]) -> LoadedModel:
    import mlx_vlm
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    model, processor = mlx_vlm.load(str(path))
    eos = config.get("eos_token_id")
    tokenizer = load_tokenizer(path, eos_token_ids=[eos] if isinstance(eos, int) else eos)
    text_config = {**config.get("text_config", {}), **config}
    return LoadedModel(id=source.id, source=source.source, kind=ModelKind.VISION, model=model,
                       tokenizer=tokenizer, config=text_config, created=int(time.time()),
                       processor=processor)


class ModelRegistry:
    """Loaded models by id and alias; written by the engine thread, read by any."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[str, LoadedModel] = {}
        self._aliases: dict[str, str] = {}

    def add(self, loaded: LoadedModel) -> None:
        with self._lock:
            self._models[loaded.id] = loaded
            self._ensure_default()

    def remove(self, model_id: str) -> LoadedModel | None:
        with self._lock:
            removed = self._models.pop(model_id, None)
            if removed is not None and self._aliases.get(DEFAULT_ALIAS) == model_id:
                del self._aliases[DEFAULT_ALIAS]
                removed.aliases.remove(DEFAULT_ALIAS)
                self._ensure_default()
            return removed

    def _ensure_default(self) -> None:
        """The first model loaded (still loaded) answers to "default"."""
        if DEFAULT_ALIAS not in self._aliases and self._models:
            first = next(iter(self._models.values()))
            self._aliases[DEFAULT_ALIAS] = first.id
            first.aliases.append(DEFAULT_ALIAS)

    def least_recently_used(self, busy: set[str]) -> LoadedModel | None:
        with self._lock:
            idle = [m for m in self._models.values() if m.id not in busy]
        return min(idle, key=lambda m: m.last_used, default=None)

    def get(self, name: str) -> LoadedModel:
        """The model for an id or alias; empty selects the default model."""
        name = name or DEFAULT_ALIAS
        with self._lock:
            model = self._models.get(name) or self._models.get(self._aliases.get(name, ""))
            if model is not None:
                model.last_used = time.monotonic()
        if model is None:
            if not name.strip():
                raise invalid("model", "model must not be blank")
            raise not_found(name)
        return model

    def all(self) -> list[LoadedModel]:
        with self._lock:
            return list(self._models.values())


def _quantization(model: LoadedModel) -> str:
    quant = model.config.get("quantization") or model.config.get("quantization_config")
    if isinstance(quant, dict) and quant.get("bits"):
        return f"{quant['bits']}-bit (group {quant.get('group_size', 64)})"
    from mlx.utils import tree_flatten

    params = tree_flatten(model.model.parameters())
    return str(params[0][1].dtype).removeprefix("mlx.core.") if params else ""
