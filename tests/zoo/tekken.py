"""Mistral's Tekken vocabulary (``mistral-common``'s ``tekken_240911.json``) as
a GGUF-shaped vocabulary, so the zoo builds it like llama.cpp's files.

Tekken is tiktoken-style: byte sequences ranked by merge priority, after
1000 special-token slots (ids 0-999). The BPE merges are recovered from the
ranks (a token's merge is the split of it into two ranked parts), as
Hugging Face's tiktoken conversion does.
"""

from __future__ import annotations

import base64
import json
from functools import lru_cache
from pathlib import Path

from tests.zoo.gguf_tokenizer import CONTROL, NORMAL, GGUFVocab
from tests.zoo.sources import ZooUnavailable

# The ids Mistral's instruct tokenizers give their control tokens (the first 20
# are mistral-common's defaults for v3; the rest from v7/v11/v13 tokenizer.json
# files, from memory, not checked against a checkpoint: no hub here).
SPECIALS = {
    0: "<unk>", 1: "<s>", 2: "</s>", 3: "[INST]", 4: "[/INST]", 5: "[AVAILABLE_TOOLS]",
    6: "[/AVAILABLE_TOOLS]", 7: "[TOOL_RESULTS]", 8: "[/TOOL_RESULTS]", 9: "[TOOL_CALLS]", 10: "[IMG]",
    11: "<pad>", 12: "[IMG_BREAK]", 13: "[IMG_END]", 14: "[PREFIX]", 15: "[MIDDLE]", 16: "[SUFFIX]",
    17: "[SYSTEM_PROMPT]", 18: "[/SYSTEM_PROMPT]", 19: "[TOOL_CONTENT]", 32: "[ARGS]", 33: "[CALL_ID]",
    34: "[THINK]", 35: "[/THINK]",
}


def tekken_path() -> Path:
    try:
        import mistral_common
    except ImportError as e:
        raise ZooUnavailable("mistral-common is not installed (it ships the Tekken vocabulary)") from e
    return Path(mistral_common.__file__).parent / "data" / "tekken_240911.json"


def _byte_chars() -> dict[int, str]:
    """GPT-2's byte-to-character map (what byte-level BPE vocabularies spell bytes with)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


@lru_cache(maxsize=1)
def read_tekken(path: Path) -> GGUFVocab:
    data = json.loads(path.read_text(encoding="utf-8"))
    config = data["config"]
    specials = config["default_num_special_tokens"]
    size = config["default_vocab_size"] - specials
    ranked = [base64.b64decode(t["token_bytes"]) for t in data["vocab"][:size]]
    rank = {b: i for i, b in enumerate(ranked)}
    chars = _byte_chars()
    spell = ["".join(chars[b] for b in token) for token in ranked]
    merges = []
    for token in ranked:
        splits = sorted((rank[token[:k]], rank[token[k:]]) for k in range(1, len(token))
                        if token[:k] in rank and token[k:] in rank)
        merges += [f"{spell[left]} {spell[right]}" for left, right in splits]
    tokens = [SPECIALS.get(i, f"<SPECIAL_{i}>") for i in range(specials)] + spell
    return GGUFVocab(model="gpt2", pre="tekken", tokens=tokens,
                     types=[CONTROL] * specials + [NORMAL] * size, scores=[],
                     merges=merges, bos_id=1, eos_id=2, add_bos=True)
