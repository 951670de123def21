"""Loading one shard of a model: mlx-lm's tensor (``shard``) or pipeline split.

Like ``mlx_lm.utils.sharded_load``, but reading the local checkpoint as it
is (a single ``model.safetensors`` needs no index file): the model is built
lazily, split, and only this rank's weights are evaluated. Architectures
mlx-lm cannot split are refused with the list of those it can.
"""

from __future__ import annotations

import json
import os
import pkgutil
from pathlib import Path
from typing import Any

import mlx.core as mx

from ..engine.types import Parallelism
from .world import WorldError, backend_from_env


def supported_architectures() -> dict[str, list[str]]:
    """mlx-lm's architectures with a tensor split (``shard``) and with a pipeline split."""
    import mlx_lm.models as models

    found: dict[str, list[str]] = {"tensor": [], "pipeline": []}
    for info in pkgutil.iter_modules(models.__path__):
        source = Path(models.__path__[0], f"{info.name}.py")
        text = source.read_text() if source.exists() else ""
        if "def shard(" in text:
            found["tensor"].append(info.name)
        if "PipelineMixin" in text and info.name != "pipeline":
            found["pipeline"].append(info.name)
    return found


def check_architecture(path: Path, mode: str) -> None:
    """Refuses a checkpoint whose architecture mlx-lm cannot split in ``mode``."""
    if not (path / "config.json").exists():
        return  # the loader's own error says what is missing
    config = json.loads((path / "config.json").read_text())
    if "vision_config" in config:
        raise WorldError("vision models are not supported with --parallel")
    arch = str(config.get("model_type", ""))
    supported = supported_architectures()[mode]
    if arch not in supported:
        raise WorldError(f"{mode} parallel does not support the '{arch}' architecture; mlx-lm splits "
                         f"these: {', '.join(sorted(supported))}")


def load_shard(path: Path, mode: str, tokenizer_config: dict[str, Any],
               trust_remote_code: bool) -> tuple[Any, Any, dict[str, Any], Parallelism]:
    """This rank's shard of the checkpoint at ``path``: (model, tokenizer, config, split)."""
    from mlx_lm.utils import load_model, load_tokenizer

    check_architecture(path, mode)
    group = mx.distributed.init()
    model, config = load_model(path, lazy=True, strict=False, trust_remote_code=trust_remote_code)
    if mode == "tensor":
        if not hasattr(model, "shard"):
            raise WorldError(f"tensor parallel does not support the '{config.get('model_type')}' architecture")
        try:
            model.shard(group)
        except ValueError as exc:
            raise WorldError(f"cannot split this model over {group.size()} ranks: {exc}") from None
    else:
        inner = getattr(model, "model", None)
        if not hasattr(inner, "pipeline"):
            raise WorldError(f"pipeline parallel does not support the '{config.get('model_type')}' architecture")
        if len(inner.layers) < group.size():
            raise WorldError(f"{len(inner.layers)} layers cannot be split over {group.size()} pipeline ranks")
        inner.pipeline(group)
    mx.eval(model.parameters())
    tokenizer = load_tokenizer(path, tokenizer_config, eos_token_ids=config.get("eos_token_id"))
    # Every rank has its shard before any forward pass (mlx-lm's barrier).
    mx.eval(mx.distributed.all_sum(mx.array(1.0), group=group, stream=mx.cpu))
    return model, tokenizer, config, Parallelism(mode, group.size(), backend_from_env(dict(os.environ)))
