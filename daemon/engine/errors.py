"""Errors the engine raises for anything a user can cause (bad file, unsupported model, ...).

Every message says what happened and what to do about it, because the daemon shows these
messages to people who cannot read a traceback.
"""

from __future__ import annotations

from ..errors import HushError


class ModelError(HushError):
    """A model file or model directory cannot be imported, loaded or used."""

    code = "model"


class UnsupportedModelError(ModelError):
    """The file is valid but describes a model (architecture, tensor type, ...) Hush cannot run."""
