"""The wire format between hushd and its clients, typed once for both sides.

Newline-delimited JSON over a Unix stream socket (docs/protocol.md). The client speaks first with
a `hello`; the daemon answers with its own. After that the client sends requests, each with an id
of its choosing, and the daemon answers every request with zero or more streamed events (`token`,
`progress`, `policy`) and exactly one terminal event (`done` or `error`) carrying the same id.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, NotRequired, TypedDict

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from .errors import ErrorCode, HushError

PROTOCOL_VERSION = 1

# --- limits -----------------------------------------------------------------------------------

DEFAULT_MAX_FRAME_BYTES = 1024 * 1024
DEFAULT_MAX_DEPTH = 32
# Every integer on the wire fits in 64 bits; longer digit strings are refused while parsing,
# before Python's int conversion (quadratic, and past 4300 digits a ValueError) sees them.
MAX_INT_DIGITS = 20


class ProtocolError(HushError):
    """A frame the daemon cannot accept. The connection stays usable."""

    code = "bad_request"


# --- client -> daemon -------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def _printable(value: str) -> str:
    # Ids are quoted in the daemon's log and error messages: no newline may forge a line there.
    if not value.isprintable():
        raise ValueError("must be printable characters only (no newlines or control characters)")
    return value


RequestId = Annotated[str, StringConstraints(min_length=1, max_length=128),
                      AfterValidator(_printable)]


class ClientHello(_Strict):
    """First frame a client sends."""

    type: Literal["hello"]
    protocol: int
    client: str = "unknown"


class GenerationParams(_Strict):
    """Sampling options a client may set; temperature 0 means greedy."""

    max_tokens: int = Field(default=512, ge=1, le=32768)
    temperature: float = Field(default=0.0, ge=0.0, le=5.0)
    top_k: int = Field(default=0, ge=0, le=2**31 - 1)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0)
    """None: hushd.yaml's `repetition_penalty`, else the model's measured default."""
    seed: int | None = Field(default=None, ge=0, le=2**64 - 1)
    stop: list[str] = Field(default_factory=list, max_length=8)


ConversationId = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
]


class ChatParams(_Strict):
    """One user turn. Without `conversation` a new one starts (with `system`, if given, as its
    system prompt); with it, the answer continues that conversation's history."""

    message: str = Field(min_length=1)
    conversation: ConversationId | None = None
    system: str | None = None
    options: GenerationParams = GenerationParams()


class CancelParams(_Strict):
    request_id: RequestId


class EmptyParams(_Strict):
    pass


class ListParams(_Strict):
    limit: int = Field(default=50, ge=1, le=500)
    offset: int = Field(default=0, ge=0)


class ConversationParams(_Strict):
    id: ConversationId


class RenameParams(_Strict):
    id: ConversationId
    title: str = Field(min_length=1, max_length=200)


class SearchParams(_Strict):
    query: str = Field(min_length=1, max_length=500)
    limit: int = Field(default=50, ge=1, le=500)


class ExportParams(_Strict):
    id: ConversationId
    format: Literal["markdown", "json"] = "markdown"


class UnlockParams(_Strict):
    passphrase: str = Field(min_length=1)


class RotateParams(_Strict):
    passphrase: str | None = Field(default=None, min_length=8)
    """Switch to (or change) a passphrase; without it a new key of the same kind is made."""


class PolicyTestParams(_Strict):
    text: str
    direction: Literal["input", "output", "storage", "documents", "export"] | None = None


class DocumentPutParams(_Strict):
    """One chunk of a document the client read itself (base64; frames stay under 1 MiB)."""

    document: str = Field(min_length=1, max_length=64)
    data: str = Field(max_length=700_000)
    filename: str = Field(min_length=1, max_length=255)
    media_type: str | None = Field(default=None, max_length=100)
    last: bool = False


class SummarizeParams(_Strict):
    document: str = Field(min_length=1, max_length=64)
    length: Literal["short", "medium", "long"] = "short"
    bullets: bool = False


class ModelUseParams(_Strict):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


METHODS: dict[str, type[_Strict]] = {
    "chat": ChatParams,
    "cancel": CancelParams,
    "status": EmptyParams,
    "models.list": EmptyParams,
    "models.use": ModelUseParams,
    "conversations.list": ListParams,
    "conversations.get": ConversationParams,
    "conversations.rename": RenameParams,
    "conversations.delete": ConversationParams,
    "conversations.search": SearchParams,
    "conversations.export": ExportParams,
    "unlock": UnlockParams,
    "keys.rotate": RotateParams,
    "policy.show": EmptyParams,
    "policy.test": PolicyTestParams,
    "document.put": DocumentPutParams,
    "summarize": SummarizeParams,
}


class Request(_Strict):
    """Every frame after the hello."""

    id: RequestId
    method: str
    params: dict[str, Any] = Field(default_factory=dict)


# --- daemon -> client -------------------------------------------------------------------------


class Limits(TypedDict):
    max_frame_bytes: int
    max_depth: int
    max_inflight: int


