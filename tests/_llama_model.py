"""A tiny llama-architecture model, written as GGUF, for running llama.cpp's llama-server in tests.

Most weights are random (a fixed seed), so the model knows nothing; llama-server's grammar (from
the JSON schema, or from the forced tool call) makes whatever it writes valid JSON of the right
shape. A few weights are set by hand so that the answers have a known length and end on their
own:

- Biases. Dimension 0 of every hidden state is a constant that no layer reads or writes, so the
  output layer's column for it is a bias on each token's logit: letters before punctuation,
  closing quotes favoured (names are a few letters), whitespace, escapes, `-` and non-ASCII
  bytes all but ruled out, and the end-of-turn token as soon as the grammar allows it.
- Biases after a given token (a dimension of its embedding, untouched by the layers): the answer
  starts with `{` right after the prompt (not with text before a tool call), a name has at
  least one letter, an age a digit or two, a list at least one item.
- A counter. One attention head of the first layer attends only to the BOS token, to each `}`
  and to each newline, all with the same weight, and averages +1 for a `}`, -1 for a newline
  and +`OFFSET` for BOS: the result has the sign of (`}` so far) - (newlines in the prompt) +
  OFFSET. After each item (its `}`), that sign alone chooses between `,` and `]`. The chat
  template has five newlines of its own, so **the answer has one item per line of the user's
  text** (a text with no newline: one item; ten lines: ten items), whatever the mode. A `}` in
  the prompt counts as an item already written; the template keeps the tools' schemas out of
  the prompt for that reason (and to keep it short).

The tokenizer is SentencePiece-style with byte fallback: four special tokens and one token per
byte, which covers every byte JSON needs (a prompt is one token per byte). The chat template is
ChatML; a tool call is the bare JSON `{"name": ..., "arguments": ...}`, which llama-server's
`--jinja` analyses into a tool-call grammar and parser. With temperature 0 and one thread the
answers are deterministic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CHAT_TEMPLATE", "write_tiny_llama"]

UNK, BOS, EOS, IM_START = 0, 1, 2, 3
SPECIAL = ["<unk>", "<s>", "<|im_end|>", "<|im_start|>"]
FIRST_BYTE = len(SPECIAL)
N_VOCAB = FIRST_BYTE + 256

# ChatML. With tools, the system message names them (no schemas: see the module's docstring),
# and an assistant's tool call is the bare JSON object, as Llama 3's template writes it. Both
# branches write the same five newlines (two per message, one after the generation prompt).
CHAT_TEMPLATE = """\
{%- if tools %}
{{- '<|im_start|>system\\n' }}
{%- if messages[0].role == 'system' %}{{- messages[0].content + ' ' }}{%- endif %}
{{- 'To call a function, answer with a JSON object of its name and its arguments. Functions:' }}
{%- for tool in tools %}{{- ' ' + tool.function.name }}{%- endfor %}
{{- '<|im_end|>\\n' }}
{%- elif messages[0].role == 'system' %}
{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
{%- if message.role == 'user' or (message.role == 'system' and not loop.first) \
or (message.role == 'assistant' and not message.tool_calls) %}
{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
{%- elif message.role == 'assistant' %}
{%- set call = message.tool_calls[0] %}
{%- if call.function is defined %}{%- set call = call.function %}{%- endif %}
{{- '<|im_start|>assistant\\n{"name": "' + call.name + '", "arguments": ' }}
{{- call.arguments | tojson }}
{{- '}<|im_end|>\\n' }}
{%- elif message.role == 'tool' %}
{{- '<|im_start|>tool\\n' + message.content + '<|im_end|>\\n' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}
"""

N_EMBD = 64
N_HEAD = 4
HEAD_DIM = N_EMBD // N_HEAD
N_FF = 128
N_LAYER = 2
N_CTX = 8192

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
DIGITS = "0123456789"

#: The bias of each token, by character; the bytes not named get -20 (control characters,
#: whitespace, backslash, non-ASCII: never written unless the grammar wants them).
BIAS: dict[str, float] = {
    **dict.fromkeys("!#$%&'()*+./;<=>?@[^_`{|~", -6.0),  # only when the grammar wants them
    **dict.fromkeys(LETTERS, 2.0),
    **dict.fromkeys(DIGITS, -3.0),  # in an age, hardly ever in a name
    '"': 5.5,  # ends a string: names are a few letters
    "}": -12.0,  # never in a name: the counter counts every "}"
    ":": 0.0,
    ",": 0.0,  # "," and "]" after an item: the counter chooses
    "]": 0.0,
}
#: Biases after a token: (after any of these, these, bias).
AFTER: list[tuple[str, str, float]] = [
    ("\n", "{", 30.0),  # the answer starts at once (not with text before a tool call)
    ('"', LETTERS, 4.0),  # a name has at least one letter
    (DIGITS, "}", 13.0),  # an age has a digit or two (or a few)
    ("[", "{", 12.0),  # a list has at least one item
]
EOS_BIAS = 20.0  # once the grammar allows it: nothing after the answer
#: The counter's start: the template's five newlines, less the one item of a text without a
#: newline, plus a half, so that its sign is never in doubt.
OFFSET = 4.5
SEED = 1
CONST = 16.0  # the constant dimension
FEATURE = 4.0  # a token's value in a dimension that marks it
NOISE = 1.0  # the random part of the output layer
ATTN = 3.0  # the random query and key weights' scale: how sharp attention is
SCALE = 2.0  # the random value and feed-forward weights' scale
MIX = 3.0  # what each layer adds to the residual stream, in its random dimensions

# The hand-set dimensions of the residual stream, before the random ones.
_AFTER_DIMS = list(range(1, 1 + len(AFTER)))
_BOS_DIM, _CLOSE_DIM, _LINE_DIM, _COUNT_DIM = range(1 + len(AFTER), 5 + len(AFTER))
_FIXED = 5 + len(AFTER)
# The counter is head 0's dimension 8: RoPE pairs 4..7 of every head are left unrotated (the
# `rope_freqs` factors), so its attention does not depend on distance.
_COUNT_HEAD_DIM = 8
_UNROTATED = 1e30


def _byte(ch: str) -> int:
    return FIRST_BYTE + ord(ch)


def write_tiny_llama(path: Path, *, seed: int = SEED) -> Path:
    """Write the model to `path` (a `.gguf` file, about half a megabyte) and return the path."""
    import gguf  # the test dependency; imported here so that collecting the tests needs none

    rng = np.random.default_rng(seed)
    f32: Any = np.float32

    def normal(*shape: int, scale: float) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(f32)

    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_name("multitask-tiny-llama")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(N_CTX)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(N_VOCAB)

    tokens = [*SPECIAL, *(f"<0x{b:02X}>" for b in range(256))]
    types = [
        gguf.TokenType.UNKNOWN,
        *[gguf.TokenType.CONTROL] * (FIRST_BYTE - 1),
        *[gguf.TokenType.BYTE] * 256,
    ]
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * N_VOCAB)
    writer.add_token_types(types)
    writer.add_unk_token_id(UNK)
    writer.add_bos_token_id(BOS)
    writer.add_eos_token_id(EOS)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    # Embeddings: the constant, the marks, then random values scaled so that every row has
    # the same norm; the first layer's RMS norm then scales every token alike, and the
    # counter head's scores are equal for every token it counts.
    marks = np.zeros((N_VOCAB, _FIXED), dtype=f32)
    marks[:, 0] = CONST
    for dim, (before, _, _) in zip(_AFTER_DIMS, AFTER, strict=True):
        marks[[_byte(ch) for ch in before], dim] = FEATURE
    marks[BOS, _BOS_DIM] = FEATURE
    marks[_byte("}"), _CLOSE_DIM] = FEATURE
    marks[_byte("\n"), _LINE_DIM] = FEATURE
    random = rng.standard_normal((N_VOCAB, N_EMBD - _FIXED))
    random /= np.linalg.norm(random, axis=1, keepdims=True)
    norm = np.sqrt(CONST**2 + 3 * FEATURE**2 + (N_EMBD - _FIXED))  # every row's
    room = np.sqrt(norm**2 - (marks.astype(np.float64) ** 2).sum(axis=1, keepdims=True))
    embd = np.concatenate([marks, (random * room).astype(f32)], axis=1)
    writer.add_tensor("token_embd.weight", embd)

    ones = np.ones(N_EMBD, dtype=f32)
    fan_in = 1.0 / np.sqrt(N_EMBD)

    def reads(rows: int, scale: float) -> np.ndarray:
        """A random input projection that reads only the random dimensions."""
        weight = normal(rows, N_EMBD, scale=scale)
        weight[:, :_FIXED] = 0.0
        return weight

    def writes(cols: int, scale: float) -> np.ndarray:
        """A random output projection that writes only the random dimensions."""
        weight = normal(N_EMBD, cols, scale=scale)
        weight[:_FIXED] = 0.0
        return weight

    # RoPE: pairs 4..7 of each head unrotated.
    half = HEAD_DIM // 2
    freqs = np.ones(half, dtype=f32)
    freqs[_COUNT_HEAD_DIM // 2 :] = _UNROTATED
    writer.add_tensor("rope_freqs.weight", freqs)

    for i in range(N_LAYER):
        q = reads(N_EMBD, ATTN * fan_in)
        k = reads(N_EMBD, ATTN * fan_in)
        v = reads(N_EMBD, SCALE * fan_in)
        o = writes(N_EMBD, MIX * fan_in)
        if i == 0:
            _counter_head(q, k, v, o, norm)
        writer.add_tensor(f"blk.{i}.attn_norm.weight", ones)
        writer.add_tensor(f"blk.{i}.attn_q.weight", q)
        writer.add_tensor(f"blk.{i}.attn_k.weight", k)
        writer.add_tensor(f"blk.{i}.attn_v.weight", v)
        writer.add_tensor(f"blk.{i}.attn_output.weight", o)
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", ones)
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", reads(N_FF, SCALE * fan_in))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", reads(N_FF, SCALE * fan_in))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", writes(N_FF, MIX / np.sqrt(N_FF)))
    writer.add_tensor("output_norm.weight", ones)

    # The output layer: random over the random dimensions (none for "," and "]": the counter
    # alone chooses between them), and the biases over the hand-set ones. After the final
    # RMS norm a hand-set value x is about x * sqrt(N_EMBD) / norm (the layers add a little).
    unit = np.sqrt(N_EMBD) / (norm * 1.1)
    output = normal(N_VOCAB, N_EMBD, scale=NOISE * fan_in)
    output[:, :_FIXED] = 0.0
    output[[_byte(","), _byte("]")]] = 0.0
    bias = np.full(N_VOCAB, -20.0)
    for ch, value in BIAS.items():
        bias[_byte(ch)] = value
    bias[[UNK, BOS, IM_START]] = -30.0
    bias[EOS] = EOS_BIAS
    output[:, 0] = bias / (CONST * unit)
    for dim, (_, after, value) in zip(_AFTER_DIMS, AFTER, strict=True):
        output[[_byte(ch) for ch in after], dim] = value / (FEATURE * unit)
    output[_byte("]"), _COUNT_DIM] = 400.0
    writer.add_tensor("output.weight", output)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _counter_head(q: np.ndarray, k: np.ndarray, v: np.ndarray, o: np.ndarray, norm: float) -> None:
    """Make head 0 of the first layer the counter (see the module's docstring), in place.

    Its query is the constant; its key marks BOS, `}` and newlines, so that those get a score
    of about 30 and every other token about 0 (a weight e^-30 times smaller); its value is +1
    for a `}`, -1 for a newline and +OFFSET for BOS (times the mark); its output goes to the
    counter dimension only.
    """
    head = slice(0, HEAD_DIM)
    row = _COUNT_HEAD_DIM
    q[head] = k[head] = v[head] = 0.0
    o[:, head] = 0.0
    scale = np.sqrt(N_EMBD) / norm  # the first layer's RMS norm, the same for every token
    const, mark = CONST * scale, FEATURE * scale
    score = 30.0 * np.sqrt(HEAD_DIM)  # before llama.cpp's 1/sqrt(head_dim)
    q[row, 0] = np.sqrt(score) / const
    k[row, [_BOS_DIM, _CLOSE_DIM, _LINE_DIM]] = np.sqrt(score) / mark
    v[row, _CLOSE_DIM] = 1.0
    v[row, _LINE_DIM] = -1.0
    v[row, _BOS_DIM] = OFFSET
    o[_COUNT_DIM, row] = 1.0
