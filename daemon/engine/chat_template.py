"""Render a model's own chat template (Jinja, shipped inside the GGUF) in a sandbox.

Templates come from model files users download, so they run in Jinja's immutable sandbox:
they can format strings but not reach Python internals or mutate our data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, NoReturn

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import ModelError


def _raise_exception(message: str) -> NoReturn:
    # Templates call this to reject conversations they cannot format (e.g. wrong role order).
    raise jinja2.TemplateError(message)


def _strftime_now(fmt: str) -> str:
    # Llama 3 templates put today's date in the system prompt.
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=8)
def _compile(template: str) -> jinja2.Template:
    # Same whitespace handling as Hugging Face's apply_chat_template, which these templates
    # were written against.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(template)


def uses_chat_template(template: str | None) -> bool:
    """Whether to format messages with the template or run in plain completion mode.

    Base models (Gemma 3 270M, ...) ship without a template: the prompt is the user's
    text as is.
    """
    return bool(template and template.strip())


def render_chat(
    template: str,
    messages: Sequence[Mapping[str, str]],
    *,
    bos_token: str | None,
    eos_token: str | None,
    add_generation_prompt: bool = True,
) -> str:
    """Format `messages` ({"role", "content"} dicts) as the model expects its prompt."""
    try:
        compiled = _compile(template)
    except jinja2.TemplateSyntaxError as exc:
        raise ModelError(
            f"The model's chat template has a syntax error (line {exc.lineno}: {exc.message}). "
            "Re-import the model from a fixed GGUF, or use it in completion mode."
        ) from exc
    context: dict[str, Any] = {
        "messages": [dict(m) for m in messages],
        "bos_token": bos_token or "",
        "eos_token": eos_token or "",
        "add_generation_prompt": add_generation_prompt,
    }
    try:
        return compiled.render(**context)
    except jinja2.TemplateError as exc:
        raise ModelError(
            f"The model's chat template could not format this conversation: {exc}"
        ) from exc
    except Exception as exc:  # arbitrary template code can fail in arbitrary ways
        raise ModelError(
            f"The model's chat template failed ({type(exc).__name__}: {exc})."
        ) from exc


def plain_prompt(messages: Sequence[Mapping[str, str]]) -> str:
    """Completion mode: the text to continue, for models without a chat template.

    Uses the system text (if any) followed by the last user message; earlier turns have no
    agreed format for a base model, so they are left out rather than invented.
    """
    system = [m["content"] for m in messages if m.get("role") == "system"]
    users = [m["content"] for m in messages if m.get("role") == "user"]
    parts = [*system, users[-1]] if users else system
    return "\n\n".join(parts)
