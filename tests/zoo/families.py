"""Per-family specs: vocabulary file, chat template, added tokens, EOS ids, architecture.

Each family's tokenizer is a llama.cpp vocab file with the family's *own*
added tokens at their real ids and with their real special flags (several
vocab files come from an older sibling: ``qwen2`` is Qwen1.5's, ``llama-bpe``
is Llama 3's), so that a test model behaves like the real checkpoint in
everything but its weights.

What mlx-lm's ``TokenizerWrapper`` reports for each built model (tool parser,
thinking markers) is each family's ``expect``, checked by tests/test_zoo_tokenizers.py.

Hermes 3 has *named* templates ("default" ChatML and "tool_use"); transformers then
exposes ``chat_template`` as a dict, and mlx-lm infers tool parsers only from a
string template, so it reports no tool calling although the model writes
``<tool_call>`` JSON. Llama 3.1 has no tool format mlx-lm knows (bare JSON).

"""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.zoo.gguf_tokenizer import Added
from tests.zoo.tekken import SPECIALS

_QWEN_COMMON = {
    151643: Added("<|endoftext|>"),
    151644: Added("<|im_start|>"),
    151645: Added("<|im_end|>"),
}

# Qwen3's 26 added tokens (Qwen2.5's 22 plus tool responses and thinking);
# the tool and thinking tags and FIM/repo tokens are NOT special.
QWEN3_ADDED = {
    **_QWEN_COMMON,
    151646: Added("<|object_ref_start|>"),
    151647: Added("<|object_ref_end|>"),
    151648: Added("<|box_start|>"),
    151649: Added("<|box_end|>"),
    151650: Added("<|quad_start|>"),
    151651: Added("<|quad_end|>"),
    151652: Added("<|vision_start|>"),
    151653: Added("<|vision_end|>"),
    151654: Added("<|vision_pad|>"),
    151655: Added("<|image_pad|>"),
    151656: Added("<|video_pad|>"),
    151657: Added("<tool_call>", special=False),
    151658: Added("</tool_call>", special=False),
    151659: Added("<|fim_prefix|>", special=False),
    151660: Added("<|fim_middle|>", special=False),
    151661: Added("<|fim_suffix|>", special=False),
    151662: Added("<|fim_pad|>", special=False),
    151663: Added("<|repo_name|>", special=False),
    151664: Added("<|file_sep|>", special=False),
    151665: Added("<tool_response>", special=False),
    151666: Added("</tool_response>", special=False),
    151667: Added("<think>", special=False),
    151668: Added("</think>", special=False),
}

# DeepSeek-R1-Distill-Qwen: Qwen2.5's vocabulary with DeepSeek's own turn
# markers (fullwidth bars, U+2581 spaces) at 151643-151649.
DEEPSEEK_R1_QWEN_ADDED = {
    151643: Added("<\uff5cend\u2581of\u2581sentence\uff5c>"),
    151644: Added("<\uff5cUser\uff5c>", special=False),
    151645: Added("<\uff5cAssistant\uff5c>", special=False),
    151646: Added("<\uff5cbegin\u2581of\u2581sentence\uff5c>"),
    151647: Added("<|EOT|>", special=False),
    151648: Added("<think>", special=False),
    151649: Added("</think>", special=False),
    151650: Added("<|quad_start|>"),
    151651: Added("<|quad_end|>"),
    151652: Added("<|vision_start|>"),
    151653: Added("<|vision_end|>"),
    151654: Added("<|vision_pad|>"),
    151655: Added("<|image_pad|>"),
    151656: Added("<|video_pad|>"),
    151657: Added("<tool_call>", special=False),
    151658: Added("</tool_call>", special=False),
    151659: Added("<|fim_prefix|>", special=False),
    151660: Added("<|fim_middle|>", special=False),
    151661: Added("<|fim_suffix|>", special=False),
    151662: Added("<|fim_pad|>", special=False),
    151663: Added("<|repo_name|>", special=False),
    151664: Added("<|file_sep|>", special=False),
}