class DaemonHello(TypedDict):
    type: Literal["hello"]
    protocol: int
    daemon: str
    model: str
    limits: Limits


class TokenEvent(TypedDict):
    type: Literal["token"]
    id: str
    text: str


class Usage(TypedDict):
    prompt_tokens: int
    completion_tokens: int


class Timings(TypedDict):
    queued_ms: float
    first_token_ms: float
    total_ms: float
    decode_tokens_per_s: float
    batch_size: int


class DoneEvent(TypedDict):
    type: Literal["done"]
    id: str
    finish_reason: NotRequired[str]
    conversation: NotRequired[str]
    policy_version: NotRequired[str]
    dropped_turns: NotRequired[int]
    usage: NotRequired[Usage]
    timings: NotRequired[Timings]
    result: NotRequired[dict[str, Any]]


class PolicyFinding(TypedDict):
    detector: str
    action: str
    count: int


class PolicyEvent(TypedDict):
    """What the policy did to this request's text, in counts (never the matched text)."""

    type: Literal["policy"]
    id: str
    direction: str
    notice: str | None
    warnings: list[str]
    findings: list[PolicyFinding]


class ProgressEvent(TypedDict):
    """How far a long job is: steps done of total, and a rough estimate of the time left."""

    type: Literal["progress"]
    id: str
    stage: str
    done: int
    total: int
    elapsed_s: float
    eta_s: float | None


class ErrorEvent(TypedDict):
    type: Literal["error"]
    id: str | None
    code: ErrorCode
    message: str


Event = TokenEvent | PolicyEvent | ProgressEvent | DoneEvent | ErrorEvent


def error_event(request_id: str | None, code: ErrorCode, message: str) -> ErrorEvent:
    return {"type": "error", "id": request_id, "code": code, "message": message}


# --- encoding ---------------------------------------------------------------------------------


def encode(frame: object) -> bytes:
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def _depth(value: object, limit: int) -> int:
    """Nesting depth of a decoded JSON value, without recursion."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _parse_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise ProtocolError(f"frame holds an integer of {len(digits.lstrip('-'))} digits; "
                            f"integers here have at most {MAX_INT_DIGITS}")
    return int(digits)


def decode(line: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH) -> dict[str, Any]:
    """Parse one frame into a JSON object, or raise ProtocolError saying what is wrong."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(
            f"frame is not valid UTF-8 (byte {exc.start})", code="bad_frame"
        ) from None
    try:
        value = json.loads(text, parse_int=_parse_int)
    except RecursionError:
        raise ProtocolError(
            f"frame is nested deeper than the limit of {max_depth}", code="too_deep"
        ) from None
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"frame is not JSON: {exc.msg} at column {exc.colno}",
                            code="bad_frame") from None
    if not isinstance(value, dict):
        raise ProtocolError("frame must be a JSON object", code="bad_frame")
    if _depth(value, max_depth) > max_depth:
        raise ProtocolError(f"frame is nested deeper than the limit of {max_depth}",
                            code="too_deep")
    return value


def describe_validation(exc: ValidationError, prefix: str = "") -> str:
    """One line per problem, each naming the field: 'params.options.max_tokens: ...'."""
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        parts.append(f"{where or 'frame'}: {err['msg']}")
    return "; ".join(parts)


def parse_request(frame: dict[str, Any]) -> tuple[Request, _Strict]:
    """Validate a request frame and its params against the method's schema."""
    try:
        request = Request.model_validate(frame)
    except ValidationError as exc:
        raise ProtocolError(describe_validation(exc)) from None
    params_type = METHODS.get(request.method)
    if params_type is None:
        raise ProtocolError(
            f"unknown method {request.method!r}; known methods: {', '.join(sorted(METHODS))}",
            code="unknown_method",
        )
    try:
        params = params_type.model_validate(request.params)
    except ValidationError as exc:
        raise ProtocolError(describe_validation(exc, "params")) from None
    return request, params


class FrameReader:
    """Splits a byte stream into frames, enforcing the frame size limit.

    An oversized frame is skipped up to its newline and reported once, so one bad frame never
    costs the connection.
    """

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> list[bytes | ProtocolError]:
        out: list[bytes | ProtocolError] = []
        self._buffer += data
        while True:
            newline = self._buffer.find(b"\n")
            if newline < 0:
                if len(self._buffer) > self.max_frame_bytes:
                    if not self._discarding:
                        out.append(self._too_large())
                    self._discarding = True
                    self._buffer.clear()
                return out
            line = bytes(self._buffer[:newline])
            del self._buffer[: newline + 1]
            if self._discarding:
                self._discarding = False
                continue
            if len(line) > self.max_frame_bytes:
                out.append(self._too_large())
            elif line.strip():
                out.append(line)

    def _too_large(self) -> ProtocolError:
        return ProtocolError(
            f"frame exceeds the limit of {self.max_frame_bytes} bytes; send large payloads "
            "in chunks",
            code="frame_too_large",
        )
