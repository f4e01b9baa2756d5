"""`hush-model.json`: what Hush knows about an imported model, independent of its catalog name."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from .errors import ModelError

MODEL_INFO_FILE = "hush-model.json"
FORMAT_VERSION = 1
# What the importer does to the weights, bumped when a new import gives a better model from
# the same GGUF: 1, SmoothQuant; 2, the residual rotation for llama models.
IMPORT_REVISION = 2
# The revision at which each architecture's import last changed (1 where it never did).
_CHANGED_AT = {"llama": 2}

_T = TypeVar("_T")


@dataclass(frozen=True)
class ModelInfo:
    """Metadata written next to the CTranslate2 model by the importer.

    `path` is where the model directory lives; it is not stored in the JSON so that a model
    directory can be moved or renamed.
    """

    architecture: str
    parameter_count: int
    context_length: int
    quantization: str
    chat_template: str | None
    bos_token: str | None
    eos_token: str | None
    end_of_turn_tokens: tuple[str, ...]
    add_bos: bool
    source_sha256: str
    pruned_from: int | None = None
    """The vocabulary size before pruning at import; None for a model with all of it."""
    repetition_penalty: float | None = None
    """The measured default for requests that set none (the catalog's); None: the engine's
    general default."""
    import_revision: int = IMPORT_REVISION
    format_version: int = FORMAT_VERSION
    path: Path | None = field(default=None, compare=False)

    @property
    def outdated(self) -> bool:
        """An older importer made it, and importing the same GGUF now gives a better model."""
        return self.import_revision < _CHANGED_AT.get(self.architecture, 1)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["path"]
        data["end_of_turn_tokens"] = list(self.end_of_turn_tokens)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    def save(self, model_dir: Path) -> None:
        (model_dir / MODEL_INFO_FILE).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, model_dir: Path) -> ModelInfo:
        model_dir = Path(model_dir)
        info_path = model_dir / MODEL_INFO_FILE
        try:
            raw = info_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ModelError(
                f"{model_dir} is not a Hush model directory: {MODEL_INFO_FILE} is missing. "
                "Import the model again from its GGUF file."
            ) from None
        except OSError as exc:
            raise ModelError(f"Cannot read {info_path}: {exc}") from exc
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("the top level is not a JSON object")
            return cls._from_dict(data, model_dir)
        except (ValueError, TypeError, KeyError) as exc:
            raise ModelError(
                f"{info_path} is corrupt ({exc}). Delete the model directory and import the "
                "model again."
            ) from exc

    @classmethod
    def _from_dict(cls, data: dict[str, Any], model_dir: Path) -> ModelInfo:
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            # A newer Hush may have written it; refusing is safer than guessing.
            raise ValueError(
                f"format_version is {version!r}, this version of Hush reads {FORMAT_VERSION}"
            )
        known = {f.name for f in fields(cls)} - {"path", "pruned_from", "repetition_penalty",
                                                  "import_revision"}
        missing = known - data.keys() - {"format_version"}
        if missing:
            raise KeyError(f"missing fields: {', '.join(sorted(missing))}")
        info = cls(
            architecture=_typed(data, "architecture", str),
            parameter_count=_typed(data, "parameter_count", int),
            context_length=_typed(data, "context_length", int),
            quantization=_typed(data, "quantization", str),
            chat_template=_optional_str(data, "chat_template"),
            bos_token=_optional_str(data, "bos_token"),
            eos_token=_optional_str(data, "eos_token"),
            end_of_turn_tokens=tuple(_str_list(data, "end_of_turn_tokens")),
            add_bos=_typed(data, "add_bos", bool),
            source_sha256=_typed(data, "source_sha256", str),
            # Written only by importers that can prune; older files mean "not pruned".
            pruned_from=_typed(data, "pruned_from", int) if data.get("pruned_from") else None,
            repetition_penalty=_optional_positive(data, "repetition_penalty"),
            # Files from before revisions were recorded are revision 1.
            import_revision=_typed(data, "import_revision", int)
            if "import_revision" in data else 1,
            format_version=version,
            path=model_dir,
        )
        return info


def _typed(data: dict[str, Any], key: str, kind: type[_T]) -> _T:
    value = data[key]
    # bool is a subclass of int: do not accept true as a parameter count.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{key} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _optional_str(data: dict[str, Any], key: str) -> str | None:
    value = data[key]
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{key} must be a string or null")
    return value


def _str_list(data: dict[str, Any], key: str) -> list[str]:
    value = data[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{key} must be a list of strings")
    return value


def _optional_positive(data: dict[str, Any], key: str) -> float | None:
    # Optional: files written before Hush recorded it mean "the general default".
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise TypeError(f"{key} must be a positive number or null")
    return float(value)