def _llama31_added() -> dict[int, Added]:
    """Llama 3.1's 256 control tokens: 3.0's, with three reserved slots named
    and the remaining reserved ones renumbered."""
    names = {
        128000: "<|begin_of_text|>", 128001: "<|end_of_text|>",
        128002: "<|reserved_special_token_0|>", 128003: "<|reserved_special_token_1|>",
        128004: "<|finetune_right_pad_id|>", 128005: "<|reserved_special_token_2|>",
        128006: "<|start_header_id|>", 128007: "<|end_header_id|>",
        128008: "<|eom_id|>", 128009: "<|eot_id|>", 128010: "<|python_tag|>",
    }
    names.update({i: f"<|reserved_special_token_{i - 128008}|>" for i in range(128011, 128256)})
    return {i: Added(name) for i, name in names.items()}


LLAMA31_ADDED = _llama31_added()

# Hermes 3 (Llama 3.1 base): ChatML turn markers and tool tags in reserved
# slots. The slots of the tool tags are from memory, not checked against the
# checkpoint (no hub here); what tests rely on is that each tag is one
# non-special token and <|im_end|> (128040) ends a turn.
HERMES3_ADDED = {
    **LLAMA31_ADDED,
    128002: Added("<tool_call>", special=False),
    128003: Added("<tool_response>", special=False),
    128004: Added("<tools>", special=False),
    128011: Added("</tool_call>", special=False),
    128012: Added("</tool_response>", special=False),
    128013: Added("</tools>", special=False),
    128039: Added("<|im_start|>"),
    128040: Added("<|im_end|>"),
}

# Phi-3.5-mini: Llama 2's SentencePiece vocabulary; its chat markers strip
# the whitespace that follows them, and </s> is not special.
PHI35_ADDED = {
    0: Added("<unk>"),
    1: Added("<s>"),
    2: Added("</s>", special=False, rstrip=True),
    32000: Added("<|endoftext|>"),
    **{i: Added(name, rstrip=True) for i, name in {
        32001: "<|assistant|>", 32002: "<|placeholder1|>", 32003: "<|placeholder2|>",
        32004: "<|placeholder3|>", 32005: "<|placeholder4|>", 32006: "<|system|>",
        32007: "<|end|>", 32008: "<|placeholder5|>", 32009: "<|placeholder6|>",
        32010: "<|user|>"}.items()},
}


# gpt-oss (harmony): o200k_harmony's special tokens, at their offsets from
# 199998, placed after Llama 3's 128000 byte-level BPE tokens (the stand-in
# vocabulary: o200k itself is not available offline).
_HARMONY_BASE = 128000
GPT_OSS_ADDED = {
    _HARMONY_BASE + offset: Added(name) for offset, name in {
        0: "<|startoftext|>", 1: "<|endoftext|>", 2: "<|reserved_200000|>", 3: "<|reserved_200001|>",
        4: "<|return|>", 5: "<|constrain|>", 6: "<|reserved_200004|>", 7: "<|channel|>",
        8: "<|start|>", 9: "<|end|>", 10: "<|message|>", 11: "<|reserved_200009|>",
        12: "<|reserved_200010|>", 13: "<|reserved_200011|>", 14: "<|call|>",
        15: "<|reserved_200013|>", 16: "<|reserved_200014|>", 17: "<|reserved_200015|>",
        18: "<|reserved_200016|>", 19: "<|reserved_200017|>", 20: "<|endofprompt|>",
    }.items()
}


# Stand-ins on Qwen2's byte-level BPE (151643 tokens) for families whose vocabulary
# llama.cpp does not ship: the family's own control tokens, at ids after the base
# (not the real checkpoints' ids), with the real special flags where known.
_STANDIN = 151643
KIMI_K2_ADDED = {_STANDIN + i: Added(name) for i, name in enumerate([
    "[BOS]", "[EOS]", "<|im_end|>", "<|im_user|>", "<|im_assistant|>", "<|im_system|>", "<|im_middle|>",
    "<|media_start|>", "<|media_content|>", "<|media_end|>", "<|media_pad|>",
    "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>", "<|tool_call_begin|>",
    "<|tool_call_argument_begin|>", "<|tool_call_end|>"])}
