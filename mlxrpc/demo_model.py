"""Builds small MLX text models locally, deterministically, with no download.

`mlxrpc serve` with no --model serves the *demo model* built here on first use
and cached under ``~/.cache/mlxrpc`` (random weights: it produces gibberish, but
exercises every code path of a real checkpoint). Tests and benchmarks build
their models with the same function, in the layout ``mlx_lm.load`` reads.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

BOS = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
# Bump when the build changes, so cached models are rebuilt.
BUILDER_VERSION = 1
# Scale of the kept embeddings: sharp enough that sampling at temperature 1
# rarely picks a muted token.
LOGIT_SCALE = 4.0
SPECIAL_TOKENS = [BOS, IM_START, IM_END]

# ChatML, with Qwen-style tool calls so mlx-lm recognises the tool format.
CHAT_TEMPLATE = (
    "{%- if tools %}{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n\\n<tools>' }}{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}"
    "{%- endfor %}{{- '\\n</tools>\\n\\nFor each function call, return a json object within "
    "<tool_call></tool_call> XML tags.<|im_end|>\\n' }}"
    "{%- elif messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'system' %}{%- if not loop.first or not tools %}{%- endif %}"
    "{%- elif message.role == 'tool' %}"
    "{{- '<|im_start|>user\\n<tool_response>\\n' + message.content + "
    "'\\n</tool_response><|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\\n' }}"
    "{%- if message.content is string %}{{- message.content }}{%- endif %}"
    "{%- if message.tool_calls %}{%- for tool_call in message.tool_calls %}"
    "{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}"
    "{{- '<tool_call>\\n{\"name\": \"' + tool_call.name + '\", \"arguments\": ' }}"
    "{%- if tool_call.arguments is string %}{{- tool_call.arguments }}"
    "{%- else %}{{- tool_call.arguments | tojson }}{%- endif %}"
    "{{- '}\\n</tool_call>' }}{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# ChatML without tools, for a model whose template has no tool-call format.
PLAIN_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Training text for the BPE merges: varied enough to give multi-character
# tokens, so stop strings can span token boundaries.
_CORPUS = """\
The quick brown fox jumps over the lazy dog. Hello world, how are you today?
mlxrpc serves MLX models over gRPC and over the OpenAI REST API.
Once upon a time there was a small model that wanted to tell a story.
The capital of France is Paris. The capital of Italy is Rome.
List three colors: red, green and blue. {"colors": ["red", "green", "blue"]}
Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000. Symbols: ! ? , . ; : ' " ( ) [ ] { }
Streaming sends tokens as they are generated; batching shares the model.
"""


@dataclass(frozen=True)
class TextModelSpec:
    """Shape of a locally built text model (defaults: the tiny demo model)."""

    architecture: str = "llama"
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 128
    vocab_size: int = 512
    max_position_embeddings: int = 2048
    dtype: str = "float32"
    seed: int = 0
    chat_template: str = CHAT_TEMPLATE
    extra_config: dict = field(default_factory=dict)

    def fingerprint(self) -> str:
        return json.dumps({"builder": BUILDER_VERSION, **asdict(self)}, sort_keys=True)


DEMO_SPEC = TextModelSpec()
DEMO_MODEL_ID = "mlxrpc/demo-llama"


def cache_root() -> Path:
    return Path(os.environ.get("MLXRPC_CACHE_DIR", Path.home() / ".cache" / "mlxrpc"))


def ensure_demo_model() -> Path:
    """The demo model's folder, built once and then reused."""
    return ensure_text_model(cache_root() / "models" / "demo-llama", DEMO_SPEC)


def ensure_text_model(dest: Path, spec: TextModelSpec) -> Path:
    """Builds ``spec`` into ``dest`` unless an identical build is already there."""
    return ensure_built(dest, spec.fingerprint(), lambda path: build_text_model(path, spec))


def ensure_built(dest: Path, fingerprint: str, build: Callable[[Path], object]) -> Path:
    """Runs ``build`` into a staging folder moved to ``dest`` (atomic for readers),
    unless ``dest`` already holds a build with the same fingerprint."""
    stamp = dest / "mlxrpc-spec.json"
    if stamp.exists() and stamp.read_text() == fingerprint:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=dest.parent))
    try:
        build(staging)
        stamp_tmp = staging / "mlxrpc-spec.json"
        stamp_tmp.write_text(fingerprint)
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return dest


def build_tokenizer(vocab_size: int, extra_specials: Sequence[str] = ()):
    """A byte-level BPE trained on a fixed corpus, padded to ``vocab_size``."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[*SPECIAL_TOKENS, *extra_specials],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS.splitlines() * 4, trainer)
    missing = vocab_size - tok.get_vocab_size()
    if missing < 0:
        raise ValueError(f"vocab_size {vocab_size} is smaller than the byte alphabet")
    # Pad so the model can never emit an id the tokenizer cannot decode.
    tok.add_tokens([AddedToken(f"<|extra_{i}|>", special=True) for i in range(missing)])
    return tok


def build_text_model(dest: Path, spec: TextModelSpec) -> Path:
    """Writes config, tokenizer and random weights of ``spec`` into ``dest``."""
    import importlib

    import mlx.core as mx
    from mlx.utils import tree_flatten

    dest.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(spec.vocab_size)
    tok.save(str(dest / "tokenizer.json"))
    eos_id = tok.token_to_id(IM_END)
    bos_id = tok.token_to_id(BOS)
    (dest / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": BOS,
                "eos_token": IM_END,
                "pad_token": BOS,
                "add_bos_token": False,
                "model_max_length": spec.max_position_embeddings,
                "chat_template": spec.chat_template,
            },
            indent=2,
        )
    )
    config = {
        "model_type": spec.architecture,
        "hidden_size": spec.hidden_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "intermediate_size": spec.intermediate_size,
        "vocab_size": spec.vocab_size,
        "max_position_embeddings": spec.max_position_embeddings,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "head_dim": spec.hidden_size // spec.num_attention_heads,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "torch_dtype": spec.dtype,
        **spec.extra_config,
    }
    module = importlib.import_module(f"mlx_lm.models.{spec.architecture}")
    mx.random.seed(spec.seed)
    model = module.Model(module.ModelArgs.from_dict(config))
    _mute_unreadable_tokens(model, tok)
    model.set_dtype(getattr(mx, spec.dtype))
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(dest / "model.safetensors"), weights, metadata={"format": "mlx"})
    (dest / "config.json").write_text(json.dumps(config, indent=2))
    return dest


def _mute_unreadable_tokens(model, tok) -> None:
    """Zeroes the output rows of special and non-printable-ASCII tokens.

    A random model then rarely samples stray bytes or padding tokens, so its
    gibberish is readable text: nicer for a demo, and tests can match stop
    strings on it.
    """
    import mlx.core as mx

    head = model.lm_head
    added = set(tok.get_added_tokens_decoder())
    keep = mx.array(
        [
            1.0 if i not in added and (s := tok.decode([i])).isascii() and s.isprintable() else 0.0
            for i in range(head.weight.shape[0])
        ]
    )
    head.weight = head.weight * (keep[:, None] * LOGIT_SCALE)
