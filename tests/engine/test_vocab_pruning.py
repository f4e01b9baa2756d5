"""Vocabulary pruning at import, on the real default model and a hand-made SentencePiece one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hush.daemon.engine.convert.gguf_import import _GGUF, VocabPruning, _read_vocab, import_gguf
from hush.daemon.engine.convert.gguf_vocab import (
    TOKEN_BYTE,
    TOKEN_CONTROL,
    TOKEN_NORMAL,
    TOKEN_UNKNOWN,
    GGUFVocab,
)
from hush.daemon.engine.convert.sentencepiece_model import build_sentencepiece_files
from hush.daemon.engine.convert.tokenizer_files import build_tokenizer_files
from hush.daemon.engine.convert.vocab_pruning import kept_ids, restrict
from hush.daemon.engine.errors import ModelError
from hush.daemon.engine.generator import Engine, GenerationOptions
from hush.daemon.engine.model_info import ModelInfo
from hush.daemon.engine.quiz import ask_all
from hush.daemon.engine.sentencepiece_vocab import SentencePieceBackend
from hush.daemon.engine.tokenizer import KEPT_FILE, Tokenizer, read_kept

from ..conftest import REAL_MODEL
from ..quiz import PASS_MARK, easy_questions
from .test_tokenizer import TEXTS

SIZE = 16384
ENGLISH = ("The daemon keeps every conversation encrypted on the device, and the policy decides "
           "what may be stored. Nothing is sent anywhere; the model runs on this machine.")


@pytest.fixture(scope="module")
def pruned(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("pruned") / "smollm2-16k"
    import_gguf(smollm2_gguf, dest, prune=VocabPruning(SIZE))
    return dest


@pytest.fixture(scope="module")
def full(real_cache: Path) -> Path:
    return real_cache / "models" / REAL_MODEL


def test_pruned_model_is_the_full_model_with_fewer_lm_head_rows(pruned: Path, full: Path) -> None:
    info = ModelInfo.load(pruned)
    assert info.pruned_from == 49152
    kept = read_kept(pruned)
    assert kept is not None and len(kept) == SIZE
    # 32,768 rows of 576 int8 weights (plus a scale each) fewer, in the tied embedding/LM head.
    saved = (full / "model.bin").stat().st_size - (pruned / "model.bin").stat().st_size
    assert saved > 0.95 * (49152 - SIZE) * 576
    small, big = Engine.load(pruned, intra_threads=1), Engine.load(full, intra_threads=1)
    try:
        assert small.tokenizer.vocab_size == SIZE
        ids = small.tokenizer.encode(ENGLISH * 3)
        logits_small = np.array(small.generator.forward_batch(
            [[small.tokenizer.id_to_token(i) for i in ids]]), dtype=np.float32)[0]
        logits_big = np.array(big.generator.forward_batch(
            [[big.tokenizer.id_to_token(kept[i]) for i in ids]]), dtype=np.float32)[0]
    finally:
        small.close()
        big.close()
    # Same layers, same calibration: the pruned logits are the full ones at the kept ids.
    np.testing.assert_allclose(logits_small, logits_big[:, kept], atol=1e-3)


def test_every_text_still_encodes_and_covered_text_tokenizes_as_before(
        pruned: Path, full: Path) -> None:
    small, big = Tokenizer.load(pruned), Tokenizer.load(full)
    kept = read_kept(pruned)
    assert kept is not None
    kept_set = set(kept)
    covered = 0
    for text in [*TEXTS, ENGLISH]:
        ids = small.encode(text)
        assert small.decode(ids) == text
        original = big.encode(text)
        if set(original) <= kept_set:
            covered += 1
            assert [kept[i] for i in ids] == original, text
        else:
            # Text using dropped tokens is spelled with more, smaller pieces.
            assert len(ids) > len(original)
    assert covered >= 2  # English prose and code are covered by 16k tokens


def test_pruned_model_still_answers(smollm2_gguf: Path, tmp_path: Path) -> None:
    # Pruning costs answers, measured on the easy set (Intel Xeon): 16/16 right with the whole
    # 49,152-token vocabulary, 12/16 with 32,768, 3/16 with 16,384 ("The capital of Greece is
    # Greece": the names are spelled with pieces the model never wrote them with). The usable
    # size keeps most, well clear of garbage (none right).
    dest = tmp_path / "smollm2-32k"
    import_gguf(smollm2_gguf, dest, prune=VocabPruning(32768))
    engine = Engine.load(dest, intra_threads=1)
    try:
        answers = ask_all(engine, easy_questions(), GenerationOptions(max_tokens=32))
    finally:
        engine.close()
    assert sum(a.right for a in answers) >= PASS_MARK - 3, [a.text for a in answers]


def test_corpus_tokens_are_kept_first(smollm2_gguf: Path) -> None:
    vocab = _read_vocab(_GGUF(smollm2_gguf))
    full = Tokenizer.from_files(build_tokenizer_files(vocab))
    corpus = "Pseudonymization of telemetry: cryptographically shredded ciphertexts. " * 3
    by_rank = kept_ids(vocab, 2048)
    with_corpus = kept_ids(vocab, 2048, full.encode(corpus))
    assert len(by_rank) == len(with_corpus) == 2048

    def restricted(kept: list[int]) -> Tokenizer:
        return Tokenizer.from_files(build_tokenizer_files(restrict(vocab, kept)))

    assert restricted(with_corpus).encode(corpus) == full.encode(corpus)
    assert len(restricted(by_rank).encode(corpus)) > len(full.encode(corpus))


def test_sentencepiece_pieces_dropped_are_split_back_not_emitted() -> None:
    # A hand-made SentencePiece BPE vocabulary: merges by score, ab first, then abc.
    specials = ["<unk>", "<s>", "</s>"]
    byte_pieces = [f"<0x{b:02X}>" for b in range(256)]
    pieces = ["\u2581", "a", "b", "c", "ab", "abc", "bc"]
    scores = [0.0] * 3 + [0.0] * 256 + [-10.0, -10.0, -10.0, -10.0, -1.0, -2.0, -3.0]
    types = ([TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_CONTROL] + [TOKEN_BYTE] * 256
             + [TOKEN_NORMAL] * len(pieces))
    vocab = GGUFVocab("llama", "default", [*specials, *byte_pieces, *pieces], types, merges=[],
                      scores=scores, add_space_prefix=False, unk_id=0, bos_id=1, eos_id=2)
    ids = {p: 3 + 256 + i for i, p in enumerate(pieces)}

    def encode(v: GGUFVocab, text: str) -> list[int]:
        files = build_sentencepiece_files(v)
        return SentencePieceBackend(files["tokenizer.model"], add_space_prefix=False).encode(text)

    assert encode(vocab, "abc") == [ids["abc"]]
    dropped = restrict(vocab, [i for i in range(len(vocab.tokens)) if i != ids["abc"]])
    # SentencePiece still merges through the dropped piece, then splits it into what it was
    # merged from: no id without a model row, and not the byte spelling either.
    assert encode(dropped, "abc") == [ids["ab"], ids["c"]]
    assert encode(dropped, "bc") == [ids["bc"]]


def test_impossible_sizes_are_refused_with_the_reason(smollm2_gguf: Path) -> None:
    vocab = _read_vocab(_GGUF(smollm2_gguf))
    with pytest.raises(ModelError, match="at least 1024"):
        kept_ids(vocab, 100)
    tokens = [*(f"<special_{i}>" for i in range(2000)), *vocab.tokens]
    many = GGUFVocab("gpt2", vocab.pre, tokens, [TOKEN_CONTROL] * 2000 + vocab.token_types,
                     vocab.merges, [])
    with pytest.raises(ModelError, match=r"has 2\d{3} special, byte and single-char"):
        kept_ids(many, 1024)


def test_damaged_kept_tokens_file_says_import_again(pruned: Path, tmp_path: Path) -> None:
    copy = tmp_path / "model"
    copy.mkdir()
    for item in pruned.iterdir():
        (copy / item.name).symlink_to(item)
    (copy / KEPT_FILE).unlink()
    (copy / KEPT_FILE).write_text(json.dumps({"kept": [5, 3, 1]}))
    with pytest.raises(ModelError, match="Import the model again"):
        Tokenizer.load(copy)


def test_command_line_imports_a_pruned_model(smollm2_gguf: Path, tmp_path: Path) -> None:
    env = {"HUSH_CACHE_DIR": str(tmp_path / "cache"), "HUSH_CONFIG_DIR": str(tmp_path / "cfg"),
           "PATH": "/usr/bin:/bin"}

    def hush(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hush.tui.cli", "model", *args], env=env,
                              capture_output=True, text=True, timeout=300)

    refused = hush("import", str(smollm2_gguf), "--corpus", str(smollm2_gguf))
    assert refused.returncode == 2 and "give --vocab N too" in refused.stderr
    done = hush("import", str(smollm2_gguf), "--name", "small", "--vocab", "8192")
    assert done.returncode == 0, done.stderr
    assert "vocabulary pruned from 49,152" in done.stdout
    listing = hush("list")
    assert "8192/49152" in listing.stdout
