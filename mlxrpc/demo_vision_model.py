"""Builds a tiny random-weight vision-language model (Qwen2-VL layout) locally.

It loads through ``mlx_vlm.load`` exactly like a hub checkpoint, so tests and
demos exercise the real vision path (image processor, vision tower, M-RoPE)
without a download. Random weights: the answers are gibberish, but an image
changes them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .demo_model import BOS, IM_END, IM_START, build_tokenizer, ensure_built

VISION_SPECIALS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]

# ChatML with Qwen2-VL's image placeholder for image content parts.
VISION_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message.role + '\\n' }}"
    "{%- if message.content is string %}{{- message.content }}"
    "{%- else %}{%- for part in message.content %}"
    "{%- if part.type == 'image' or part.type == 'image_url' or 'image' in part %}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part.type == 'text' %}{{- part.text }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


@dataclass(frozen=True)
class VisionModelSpec:
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 128
    vocab_size: int = 512
    vision_depth: int = 1
    vision_embed_dim: int = 32
    vision_heads: int = 2
    # Few image tokens per image keep prefill cheap on a CPU.
    max_pixels: int = 56 * 56 * 4
    seed: int = 0

    def fingerprint(self) -> str:
        return json.dumps({"kind": "qwen2_vl", **asdict(self)}, sort_keys=True)


def ensure_vision_model(dest: Path, spec: VisionModelSpec = VisionModelSpec()) -> Path:
    return ensure_built(dest, spec.fingerprint(), lambda path: build_vision_model(path, spec))


def build_vision_model(dest: Path, spec: VisionModelSpec = VisionModelSpec()) -> Path:
    """Writes config, tokenizer, preprocessor config and random weights into ``dest``."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_vlm.models import qwen2_vl
    from mlx_vlm.utils import update_module_configs

    dest.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(spec.vocab_size, extra_specials=VISION_SPECIALS)
    tok.save(str(dest / "tokenizer.json"))
    ids = {t: tok.token_to_id(t) for t in [BOS, IM_START, IM_END, *VISION_SPECIALS]}
    (dest / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None, "eos_token": IM_END, "pad_token": BOS,
        "chat_template": VISION_CHAT_TEMPLATE,
    }, indent=2))
    head_dim = spec.hidden_size // spec.num_attention_heads
    third = head_dim // 2 // 3
    mrope = [head_dim // 2 - 2 * third, third, third]
    config = {
        "model_type": "qwen2_vl",
        "architectures": ["Qwen2VLForConditionalGeneration"],
        "hidden_size": spec.hidden_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "intermediate_size": spec.intermediate_size,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "rms_norm_eps": 1e-6,
        "vocab_size": spec.vocab_size,
        "max_position_embeddings": 4096,
        "rope_theta": 10000.0,
        "rope_scaling": {"type": "mrope", "mrope_section": mrope},
        "tie_word_embeddings": False,
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "bos_token_id": ids[BOS],
        "eos_token_id": ids[IM_END],
        "torch_dtype": "float32",
        "vision_config": {
            "model_type": "qwen2_vl",
            "depth": spec.vision_depth,
            "embed_dim": spec.vision_embed_dim,
            "hidden_size": spec.hidden_size,
            "num_heads": spec.vision_heads,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "in_channels": 3,
        },
    }
    (dest / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2VLProcessor",
        "patch_size": 14, "merge_size": 2, "temporal_patch_size": 2,
        "min_pixels": 56 * 56, "max_pixels": spec.max_pixels,
        "do_resize": True, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
    }, indent=2))
    mx.random.seed(spec.seed)
    # The same config assembly mlx_vlm.load does, so the weights match what it builds.
    params = {**config, "text_config": {}}
    model_config = update_module_configs(qwen2_vl.ModelConfig.from_dict(params), qwen2_vl, params,
                                         ["text", "vision"])
    model = qwen2_vl.Model(model_config)
    mx.save_safetensors(str(dest / "model.safetensors"), dict(tree_flatten(model.parameters())),
                        metadata={"format": "mlx"})
    (dest / "config.json").write_text(json.dumps(config, indent=2))
    return dest
