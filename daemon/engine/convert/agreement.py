"""How closely an int8 import follows its GGUF: next-token agreement with the float32 model.

At import, the numpy reference model (reference.py) reads a short held-out text during the
same layer-by-layer pass that calibrates SmoothQuant, and its top-1 next token at each
position is written next to the model (agreement.json). The probe step after the import
(`hush model pull`, `hush model import`) runs the int8 model through CTranslate2 on the same
ids and records the share of positions where both predict the same token. Below BAR the
import still succeeds, with a warning naming the figure, and `hush model list` marks it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

AGREEMENT_FILE = "agreement.json"
BAR = 0.97

HELD_OUT_TEXT = (
    "The orchard at the edge of the village had been planted by the miller's grandfather, and "
    "every autumn the children were allowed to pick the apples that had fallen into the long "
    "grass. The best trees stood near the stream, where the soil stayed damp through the "
    "summer. In a good year the cider press ran for three weeks, and the whole street smelled "
    "of crushed fruit; in a bad year, after a late frost, there were barely enough apples for "
    "the harvest supper."
)


def write_reference(model_dir: Path, ids: Sequence[int], top1: Sequence[int]) -> None:
    data = {"ids": list(ids), "reference_top1": list(top1)}
    (model_dir / AGREEMENT_FILE).write_text(json.dumps(data) + "\n", encoding="utf-8")


def measure(model_dir: Path, generator: Any) -> float | None:
    """Top-1 agreement of a loaded CTranslate2 generator with the recorded reference, saved
    into agreement.json; None when the import recorded no reference."""
    path = model_dir / AGREEMENT_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        ids, reference = list(data["ids"]), list(data["reference_top1"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    logits = np.array(generator.forward_batch([ids]))[0]
    fraction = float((logits.argmax(-1) == np.asarray(reference)).mean())
    data["top1"] = round(fraction, 4)
    path.write_text(json.dumps(data) + "\n", encoding="utf-8")
    return fraction


def recorded(model_dir: Path) -> float | None:
    """The agreement the probe step measured, if any."""
    try:
        value = json.loads((model_dir / AGREEMENT_FILE).read_text(encoding="utf-8"))["top1"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return float(value) if isinstance(value, int | float) else None
