"""The importer's failure modes: clear ModelError messages and nothing left behind."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest

from hush.daemon.engine.convert.gguf_import import import_gguf
from hush.daemon.engine.convert.testing import build_tiny_model
from hush.daemon.engine.errors import ModelError, UnsupportedModelError
from hush.daemon.engine.model_info import ModelInfo


def write_gguf(path: Path, arch: str, *, with_tensor: bool = True) -> Path:
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(8)
    writer.add_head_count(2)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(["a", "b", "c", "d"])
    writer.add_token_types([1, 1, 1, 1])
    writer.add_token_merges([])
    if with_tensor:
        writer.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def assert_nothing_left(parent: Path, allowed: set[str]) -> None:
    assert {p.name for p in parent.iterdir()} == allowed


def test_unsupported_architecture(tmp_path: Path) -> None:
    src = write_gguf(tmp_path / "mamba.gguf", "mamba")
    with pytest.raises(UnsupportedModelError) as err:
        import_gguf(src, tmp_path / "out")
    message = str(err.value)
    assert "'mamba'" in message and "llama" in message
    assert_nothing_left(tmp_path, {"mamba.gguf"})


def test_missing_tensor_is_named(tmp_path: Path) -> None:
    src = write_gguf(tmp_path / "tiny-llama.gguf", "llama")  # metadata, no layer tensors
    with pytest.raises(ModelError, match=r"lacks the tensor '(blk\.0\.attn_norm|output_norm)"):
        import_gguf(src, tmp_path / "out")  # whichever the import reads first
    assert_nothing_left(tmp_path, {"tiny-llama.gguf"})


def test_not_a_gguf(tmp_path: Path) -> None:
    src = tmp_path / "notes.gguf"
    src.write_text("just some text, not a model\n")
    with pytest.raises(ModelError, match="not a valid GGUF"):
        import_gguf(src, tmp_path / "out")
    assert_nothing_left(tmp_path, {"notes.gguf"})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        import_gguf(tmp_path / "nope.gguf", tmp_path / "out")


@pytest.mark.parametrize("keep", [100, 2_000_000, 50_000_000])
def test_truncated_gguf(tmp_path: Path, keep: int, smollm2_gguf: Path) -> None:
    src = tmp_path / "cut.gguf"
    with smollm2_gguf.open("rb") as f:
        src.write_bytes(f.read(keep))
    with pytest.raises(ModelError, match="truncated"):
        import_gguf(src, tmp_path / "out")
    assert_nothing_left(tmp_path, {"cut.gguf"})


def test_bad_quantization(tmp_path: Path) -> None:
    src = write_gguf(tmp_path / "m.gguf", "llama")
    with pytest.raises(ModelError, match="int8"):
        import_gguf(src, tmp_path / "out", quantization="q4")


def test_model_info_missing_and_corrupt(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"hush-model\.json is missing"):
        ModelInfo.load(tmp_path)
    (tmp_path / "hush-model.json").write_text("{not json")
    with pytest.raises(ModelError, match="corrupt"):
        ModelInfo.load(tmp_path)


def test_model_info_round_trip(tmp_path: Path) -> None:
    model = build_tiny_model(tmp_path / "tiny")
    info = ModelInfo.load(model)
    assert ModelInfo.load(model) == info
    data = json.loads(info.to_json())
    assert data["format_version"] == 1 and "path" not in data
    data["format_version"] = 99
    (model / "hush-model.json").write_text(json.dumps(data))
    with pytest.raises(ModelError, match="format_version"):
        ModelInfo.load(model)
