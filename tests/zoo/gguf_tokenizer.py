"""llama.cpp vocab-only GGUF → Hugging Face fast tokenizer, with the ``tokenizers`` library.

transformers' own GGUF loader needs torch, so the conversion is done here: a
byte-level BPE (``tokenizer.ggml.model == "gpt2"``) with the pre-tokenizer
regex llama.cpp uses for the file's pre-type, a SentencePiece-style BPE
(``"llama"``) with merges rebuilt from the piece scores and byte fallback, or
Gemma 4's BPE (``"gemma4"``: the file's own merges over raw UTF-8 with spaces
as U+2581 and byte fallback). The result must reproduce llama.cpp's own
``.inp``/``.out`` token ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# llama-vocab.cpp's split regexes per pre-type (its "adapted" forms, which
# spell out the case-insensitive contractions), and whether it ignores merges
# for words that are whole vocabulary entries.
_LLAMA3 = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2 = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN35 = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+"
    r"|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Mistral's Tekken (mistral-common's tekken_240911.json, config.pattern).
_TEKKEN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PRE_TOKENIZERS: dict[str, tuple[str, bool]] = {
    "tekken": (_TEKKEN, True),
    "llama-bpe": (_LLAMA3, True),
    "llama3": (_LLAMA3, True),
    "qwen2": (_QWEN2, False),
    "deepseek-r1-qwen": (_QWEN2, False),
    "qwen35": (_QWEN35, False),
}

# llama.cpp token types.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPM_SPACE = "\u2581"


@dataclass(frozen=True)
class Added:
    """An added token as Hugging Face declares it (``added_tokens_decoder``)."""

    content: str
    special: bool = True
    rstrip: bool = False
    lstrip: bool = False


@dataclass(frozen=True)
class GGUFVocab:
    """The tokenizer part of a llama.cpp GGUF file."""

    model: str
    pre: str
    tokens: list[str]
    types: list[int]
    scores: list[float]
    merges: list[str]
    bos_id: int | None
    eos_id: int | None
    add_bos: bool


def read_metadata(path: Path) -> dict:
    """The key/value header of a GGUF file.

    ``gguf.GGUFReader`` also parses the file, but builds a numpy view per
    array element: ~20 s for a 150k vocabulary on a small CPU, against well
    under a second for this plain walk over the same layout.
    """
    import struct

    from gguf import GGUF_MAGIC, GGUFValueType

    scalars = {
        GGUFValueType.UINT8: "B", GGUFValueType.INT8: "b", GGUFValueType.UINT16: "H",
        GGUFValueType.INT16: "h", GGUFValueType.UINT32: "I", GGUFValueType.INT32: "i",
        GGUFValueType.FLOAT32: "f", GGUFValueType.BOOL: "?", GGUFValueType.UINT64: "Q",
        GGUFValueType.INT64: "q", GGUFValueType.FLOAT64: "d",
    }
    data = path.read_bytes()
    magic, version, _tensors, count = struct.unpack_from("<IIQQ", data, 0)
    if magic != GGUF_MAGIC or version < 2:
        raise ValueError(f"{path} is not a little-endian GGUF v2+ file")
    pos = 24

    def string() -> str:
        nonlocal pos
        (n,) = struct.unpack_from("<Q", data, pos)
        pos += 8 + n
        return data[pos - n:pos].decode("utf-8")

    def value(kind: int):
        nonlocal pos
        kind = GGUFValueType(kind)
        if kind == GGUFValueType.STRING:
            return string()
        if kind == GGUFValueType.ARRAY:
            item, n = struct.unpack_from("<IQ", data, pos)
            pos += 12
            if item in scalars:
                fmt = f"<{n}{scalars[GGUFValueType(item)]}"
                out = list(struct.unpack_from(fmt, data, pos))
                pos += struct.calcsize(fmt)
                return out
            return [value(item) for _ in range(n)]
        fmt = "<" + scalars[kind]
        (out,) = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return out

    meta = {}
    for _ in range(count):
        key = string()
        (kind,) = struct.unpack_from("<I", data, pos)
        pos += 4
        meta[key] = value(kind)
    return meta


def read_vocab(path: Path) -> GGUFVocab:
    meta = read_metadata(path)
    model = meta["tokenizer.ggml.model"]
    pre = meta.get("tokenizer.ggml.pre", "default")
    return GGUFVocab(
        model=model,
        pre=pre,
        tokens=meta["tokenizer.ggml.tokens"],
        types=meta["tokenizer.ggml.token_type"],
        scores=meta.get("tokenizer.ggml.scores", []),
        merges=meta.get("tokenizer.ggml.merges", []),
        bos_id=meta.get("tokenizer.ggml.bos_token_id"),
        eos_id=meta.get("tokenizer.ggml.eos_token_id"),
        # llama.cpp's defaults when the key is absent: SPM and llama3 add BOS
        # (and Gemma 4 always does).
        add_bos=model == "gemma4" or bool(meta.get("tokenizer.ggml.add_bos_token",
                                                   model == "llama" or pre in ("llama-bpe", "llama3"))),
    )


def base_size(vocab: GGUFVocab) -> int:
    """Size of the model's own vocabulary: ids past the last normal or byte
    token are added tokens (llama.cpp stores them inline, HF apart)."""
    return 1 + max(i for i, t in enumerate(vocab.types) if t in (NORMAL, BYTE))


def gguf_added(vocab: GGUFVocab) -> dict[int, Added]:
    """The file's own control (special) and user-defined (non-special) tokens."""
    return {
        i: Added(tok, special=ty != USER_DEFINED)
        for i, (tok, ty) in enumerate(zip(vocab.tokens, vocab.types, strict=True))
        if ty in (CONTROL, USER_DEFINED) or (ty == UNKNOWN and i >= base_size(vocab))
    }


