"""The test-model zoo (tests/zoo): converted tokenizers reproduce llama.cpp's ids, and
each family's model dir loads in mlx-lm with what the real checkpoint reports."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.zoo import gguf_tokenizer
from tests.zoo.build import family, family_tokenizer
from tests.zoo.families import FAMILIES
from tests.zoo.sources import ZooUnavailable, models_dir, vocab_path
from tests.zoo.tekken import tekken_path

from .helpers import unavailable

BUILDABLE = [name for name, fam in FAMILIES.items() if not fam.unavailable]


@pytest.fixture(scope="module", autouse=True)
def llama_cpp_files() -> Path:
    try:
        return models_dir()
    except ZooUnavailable as e:
        unavailable(str(e))


def assert_cases(tok, vocab: str) -> None:
    if vocab == "tekken":
        return assert_tekken_cases(tok)
    cases = gguf_tokenizer.read_cases(vocab_path(vocab))
    assert len(cases) > 40
    wrong = [(text, want, got) for text, want in cases
             if (got := tok.encode(text, add_special_tokens=False).ids) != want]
    assert not wrong, f"{len(wrong)} of {len(cases)} differ, first: {wrong[0]!r}"


def assert_tekken_cases(tok) -> None:
    """Tekken has no .inp/.out pairs: mistral-common's own Tekkenizer is the reference,
    on the texts of llama.cpp's qwen2 cases (no special-token text in them)."""
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer

    reference = Tekkenizer.from_file(str(tekken_path()))
    texts = [text for text, _ in gguf_tokenizer.read_cases(vocab_path("qwen2")) if "[" not in text]
    assert len(texts) > 40
    wrong = [(text, want, got) for text in texts
             if (got := tok.encode(text, add_special_tokens=False).ids)
             != (want := reference.encode(text, bos=False, eos=False))]
    assert not wrong, f"{len(wrong)} of {len(texts)} differ, first: {wrong[0]!r}"


@pytest.mark.parametrize("vocab", ["qwen2", "qwen35", "llama-bpe", "phi-3", "llama-spm", "gemma-4"])
def test_converted_vocab_reproduces_llama_cpp_ids(vocab: str) -> None:
    converted = gguf_tokenizer.build_tokenizer(gguf_tokenizer.read_vocab(vocab_path(vocab)))
    assert_cases(converted, vocab)


def test_metadata_reader_agrees_with_the_gguf_package() -> None:
    from gguf import GGUFReader

    path = vocab_path("llama-spm")
    ours = gguf_tokenizer.read_metadata(path)
    fields = GGUFReader(str(path)).fields
    keys = [k for k in fields if k.startswith("tokenizer.")]
    assert "tokenizer.ggml.scores" in keys
    for key in keys:
        theirs = fields[key].contents()
        assert ours[key] == (list(theirs) if isinstance(theirs, list) else theirs), key


@pytest.mark.parametrize("name", BUILDABLE)
def test_family_tokenizer_keeps_vocab_ids_and_adds_its_own_tokens(name: str) -> None:
    fam = family(name)
    tok = family_tokenizer(fam)
    assert_cases(tok, fam.vocab)
    assert tok.get_vocab_size() % 64 == 0
    decoder = tok.get_added_tokens_decoder()
    for i, added in fam.added.items():
        assert (decoder[i].content, decoder[i].special) == (added.content, added.special), i
        assert tok.encode(f"a{added.content}b", add_special_tokens=False).ids.count(i) == 1


@pytest.mark.parametrize("name", ["mistral-nemo"])
def test_families_without_a_vocab_file_say_why(name: str) -> None:
    with pytest.raises(ZooUnavailable, match="superseded"):
        family(name)


@pytest.mark.parametrize("name", BUILDABLE)
def test_family_model_loads_and_reports_like_the_real_checkpoint(
        name: str, zoo_model: Callable[[str], Path]) -> None:
    import mlx_lm

    fam = family(name)
    path = zoo_model(name)
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == fam.architecture
    model, tokenizer = mlx_lm.load(str(path))
    assert sorted(tokenizer.eos_token_ids) == sorted(fam.eos_token_ids)
    module = tokenizer._tool_parser.__module__ if tokenizer.has_tool_calling else None
    assert module == (fam.expect.tool_parser and f"mlx_lm.tool_parsers.{fam.expect.tool_parser}")
    think = (tokenizer.think_start, tokenizer.think_end) if tokenizer.has_thinking else None
    assert think == fam.expect.think
    flags = {i: t.special for i, t in tokenizer._tokenizer.added_tokens_decoder.items()}
    assert {i: flags[i] for i in fam.added} == {i: a.special for i, a in fam.added.items()}
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}],
                                           add_generation_prompt=True)
    if fam.add_bos:
        assert prompt.count(tokenizer.bos_token_id) == 1
    text = mlx_lm.generate(model, tokenizer, prompt, max_tokens=4)
    assert text and all(i < config["vocab_size"] for i in tokenizer.encode(text))
