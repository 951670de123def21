"""Per-model load options: chat template override, default template
arguments, LoRA adapters, remote code, KV-cache layout, speculative decoding.

Given like mlx_lm.server's flags, each value optionally prefixed with the
model id it applies to (``--chat-template-args qwen='{"enable_thinking": false}'``);
without a prefix a value applies to every model, and a prefixed one wins.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..settings import EngineSettings
from .kv_cache import QUANT_GROUP_SIZES, KVLayout
from .speculative import METHODS, Speculation

_ID_PREFIX = re.compile(r"^([A-Za-z0-9._:-]+)=(.*)$", re.S)


@dataclass(frozen=True)
class ModelOptions:
    chat_template: str | None = None  # the template itself (the file's contents)
    template_defaults: dict[str, Any] = field(default_factory=dict)
    adapter_path: str | None = None
    trust_remote_code: bool = False
    # "tensor" or "pipeline": load only this rank's shard (distributed/loading.py).
    parallel: str = ""
    kv: KVLayout = KVLayout()
    speculation: Speculation | None = None


def _pick(values: list[str], model_id: str) -> str | None:
    """The value for ``model_id``: its own (ID=VALUE) over a general one."""
    general = own = None
    for value in values:
        m = _ID_PREFIX.match(value)
        if m and not value.lstrip().startswith("{"):
            if m.group(1) == model_id:
                own = m.group(2)
        else:
            general = value
    return own if own is not None else general


def model_options(settings: EngineSettings, model_id: str) -> ModelOptions:
    """Resolves the options for one model id; ValueError names a bad value."""
    template_file = _pick(settings.chat_template, model_id)
    template = None
    if template_file:
        try:
            template = Path(template_file).expanduser().read_text()
        except OSError as exc:
            raise ValueError(f"--chat-template {template_file}: {exc.strerror or exc}") from None
    defaults: dict[str, Any] = {}
    if raw := _pick(settings.chat_template_args, model_id):
        try:
            defaults = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--chat-template-args is not JSON: {exc}") from None
        if not isinstance(defaults, dict):
            raise ValueError("--chat-template-args must be a JSON object")
    return ModelOptions(
        chat_template=template,
        template_defaults=defaults,
        adapter_path=_pick(settings.adapter_path, model_id) or None,
        trust_remote_code=settings.trust_remote_code,
        parallel=settings.parallel,
        kv=kv_layout(settings, model_id),
        speculation=speculation(settings, model_id),
    )


def _int(values: list[str], model_id: str, flag: str) -> int | None:
    raw = _pick(values, model_id)
    if raw is None or not raw.strip():
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{flag} {raw!r} is not an integer") from None


def kv_layout(settings: EngineSettings, model_id: str) -> KVLayout:
    """The model's KV-cache layout from --kv-bits, --kv-group-size and --max-kv-size."""
    bits = _int(settings.kv_bits, model_id, "--kv-bits")
    group = _int(settings.kv_group_size, model_id, "--kv-group-size") or 64
    max_size = _int(settings.max_kv_size, model_id, "--max-kv-size")
    if bits is not None and bits not in (4, 8):
        raise ValueError(f"--kv-bits must be 4 or 8, got {bits}")
    if group not in QUANT_GROUP_SIZES:
        raise ValueError(f"--kv-group-size must be one of {', '.join(map(str, QUANT_GROUP_SIZES))}, got {group}")
    if max_size is not None and max_size < 1:
        raise ValueError(f"--max-kv-size must be positive, got {max_size}")
    if bits is not None and max_size is not None:
        # mlx-lm has no quantized rotating cache (RotatingKVCache.to_quantized raises).
        raise ValueError("--kv-bits and --max-kv-size cannot be combined for one model")
    return KVLayout(bits=bits, group_size=group, max_size=max_size)


def speculation(settings: EngineSettings, model_id: str) -> Speculation | None:
    """The model's speculative decoding (--speculative, --draft-model and the
    sizes); None when off. A draft model alone means --speculative draft."""
    draft = _pick(settings.draft_model, model_id) or None
    method = (_pick(settings.speculative, model_id) or ("draft" if draft else "off")).strip().lower()
    if method not in METHODS:
        raise ValueError(f"--speculative must be one of {', '.join(METHODS)}, got {method!r}")
    sizes = {}
    for name, values, default in (("num_draft_tokens", settings.num_draft_tokens, 4),
                                  ("ngram_size", settings.ngram_size, 3),
                                  ("max_batch", settings.speculative_max_batch, 4)):
        raw = _pick(values, model_id)
        flag = "--" + ("speculative-max-batch" if name == "max_batch" else name.replace("_", "-"))
        try:
            sizes[name] = int(raw) if raw and raw.strip() else default
        except ValueError:
            raise ValueError(f"{flag} {raw!r} is not an integer") from None
        if sizes[name] < 1:
            raise ValueError(f"{flag} must be at least 1, got {sizes[name]}")
    if (method == "draft") != bool(draft):
        raise ValueError("--speculative draft needs --draft-model" if not draft
                         else f"--draft-model is for --speculative draft, not {method!r}")
    return None if method == "off" else Speculation(method=method, draft_model=draft, **sizes)