DEEPSEEK_V31_ADDED = {_STANDIN + i: Added(name, special=special) for i, (name, special) in enumerate([
    ("<\uff5cbegin\u2581of\u2581sentence\uff5c>", True), ("<\uff5cend\u2581of\u2581sentence\uff5c>", True),
    ("<\uff5cUser\uff5c>", False), ("<\uff5cAssistant\uff5c>", False), ("<think>", False),
    ("</think>", False), ("<\uff5ctool\u2581calls\u2581begin\uff5c>", True),
    ("<\uff5ctool\u2581calls\u2581end\uff5c>", True), ("<\uff5ctool\u2581call\u2581begin\uff5c>", True),
    ("<\uff5ctool\u2581call\u2581end\uff5c>", True), ("<\uff5ctool\u2581sep\uff5c>", True),
    ("<\uff5ctool\u2581output\u2581begin\uff5c>", False), ("<\uff5ctool\u2581output\u2581end\uff5c>", False)])}
MINIMAX_M2_ADDED = {_STANDIN + i: Added(name, special=special) for i, (name, special) in enumerate([
    ("]~!b[", True), ("]~b]", True), ("[e~[", True), ("<minimax:tool_call>", False),
    ("</minimax:tool_call>", False), ("<think>", False), ("</think>", False)])}
# GLM-4.5/4.6/4.7: turn markers (control) and tags (plain added tokens; flags not checked).
GLM47_ADDED = {_STANDIN + i: Added(name, special=special) for i, (name, special) in enumerate([
    ("<|endoftext|>", True), ("[MASK]", True), ("[gMASK]", True), ("[sMASK]", True), ("<sop>", True),
    ("<eop>", True), ("<|system|>", True), ("<|user|>", True), ("<|assistant|>", True),
    ("<|observation|>", True), ("<think>", False), ("</think>", False), ("<tool_call>", False),
    ("</tool_call>", False), ("<tool_response>", False), ("</tool_response>", False),
    ("<arg_key>", False), ("</arg_key>", False), ("<arg_value>", False), ("</arg_value>", False)])}
_STANDIN_CONFIG = {"rope_theta": 1000000.0, "max_position_embeddings": 131072}


# Granite 4.0: its control tokens (special) and tool tags (plain added tokens), at ids
# after Llama 3's 128000 BPE tokens (the stand-in for its 100k cl100k-style vocabulary).
_GRANITE_BASE = 128000
GRANITE4_ADDED = {_GRANITE_BASE + i: Added(name, special=special) for i, (name, special) in enumerate([
    ("<|pad|>", True), ("<|end_of_text|>", True), ("<|fim_prefix|>", True), ("<|fim_middle|>", True),
    ("<|fim_suffix|>", True), ("<|fim_pad|>", True), ("<|filename|>", True), ("<|reponame|>", True),
    ("<|start_of_role|>", True), ("<|end_of_role|>", True), ("<|tool_call|>", True),
    ("<tool_call>", False), ("</tool_call>", False), ("<tool_response>", False), ("</tool_response>", False)])}


# Tekken's 1000 control-token slots (tests/zoo/tekken.py names the known ones).
TEKKEN_ADDED = {i: Added(SPECIALS.get(i, f"<SPECIAL_{i}>")) for i in range(1000)}

_MISTRAL_CONFIG = {"rope_theta": 1000000000.0, "max_position_embeddings": 131072,
                   "bos_token_id": 1, "eos_token_id": 2}


# Gemma 4: the vocab file's own control (special) and user-defined (not special)
# tokens, at their real ids: the turn, tool and thinking markers the template
# writes are among them (<|tool_call>, <|"|>, <|channel> are user-defined).
GEMMA4_ADDED = {i: Added(name, special=special) for i, (name, special) in {
    0: ("<pad>", True), 1: ("<eos>", True), 2: ("<bos>", True), 3: ("<unk>", True), 4: ("<mask>", True),
    46: ("<|tool>", True), 47: ("<tool|>", True), 48: ("<|tool_call>", False), 49: ("<tool_call|>", False),
    50: ("<|tool_response>", False), 51: ("<tool_response|>", False), 52: ('<|"|>', False),
    98: ("<|think|>", True), 100: ("<|channel>", False), 101: ("<channel|>", False),
    105: ("<|turn>", True), 106: ("<turn|>", True), 255999: ("<|image>", True), 256000: ("<|audio>", True),
    258880: ("<|image|>", True), 258881: ("<|audio|>", True), 258882: ("<image|>", True),
    258883: ("<audio|>", True), 258884: ("<|video|>", True)}.items()}