def build_tokenizer(vocab: GGUFVocab, added: Mapping[int, Added] | None = None,
                    bos: str | None = None):
    """A ``tokenizers.Tokenizer`` for ``vocab``.

    ``added`` (default: the file's own) gives every added token by id; ids must
    continue the base vocabulary without gaps. ``bos`` is prepended by the
    post-processor when set (as the real checkpoints' tokenizer.json do).
    """
    from tokenizers import AddedToken, processors

    added = dict(gguf_added(vocab) if added is None else added)
    size = base_size(vocab)
    if vocab.model == "gpt2":
        tok = _byte_level_bpe(vocab, size)
    elif vocab.model == "llama":
        tok = _sentencepiece_bpe(vocab, size)
    elif vocab.model == "gemma4":
        tok = _gemma4_bpe(vocab, size)
    else:
        raise ValueError(f"unsupported tokenizer model {vocab.model!r}")
    inside = {i: a for i, a in added.items() if i < size}
    outside = sorted(i for i in added if i >= size)
    if outside != list(range(size, size + len(outside))):
        raise ValueError("added token ids must continue the base vocabulary without gaps")
    tokens = [
        AddedToken(added[i].content, special=added[i].special, normalized=False,
                   rstrip=added[i].rstrip, lstrip=added[i].lstrip)
        for i in [*sorted(inside), *outside]
    ]
    tok.add_tokens(tokens)
    for i, a in added.items():
        if tok.token_to_id(a.content) != i:
            raise ValueError(f"added token {a.content!r} landed on "
                             f"{tok.token_to_id(a.content)}, not {i}")
    steps = [processors.ByteLevel(trim_offsets=False)] if vocab.model == "gpt2" else []
    if bos is not None:
        bos_id = tok.token_to_id(bos)
        steps.append(processors.TemplateProcessing(
            single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
            special_tokens=[(bos, bos_id)]))
    if steps:
        tok.post_processor = processors.Sequence(steps)
    return tok


def _byte_level_bpe(vocab: GGUFVocab, size: int):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    if vocab.pre not in PRE_TOKENIZERS:
        raise ValueError(f"no split regex known for pre-tokenizer {vocab.pre!r}")
    pattern, ignore_merges = PRE_TOKENIZERS[vocab.pre]
    merges = [tuple(m.split(" ", 1)) for m in vocab.merges]
    model = models.BPE({t: i for i, t in enumerate(vocab.tokens[:size])}, merges,
                       ignore_merges=ignore_merges)
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok


def _sentencepiece_bpe(vocab: GGUFVocab, size: int):
    """llama.cpp's SPM tokenizer merges the adjacent pair whose union has the
    best score; a BPE whose merges are ranked by that score does the same."""
    from tokenizers import Tokenizer, decoders, models, normalizers

    pieces = {t: i for i, t in enumerate(vocab.tokens[:size])}
    normal = {t for t, ty in zip(vocab.tokens[:size], vocab.types[:size], strict=True)
              if ty == NORMAL}
    ranked = []
    for piece in normal:
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in normal and right in normal:
                ranked.append((-vocab.scores[pieces[piece]], pieces[left], pieces[right],
                               left, right))
    ranked.sort()
    model = models.BPE(pieces, [(r[3], r[4]) for r in ranked],
                       unk_token="<unk>" if "<unk>" in pieces else None,
                       byte_fallback=True, fuse_unk=True)
    tok = Tokenizer(model)
    # llama.cpp prefixes a space to every text fragment that follows a special
    # token (or starts the text) and writes spaces as U+2581.
    tok.normalizer = normalizers.Sequence([
        normalizers.Prepend(SPM_SPACE), normalizers.Replace(" ", SPM_SPACE)])
    tok.decoder = decoders.Sequence([
        decoders.Replace(SPM_SPACE, " "), decoders.ByteFallback(), decoders.Fuse(),
        decoders.Strip(" ", 1, 0)])
    return tok


def _gemma4_bpe(vocab: GGUFVocab, size: int):
    """llama.cpp's gemma4 pre-type: spaces become U+2581 (no prefix space), lines
    and runs of newlines are split apart, then the file's merges run on raw
    UTF-8; a piece outside the vocabulary falls back to ``<0xXX>`` tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    def pair(merge: str) -> tuple[str, str]:
        cut = merge.find(" ", 1)  # as llama.cpp splits: a piece may start with a space
        return merge[:cut], merge[cut + 1:]

    model = models.BPE({t: i for i, t in enumerate(vocab.tokens[:size])},
                       [pair(m) for m in vocab.merges], byte_fallback=True)
    tok = Tokenizer(model)
    tok.normalizer = normalizers.Replace(" ", SPM_SPACE)
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[^\n]+|\n+"), behavior="isolated")
    tok.decoder = decoders.Sequence([
        decoders.Replace(SPM_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()])
    return tok


def read_cases(gguf_path: Path) -> list[tuple[str, list[int]]]:
    """llama.cpp's test pairs for a vocab file (test-tokenizer-0's format)."""
    raw = Path(f"{gguf_path}.inp").read_text(encoding="utf-8")
    outs = Path(f"{gguf_path}.out").read_text(encoding="utf-8").split("\n")
    texts = raw.split("\n__ggml_vocab_test__\n")
    if texts and texts[-1] == "":
        texts.pop()
    return [(text, [int(x) for x in out.split()]) for text, out in zip(texts, outs, strict=False)]
