"""Builds a family's tiny random-weight MLX model dir, cached by a content hash.

The dir is what ``mlx_lm.load`` reads from a real checkpoint: ``config.json``
of the family's mlx-lm architecture (hidden 64, 2 layers), float32
``model.safetensors``, ``tokenizer.json`` (converted from llama.cpp's vocab file
with the family's added tokens), ``tokenizer_config.json`` (the real chat
template, special flags) and ``generation_config.json`` (the family's EOS ids).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from mlxrpc.demo_model import LOGIT_SCALE, ensure_built
from tests.zoo import gguf_tokenizer, tekken
from tests.zoo.families import FAMILIES, Family
from tests.zoo.gguf_tokenizer import Added
from tests.zoo.sources import ZooUnavailable, cache_dir, template_text, vocab_path

# Bump when the build output changes in a way the hashed inputs do not show.
BUILDER_VERSION = 1
SHAPE = {
    "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 128,
    "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "torch_dtype": "float32",
}


def family(name: str) -> Family:
    """The spec of ``name``; ZooUnavailable when it cannot be built here."""
    if name not in FAMILIES:
        raise KeyError(f"unknown zoo family {name!r}; known: {', '.join(FAMILIES)}")
    fam = FAMILIES[name]
    if fam.unavailable:
        raise ZooUnavailable(f"zoo family {name}: {fam.unavailable}")
    return fam


def padded_added(fam: Family, base: int) -> dict[int, Added]:
    """The family's added tokens, padded with special ``[PADn]`` tokens (as
    llama.cpp's converter names them) up to a multiple of 64, so the model's
    embedding never has a row the tokenizer cannot decode."""
    size = max(base, max(fam.added) + 1)
    total = -(-size // 64) * 64
    return {**fam.added, **{i: Added(f"[PAD{i}]") for i in range(size, total)}}


def vocab_file(fam: Family) -> Path:
    """The family's vocabulary: a llama.cpp vocab file, or mistral-common's Tekken."""
    return tekken.tekken_path() if fam.vocab == "tekken" else vocab_path(fam.vocab)


def family_tokenizer(fam: Family):
    """The family's ``tokenizers.Tokenizer``."""
    path = vocab_file(fam)
    vocab = tekken.read_tekken(path) if fam.vocab == "tekken" else gguf_tokenizer.read_vocab(path)
    added = padded_added(fam, gguf_tokenizer.base_size(vocab))
    return gguf_tokenizer.build_tokenizer(vocab, added, fam.bos_token if fam.add_bos else None)


def model_dir(name: str) -> Path:
    """The built model dir of family ``name`` (built on first use, then reused)."""
    fam = family(name)
    return ensure_built(cache_dir() / "models" / name, _fingerprint(fam),
                        lambda dest: _build(dest, fam))


def _fingerprint(fam: Family) -> str:
    digest = hashlib.sha256()
    for path in (vocab_file(fam), Path(gguf_tokenizer.__file__), Path(tekken.__file__), Path(__file__)):
        digest.update(path.read_bytes())
    digest.update(template_text(fam.template).encode())
    spec = {"builder": BUILDER_VERSION, "shape": SHAPE, **asdict(fam)}
    digest.update(json.dumps(spec, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _build(dest: Path, fam: Family) -> None:
    tok = family_tokenizer(fam)
    tok.save(str(dest / "tokenizer.json"))
    vocab_size = tok.get_vocab_size()
    decoder = tok.get_added_tokens_decoder()
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": fam.bos_token,
        "eos_token": fam.eos_token,
        "pad_token": fam.pad_token,
        "add_bos_token": fam.add_bos,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": fam.config["max_position_embeddings"],
        "chat_template": _chat_template(fam),
        "added_tokens_decoder": {
            str(i): {"content": t.content, "lstrip": t.lstrip, "normalized": False,
                     "rstrip": t.rstrip, "single_word": False, "special": t.special}
            for i, t in sorted(decoder.items())
        },
    }
    if fam.unk_token:
        tokenizer_config["unk_token"] = fam.unk_token
    _write_json(dest / "tokenizer_config.json", tokenizer_config)
    generation = {"eos_token_id": fam.eos_token_ids}
    if "bos_token_id" in fam.config:
        generation["bos_token_id"] = fam.config["bos_token_id"]
    _write_json(dest / "generation_config.json", generation)
    config = {"model_type": fam.architecture, **SHAPE, "vocab_size": vocab_size, **fam.config}
    _write_weights(dest, config, tok, set(decoder))
    _write_json(dest / "config.json", config)


def _chat_template(fam: Family) -> str | list[dict]:
    template = template_text(fam.template)
    if fam.default_template is None:
        return template
    return [{"name": "default", "template": fam.default_template},
            {"name": "tool_use", "template": template}]


def _write_weights(dest: Path, config: dict, tok, added: set[int]) -> None:
    import importlib

    import mlx.core as mx
    from mlx.utils import tree_flatten

    module = importlib.import_module(f"mlx_lm.models.{config['model_type']}")
    mx.random.seed(0)
    model = module.Model(module.ModelArgs.from_dict(config))
    # As the demo model does: zero the output rows of added and unprintable
    # tokens, so random sampling gives readable text and rarely ends a turn.
    pieces = tok.decode_batch([[i] for i in range(config["vocab_size"])],
                              skip_special_tokens=False)
    keep = mx.array([0.0 if i in added or not (p.isascii() and p.isprintable()) else LOGIT_SCALE
                     for i, p in enumerate(pieces)])
    model.lm_head.weight = model.lm_head.weight * keep[:, None]
    model.set_dtype(mx.float32)
    mx.save_safetensors(str(dest / "model.safetensors"), dict(tree_flatten(model.parameters())),
                        metadata={"format": "mlx"})


def _write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False), encoding="utf-8")


__all__ = ["ZooUnavailable", "family", "family_tokenizer", "model_dir"]