# Hermes' "default" template (plain ChatML); llama.cpp ships only its "tool_use" one.
CHATML = (
    "{{bos_token}}{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class Expect:
    """What mlx-lm's TokenizerWrapper reports for the family (see the table above)."""

    tool_parser: str | None
    think: tuple[str, str] | None


@dataclass(frozen=True)
class Family:
    name: str
    vocab: str                      # ggml-vocab-<vocab>.gguf
    template: str                   # models/templates/<template>
    architecture: str               # mlx_lm.models.<architecture>
    added: dict[int, Added]         # every added token of the real tokenizer, by id
    bos_token: str | None
    eos_token: str
    pad_token: str | None
    eos_token_ids: list[int]        # generation_config.json
    add_bos: bool                   # tokenizer.json's post-processor prepends bos_token
    expect: Expect
    config: dict = field(default_factory=dict)
    unk_token: str | None = None
    # A checkpoint with named templates: this one is "default", ``template`` is "tool_use".
    default_template: str | None = None
    unavailable: str | None = None  # why this family cannot be built (tests skip)
    notes: str = ""


FAMILIES: dict[str, Family] = {f.name: f for f in [
    Family(
        name="qwen3", vocab="qwen2", template="Qwen-Qwen3-0.6B.jinja", architecture="qwen3",
        added=QWEN3_ADDED, bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        eos_token_ids=[151645, 151643], add_bos=False,
        expect=Expect("json_tools", ("<think>", "</think>")),
        config={"rope_theta": 1000000.0, "max_position_embeddings": 40960,
                "bos_token_id": 151643, "eos_token_id": 151645},
        notes="Roles: system, user, assistant, tool (consecutive tool messages become one "
              "user turn of <tool_response> blocks); developer and ipython are silently "
              "dropped. String arguments are written as is, dicts via tojson. "
              "enable_thinking=False adds an empty <think></think>; reasoning of assistant "
              "turns before the last user query is dropped.",
    ),
    Family(
        name="qwen3-coder", vocab="qwen2", template="Qwen3-Coder.jinja", architecture="qwen3",
        added=QWEN3_ADDED, bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        eos_token_ids=[151645, 151643], add_bos=False,
        expect=Expect("qwen3_coder", ("<think>", "</think>")),
        config={"rope_theta": 10000000.0, "max_position_embeddings": 262144,
                "bos_token_id": 151643, "eos_token_id": 151645},
        notes="Qwen3's tokenizer (the real Qwen3-Coder ships the same 26 added tokens) with "
              "Qwen3-Coder's template; architecture qwen3 stands in for qwen3_moe. Tools are "
              "listed as XML; calls are <tool_call><function=NAME><parameter=KEY>VALUE"
              "</parameter></function></tool_call>, values bare text. The template has no "
              "thinking, but the vocabulary's <think> makes mlx-lm report it.",
    ),
    Family(
        name="qwen3.5", vocab="qwen35", template="Qwen3.5-4B.jinja", architecture="qwen3",
        added=QWEN3_ADDED, bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        eos_token_ids=[151645, 151643], add_bos=False,
        expect=Expect("qwen3_coder", ("<think>", "</think>")),
        config={"rope_theta": 10000000.0, "max_position_embeddings": 262144,
                "bos_token_id": 151643, "eos_token_id": 151645},
        notes="llama.cpp's qwen35 vocab file (Qwen3.5's pre-tokenizer on Qwen2's 151643 "
              "merges) with Qwen3's added tokens at Qwen3's ids as a stand-in (the real "
              "checkpoint's added tokens are not in the file); architecture qwen3 stands in "
              "for the hybrid qwen3_5. Calls are Qwen3-Coder's XML; the generation prompt "
              "opens <think>\\n unless enable_thinking is false.",
    ),
    Family(
        name="llama3.1", vocab="llama-bpe", template="meta-llama-Llama-3.1-8B-Instruct.jinja",
        architecture="llama", added=LLAMA31_ADDED, bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>", pad_token=None, eos_token_ids=[128001, 128008, 128009],
        add_bos=True, expect=Expect(None, None),
        config={"rope_theta": 500000.0, "max_position_embeddings": 131072,
                "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                 "original_max_position_embeddings": 8192,
                                 "rope_type": "llama3"},
                "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009]},
        notes="Roles: system, user, assistant; tool and ipython both render as an ipython "
              "turn whose content goes through tojson (a string arrives quoted); any other "
              "role (developer) is written as its own header. Tools go into the first user "
              "message by default (tools_in_user_message). An assistant turn takes exactly one "
              "tool call (more raise TemplateError), rendered as {\"name\", \"parameters\"} "
              "JSON, string arguments JSON-encoded again; builtin_tools switch to "
              "<|python_tag|> and <|eom_id|>. The template emits bos_token itself.",
    ),
    Family(
        name="hermes3", vocab="llama-bpe",
        template="NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja", architecture="llama",
        added=HERMES3_ADDED, bos_token="<|begin_of_text|>", eos_token="<|im_end|>",
        pad_token=None, eos_token_ids=[128040], add_bos=True,
        expect=Expect(None, None), default_template=CHATML,
        config={"rope_theta": 500000.0, "max_position_embeddings": 131072,
                "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                 "original_max_position_embeddings": 8192,
                                 "rope_type": "llama3"},
                "bos_token_id": 128000, "eos_token_id": 128040},
        notes="Two named templates. default (no tools): plain ChatML of any role (developer "
              "and ipython included); assistant tool_calls are dropped. tool_use (llama.cpp's "
              "file, chosen by transformers when tools are given): a tools system prompt, "
              "then a system message as a second system turn; roles system, user, assistant, "
              "tool (a 'tool' turn of <tool_response> blocks); developer and ipython dropped. "
              "No thinking.",
    ),
    Family(
        name="deepseek-r1-qwen", vocab="qwen2",
        template="deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", architecture="qwen2",
        added=DEEPSEEK_R1_QWEN_ADDED, bos_token="<\uff5cbegin\u2581of\u2581sentence\uff5c>",
        eos_token="<\uff5cend\u2581of\u2581sentence\uff5c>",
        pad_token="<\uff5cend\u2581of\u2581sentence\uff5c>", eos_token_ids=[151643],
        add_bos=True, expect=Expect(None, ("<think>", "</think>")),
        config={"rope_theta": 10000.0, "max_position_embeddings": 131072,
                "bos_token_id": 151643, "eos_token_id": 151643},
        notes="The generation prompt opens <think>\\n; llama.cpp's copy closes it at once "
              "unless enable_thinking is truthy (mlx-lm passes enable_thinking=True; plain "
              "transformers does not). The system prompt is written bare after BOS; roles: "
              "system, user, assistant, tool; developer and ipython dropped. The tools "
              "argument is ignored (no definitions rendered). Tool calls use DeepSeek's "
              "<｜tool▁calls▁begin｜> markers, plain text in this vocabulary, string "
              "arguments JSON-encoded again; after tool results no generation prompt is "
              "added. Reasoning is dropped from past assistant turns.",
    ),
    Family(
        name="phi3.5", vocab="phi-3", template="microsoft-Phi-3.5-mini-instruct.jinja",
        architecture="phi3", added=PHI35_ADDED, bos_token="<s>", eos_token="<|endoftext|>",
        pad_token="<|endoftext|>", unk_token="<unk>", eos_token_ids=[32007, 32001, 32000],
        add_bos=False, expect=Expect(None, None),
        config={"rope_theta": 10000.0, "max_position_embeddings": 131072,
                "original_max_position_embeddings": 4096,
                "bos_token_id": 1, "eos_token_id": 32000},
        notes="SentencePiece vocabulary with byte fallback (SPM detokenizer in mlx-lm). Roles: "
              "system (skipped when empty), user, assistant; any other role (tool, developer, "
              "ipython) is silently dropped, and so are tools and tool_calls. Without "
              "add_generation_prompt it ends with eos_token.",
    ),
    Family(
        name="gpt-oss", vocab="llama-bpe", template="openai-gpt-oss-120b.jinja",
        architecture="gpt_oss", added=GPT_OSS_ADDED, bos_token="<|startoftext|>",
        eos_token="<|return|>", pad_token="<|endoftext|>",
        eos_token_ids=[_HARMONY_BASE + 4, _HARMONY_BASE + 1, _HARMONY_BASE + 14], add_bos=False,
        expect=Expect(None, None),
        config={"rope_theta": 150000, "max_position_embeddings": 131072, "num_local_experts": 4,
                "num_experts_per_tok": 2, "sliding_window": 128,
                "layer_types": ["sliding_attention", "full_attention"],
                "bos_token_id": _HARMONY_BASE, "eos_token_id": _HARMONY_BASE + 4},
        notes="Harmony's special tokens on Llama 3's byte-level BPE (stand-in for o200k); "
              "mlx-lm's gpt_oss architecture (4 experts). The generation prompt is "
              "<|start|>assistant; the model writes <|channel|>analysis<|message|>…<|end|> "
              "(reasoning), then <|start|>assistant<|channel|>final<|message|>…<|return|>, or a "
              "call <|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{…}"
              "<|call|>. The template renders past calls as <|start|>assistant "
              "to=functions.NAME<|channel|>commentary json<|message|>…<|call|> and results as "
              "<|start|>functions.NAME to=assistant<|channel|>commentary<|message|>…<|end|>. "
              "reasoning_effort (low/medium/high) goes into the system message. mlx-lm "
              "reports neither tool calling nor thinking: the server reads harmony itself.",
    ),
    Family(
        name="qwq", vocab="qwen2", template="Qwen-QwQ-32B.jinja", architecture="qwen2",
        added=QWEN3_ADDED, bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        eos_token_ids=[151645, 151643], add_bos=False,
        expect=Expect("json_tools", ("<think>", "</think>")),
        config={"rope_theta": 1000000.0, "max_position_embeddings": 40960,
                "bos_token_id": 151643, "eos_token_id": 151645},
        notes="Qwen2.5's vocabulary with the 26 added tokens QwQ shares with Qwen3. The "
              "generation prompt opens <think>\\n (closed at once when enable_thinking is "
              "false); calls are Hermes-style <tool_call> JSON.",
    ),
    Family(
        name="kimi-k2", vocab="qwen2", template="moonshotai-Kimi-K2.jinja", architecture="qwen3",
        added=KIMI_K2_ADDED, bos_token="[BOS]", eos_token="<|im_end|>", pad_token="[EOS]",
        eos_token_ids=[_STANDIN + 2], add_bos=False, expect=Expect("kimi_k2", None),
        config={**_STANDIN_CONFIG, "bos_token_id": _STANDIN, "eos_token_id": _STANDIN + 2},
        notes="Stand-in: Qwen2's BPE for Kimi's tiktoken vocabulary, Kimi-K2's control "
              "tokens after it; architecture qwen3 stands in for deepseek_v3/kimi. Calls: "
              "<|tool_calls_section_begin|><|tool_call_begin|>functions.NAME:IDX"
              "<|tool_call_argument_begin|>{json}<|tool_call_end|><|tool_calls_section_end|>; "
              "results as '## Return of ID' tool turns. No thinking.",
    ),
    Family(
        name="deepseek-v3.1", vocab="qwen2", template="deepseek-ai-DeepSeek-V3.1.jinja",
        architecture="qwen3", added=DEEPSEEK_V31_ADDED,
        bos_token="<\uff5cbegin\u2581of\u2581sentence\uff5c>",
        eos_token="<\uff5cend\u2581of\u2581sentence\uff5c>",
        pad_token="<\uff5cend\u2581of\u2581sentence\uff5c>", eos_token_ids=[_STANDIN + 1],
        add_bos=True, expect=Expect(None, ("<think>", "</think>")),
        config={**_STANDIN_CONFIG, "bos_token_id": _STANDIN, "eos_token_id": _STANDIN + 1},
        notes="Stand-in: Qwen2's BPE for DeepSeek-V3's vocabulary, its turn, thinking and "
              "tool markers after it (tool markers as control tokens); architecture qwen3 "
              "stands in for deepseek_v3. thinking (or enable_thinking) defaults to off: the "
              "prompt ends <｜Assistant｜></think>. Calls: <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>"
              "NAME<｜tool▁sep｜>{json}<｜tool▁call▁end｜><｜tool▁calls▁end｜>; mlx-lm knows "
              "no parser for it, the server reads it.",
    ),
    Family(
        name="minimax-m2", vocab="qwen2", template="MiniMax-M2.jinja", architecture="qwen3",
        added=MINIMAX_M2_ADDED, bos_token="]~!b[", eos_token="[e~[", pad_token="[e~[",
        eos_token_ids=[_STANDIN + 2], add_bos=False,
        expect=Expect("minimax_m2", ("<think>", "</think>")),
        config={**_STANDIN_CONFIG, "bos_token_id": _STANDIN, "eos_token_id": _STANDIN + 2},
        notes="Stand-in: Qwen2's BPE for MiniMax's vocabulary, its turn markers (control) and "
              "tool/thinking tags (plain added tokens, flags not checked) after it; "
              "architecture qwen3 stands in for minimax. The generation prompt opens "
              "<think>\\n. Calls: <minimax:tool_call>\\n<invoke name=\"NAME\">\\n"
              "<parameter name=\"KEY\">VALUE</parameter>\\n</invoke>\\n</minimax:tool_call>.",
    ),
    Family(
        name="glm-4.7", vocab="qwen2", template="GLM-4.7-Flash.jinja", architecture="qwen3",
        added=GLM47_ADDED, bos_token=None, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
        eos_token_ids=[_STANDIN, _STANDIN + 7, _STANDIN + 9], add_bos=False,
        expect=Expect("glm47", ("<think>", "</think>")),
        config={**_STANDIN_CONFIG, "eos_token_id": [_STANDIN, _STANDIN + 7, _STANDIN + 9]},
        notes="Stand-in: Qwen2's BPE for GLM's vocabulary, GLM's 20 added tokens after it (not "
              "at GLM's ids 151329+); the turn markers [gMASK] <sop> <|system|> <|user|> "
              "<|assistant|> <|observation|> are control tokens, the thinking, tool and "
              "<arg_key>/<arg_value> tags plain added tokens (flags not checked against the "
              "checkpoint). EOS: <|endoftext|>, <|user|>, <|observation|> (GLM's "
              "generation_config). Architecture qwen3 stands in for glm4_moe. The template "
              "writes [gMASK]<sop> itself; the generation prompt opens <think> (thinking on by "
              "default), enable_thinking=false writes </think>. Calls: <tool_call>NAME"
              "<arg_key>KEY</arg_key><arg_value>VALUE</arg_value>…</tool_call>, string values "
              "bare, others JSON; results are <|observation|><tool_response>…</tool_response>.",
    ),
    Family(
        name="granite-4", vocab="llama-bpe", template="ibm-granite-granite-4.0.jinja",
        architecture="granite", added=GRANITE4_ADDED, bos_token="<|end_of_text|>",
        eos_token="<|end_of_text|>", pad_token="<|pad|>", eos_token_ids=[_GRANITE_BASE + 1],
        add_bos=False, expect=Expect("json_tools", None),
        config={"rope_theta": 10000000.0, "max_position_embeddings": 131072, "logits_scaling": 1.0,
                "attention_multiplier": 0.25, "embedding_multiplier": 1.0, "residual_multiplier": 1.0,
                "attention_bias": False, "mlp_bias": False,
                "bos_token_id": _GRANITE_BASE + 1, "eos_token_id": _GRANITE_BASE + 1,
                "pad_token_id": _GRANITE_BASE},
        notes="Stand-in: Llama 3's byte-level BPE (llama-bpe), whose first 100k tokens and split "
              "regex are cl100k's, the base Granite 4.0's 100k vocabulary comes from (gpt-2, "
              "refact and starcoder are older 50k vocabularies: StarCoder's is Granite 3's); "
              "Granite's control tokens (<|end_of_text|>, <|start_of_role|>, <|end_of_role|>, "
              "<|tool_call|>, FIM, pad) after it at 128000+, not at Granite's ids. <tool_call>, "
              "</tool_call>, <tool_response>, </tool_response> as plain added tokens: whether "
              "the real tokenizer has them, and its flags, are not checked. mlx-lm's granite "
              "architecture (multipliers neutral) stands in for granitemoehybrid. Turns: "
              "<|start_of_role|>ROLE<|end_of_role|>…<|end_of_text|>, a default system message "
              "when none is given; calls are <tool_call>\\n{\"name\", \"arguments\"}\\n"
              "</tool_call> JSON; results go back as a user turn of <tool_response> blocks. "
              "No thinking.",
    ),
    Family(
        name="devstral", vocab="tekken", template="unsloth-mistral-Devstral-Small-2507.jinja",
        architecture="llama", added=TEKKEN_ADDED, bos_token="<s>", eos_token="</s>",
        pad_token="<pad>", unk_token="<unk>", eos_token_ids=[2], add_bos=True,
        expect=Expect("mistral", None), config=_MISTRAL_CONFIG,
        notes="Tekken (mistral-common's tekken_240911.json: the real 131072-token vocabulary, "
              "control tokens 0-999; [ARGS]/[CALL_ID]/[THINK] ids from memory) with Devstral "
              "Small 2507's template; architecture llama stands in for mistral. Tools go in "
              "[AVAILABLE_TOOLS] before the last user turn; calls are "
              "[TOOL_CALLS]NAME[ARGS]{json}, results [TOOL_RESULTS]…[/TOOL_RESULTS]. No thinking.",
    ),
    Family(
        name="ministral3-reasoning", vocab="tekken",
        template="mistralai-Ministral-3-14B-Reasoning-2512.jinja", architecture="llama",
        added=TEKKEN_ADDED, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        unk_token="<unk>", eos_token_ids=[2], add_bos=True, expect=Expect("mistral", None),
        config=_MISTRAL_CONFIG,
        notes="Tekken as for devstral, with Ministral 3 Reasoning's template: a default "
              "system prompt asks for [THINK]…[/THINK] first (control tokens mlx-lm does "
              "not look for; the server does); calls are [TOOL_CALLS]NAME[ARGS]{json}.",
    ),
    Family(
        name="gemma-4", vocab="gemma-4", template="google-gemma-4-31B-it.jinja",
        architecture="gemma3_text", added=GEMMA4_ADDED, bos_token="<bos>", eos_token="<eos>",
        pad_token="<pad>", unk_token="<unk>", eos_token_ids=[1, 106, 50], add_bos=True,
        expect=Expect("gemma4", ("<|channel>thought", "<channel|>")),
        config={"rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "max_position_embeddings": 131072,
                "query_pre_attn_scalar": 16, "sliding_window": 512, "sliding_window_pattern": 2,
                "bos_token_id": 2, "eos_token_id": 1},
        notes="llama.cpp's Gemma 4 vocabulary (262144 tokens, its own BPE merges, byte "
              "fallback) and Gemma 4 31B's template; architecture gemma3_text stands in for "
              "gemma4 (EOS ids: <eos>, <turn|> and <|tool_response>, llama.cpp's end-of-"
              "generation set). Turns are <|turn>ROLE\n…<turn|> (assistant is 'model'; tool "
              "messages render as a 'tool' turn). Tools are declared in the system turn as "
              "<|tool>declaration:NAME{…}<tool|>; calls are <|tool_call>call:NAME{key:VALUE,…}"
              "<tool_call|>, keys sorted and bare, strings between <|\"|> tokens. Thinking: "
              "enable_thinking puts <|think|> in the system turn and the model writes "
              "<|channel>thought\n…<channel|>; with it off the generation prompt closes an "
              "empty block.",
    ),
    Family(
        name="mistral-nemo", vocab="", template="mistralai-Mistral-Nemo-Instruct-2407.jinja",
        architecture="mistral", added={}, bos_token="<s>", eos_token="</s>", pad_token=None,
        eos_token_ids=[], add_bos=True, expect=Expect("mistral", None),
        unavailable="superseded by devstral (Tekken from mistral-common); Nemo's template "
                    "writes the older [TOOL_CALLS][{...}] list",
    ),
]}
