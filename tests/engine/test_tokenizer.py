"""Tokenizers rebuilt from GGUF metadata agree with llama.cpp's, token for token.

Reference ids: produced once with llama.cpp's own tokenizer reading the same GGUF files
(llama-cpp-python 0.3.36, `Llama(model_path=..., vocab_only=True).tokenize(text.encode(),
add_bos=False, special=False)`), and pasted here so the tests need no llama.cpp.
SmolLM2 runs always; Qwen2.5-Coder (byte-level BPE, qwen2 pre-tokenizer) and Gemma 3
(SentencePiece) need the catalog downloads and run under `-m models`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hush.daemon import paths
from hush.daemon.engine.convert.gguf_import import _GGUF, _read_vocab
from hush.daemon.engine.convert.pull import fetch_gguf
from hush.daemon.engine.convert.tokenizer_files import build_tokenizer_files
from hush.daemon.engine.tokenizer import Tokenizer

TEXTS = [
    "In 2024, 3.14159 \u00d7 1000 = 3141.59; call 555-0199 or 1234567.",
    "Crème brûlée, naïve café, Ångström, Straße, ñandú, Çà et là.",
    "Emoji: 👋🌍🎉 and 👨\u200d👩\u200d👧 family, ✓ done!",
    "def fib(n: int) -> int:\n    if n < 2:\n        return n\n"
    "    return fib(n - 1) + fib(n - 2)\n",
    "中文分词测试：你好，世界！日本語のテキスト、한국어 텍스트.",  # noqa: RUF001
    "  leading spaces\tand\ttabs\n\n\nthree newlines   trailing  ",
    "It's John's; they're HERE, we'VE gone.",
]

SMOLLM2_IDS = [
    [
        788, 216, 34, 32, 34, 36, 28, 216, 35, 30, 33, 36, 33, 37, 41, 15493, 216, 33, 32, 32, 32,
        446, 216, 35, 33, 36, 33, 30, 37, 41, 43, 946, 216, 37, 37, 37, 29, 32, 33, 41, 41, 355,
        216, 33, 34, 35, 36, 37, 38, 39, 30
    ],
    [
        25711, 11180, 1558, 1156, 41307, 92, 20174, 28, 15486, 46494, 37366, 28, 5549, 223, 863,
        1321, 45682, 28, 19144, 34878, 85, 28, 5549, 126, 397, 16148, 28, 5549, 225, 16739, 1482,
        303, 16739, 30
    ],
    [
        10809, 33777, 42, 15107, 235, 229, 10813, 230, 231, 10813, 232, 227, 284, 15107, 235, 118,
        321, 231, 10813, 235, 119, 321, 231, 10813, 235, 117, 1564, 28, 4636, 246, 237, 2294, 17
    ],
    [
        1604, 3987, 24, 94, 42, 464, 25, 4722, 464, 42, 472, 585, 304, 2067, 216, 34, 42, 448,
        1003, 304, 472, 1003, 3987, 24, 94, 731, 216, 33, 25, 1232, 3987, 24, 94, 731, 216, 34,
        25, 198
    ],
    [
        28589, 29184, 37349, 16313, 231, 43222, 229, 16313, 239, 24713, 18645, 250, 48392, 138,
        12831, 7906, 240, 178, 239, 230, 8083, 219, 23274, 115, 40993, 179, 120, 248, 26453,
        11100, 224, 10391, 251, 10391, 134, 11100, 226, 29917, 33085, 246, 181, 130, 251, 183,
        240, 129, 48138, 223, 231, 183, 228, 114, 184, 228, 133, 30
    ],
    [
        216, 2899, 5600, 197, 397, 197, 100, 7366, 1116, 198, 16347, 725, 5110, 256, 35079, 256
    ],
    [
        1589, 506, 2322, 506, 43, 502, 2316, 27873, 28, 392, 23, 18525, 7270, 30
    ],
]

QWEN_IDS = [
    [
        641, 220, 17, 15, 17, 19, 11, 220, 18, 13, 16, 19, 16, 20, 24, 24768, 220, 16, 15, 15, 15,
        284, 220, 18, 16, 19, 16, 13, 20, 24, 26, 1618, 220, 20, 20, 20, 12, 15, 16, 24, 24, 476,
        220, 16, 17, 18, 19, 20, 21, 22, 13
    ],
    [
        16001, 24267, 1411, 29772, 133607, 11, 94880, 586, 51950, 11, 79252, 968, 495, 85584, 11,
        26647, 23455, 11, 1683, 109, 437, 6654, 11, 63005, 6362, 1842, 37915, 13
    ],
    [
        92731, 25, 61804, 233, 145691, 144841, 323, 61804, 101, 378, 235, 145233, 378, 235,
        145665, 2997, 11, 52375, 2814, 0
    ],
    [
        750, 15801, 1445, 25, 526, 8, 1464, 526, 510, 262, 421, 308, 366, 220, 17, 510, 286, 470,
        308, 198, 262, 470, 15801, 1445, 481, 220, 16, 8, 488, 15801, 1445, 481, 220, 17, 340
    ],
    [
        104811, 17177, 99689, 81705, 5122, 108386, 3837, 99489, 6313, 101059, 102819, 15767,
        56833, 61803, 70534, 5373, 23573, 124785, 31079, 10764, 44104, 53189, 13
    ],
    [
        220, 6388, 12621, 52477, 3244, 3435, 1406, 27856, 501, 7969, 256, 27748, 256
    ],
    [
        2132, 594, 3757, 594, 26, 807, 2299, 19249, 11, 582, 6, 4491, 8048, 13
    ],
]

GEMMA_IDS = [
    [
        902, 236743, 236778, 236771, 236778, 236812, 236764, 236743, 236800, 236761, 236770,
        236812, 236770, 236810, 236819, 15666, 236743, 236770, 236771, 236771, 236771, 578,
        236743, 236800, 236770, 236812, 236770, 236761, 236810, 236819, 236793, 2246, 236743,
        236810, 236810, 236810, 236772, 236771, 236770, 236819, 236819, 653, 236743, 236770,
        236778, 236800, 236812, 236810, 236825, 236832, 236761
    ],
    [
        15760, 9809, 125501, 155666, 236764, 120362, 33443, 236764, 44667, 829, 80406, 236764,
        80176, 236764, 131079, 624, 237066, 236764, 18599, 236937, 1008, 3244, 236761
    ],
    [
        127268, 236787, 155818, 244906, 242061, 532, 236743, 243874, 237243, 243767, 237243,
        244814, 2523, 236764, 71201, 3028, 236888
    ],
    [
        2063, 10779, 236769, 236749, 236787, 801, 236768, 3921, 801, 236787, 107, 140, 584, 538,
        655, 236743, 236778, 236787, 107, 144, 2060, 538, 107, 140, 2060, 10779, 236769, 236749,
        753, 236743, 236770, 236768, 900, 10779, 236769, 236749, 753, 236743, 236778, 236768, 107
    ],
    [
        55041, 237237, 239275, 30203, 237184, 144626, 236900, 12811, 237354, 94951, 236945, 95830,
        236951, 114216, 237430, 236743, 243007, 34718, 236761
    ],
    [
        138, 26016, 9952, 255968, 624, 255968, 39218, 109, 19891, 861, 8721, 139, 136697, 138
    ],
    [
        1509, 236789, 236751, 3415, 236789, 236751, 236793, 901, 236789, 500, 29195, 236764, 692,
        236789, 11818, 8731, 236761
    ],
]

def tokenizer_from_gguf(gguf_path: Path, dest: Path) -> Tokenizer:
    """Only the tokenizer part of an import: no weights are read."""
    dest.mkdir(parents=True, exist_ok=True)
    for name, content in build_tokenizer_files(_read_vocab(_GGUF(gguf_path))).items():
        (dest / name).write_bytes(content)
    return Tokenizer.load(dest)


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    return tokenizer_from_gguf(smollm2_gguf, tmp_path_factory.mktemp("smollm2"))


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    gguf = fetch_gguf("qwen2.5-coder-0.5b", paths.CacheLayout.default().downloads)
    return tokenizer_from_gguf(gguf, tmp_path_factory.mktemp("qwen"))


@pytest.fixture(scope="module")
def gemma(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    gguf = fetch_gguf("gemma3-270m", paths.CacheLayout.default().downloads)
    return tokenizer_from_gguf(gguf, tmp_path_factory.mktemp("gemma"))


def check_against_reference(tok: Tokenizer, expected: list[list[int]]) -> None:
    for text, ids in zip(TEXTS, expected, strict=True):
        assert tok.encode(text) == ids, text
        assert tok.decode(ids) == text


def check_streaming(tok: Tokenizer) -> None:
    # Emoji and CJK span several tokens; streamed pieces must never hold half a character.
    for text in TEXTS:
        decoder = tok.stream_decoder()
        pieces = [decoder.push(i) for i in tok.encode(text)]
        assert "".join(pieces) == text
        assert not any("\ufffd" in p for p in pieces)
        assert not decoder.pending


@pytest.mark.parametrize("index", range(len(TEXTS)))
def test_smollm2_matches_llama_cpp(smollm2: Tokenizer, index: int) -> None:
    assert smollm2.encode(TEXTS[index]) == SMOLLM2_IDS[index]
    assert smollm2.decode(SMOLLM2_IDS[index]) == TEXTS[index]


def test_smollm2_streaming_and_specials(smollm2: Tokenizer) -> None:
    check_streaming(smollm2)
    start = smollm2.special_tokens["<|im_start|>"]
    ids = smollm2.encode("<|im_start|>user\nhi<|im_end|>")
    assert ids[0] == start and smollm2.is_special(start)
    assert smollm2.decode(ids) == "user\nhi"
    assert smollm2.decode(ids, skip_special=False) == "<|im_start|>user\nhi<|im_end|>"
    assert smollm2.token_to_id(smollm2.id_to_token(start)) == start
    assert smollm2.token_to_id("definitely not a token") is None


@pytest.mark.models
def test_qwen_matches_llama_cpp(qwen: Tokenizer) -> None:
    check_against_reference(qwen, QWEN_IDS)
    check_streaming(qwen)
    # qwen2 pre-tokenizer: digits one by one, no digit groups.
    assert len(qwen.encode("1234567")) == 7
    ids = qwen.encode("<|im_start|>assistant\n")
    assert ids[0] == qwen.special_tokens["<|im_start|>"] == 151644
    assert qwen.decode(qwen.encode("<|im_end|>")) == ""


@pytest.mark.models
def test_gemma_sentencepiece_matches_llama_cpp(gemma: Tokenizer) -> None:
    check_against_reference(gemma, GEMMA_IDS)
    check_streaming(gemma)
    assert gemma.vocab_size == 262_144
    # Control tokens are special: cut out of the text whole, invisible when decoded.
    turn = gemma.encode("<start_of_turn>user\nHi<end_of_turn>\n")
    assert turn[0] == gemma.special_tokens["<start_of_turn>"]
    assert gemma.special_tokens["<end_of_turn>"] in turn
    assert gemma.decode(turn) == "user\nHi\n"
    # User-defined tokens (newline and space runs) are cut out whole but are text.
    newline = gemma.token_to_id("\n")
    assert newline is not None and not gemma.is_special(newline)
    assert gemma.token_bytes(newline) == b"\n"
    # Byte fallback: a character outside the vocabulary becomes its UTF-8 bytes.
    rare = "\U0001d54f"  # MATHEMATICAL DOUBLE-STRUCK CAPITAL X
    assert gemma.decode(gemma.encode(rare)) == rare
