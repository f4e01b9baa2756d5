"""One chat turn, end to end: policy on the way in, store, model, policy on the way out.

    message -> input rules (block / redact / pseudonymize) -> store (storage rules)
            -> scheduler + model -> output rules on the token stream -> placeholders restored
            -> client, and the answer to the store (storage rules)

The policy is a snapshot taken when the turn starts; `done` names its version.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from .engine.generator import GenerationOptions
from .errors import HushError
from .guard import policy_event
from .policy import CompiledPolicy, Finding, Pseudonyms
from .protocol import ChatParams, DoneEvent
from .scheduler import GenerationStats
from .store import Store

if TYPE_CHECKING:
    from .server import Server

log = logging.getLogger("hushd.chat")

Send = Callable[[Mapping[str, Any]], Awaitable[None]]


class Blocked(HushError):
    code = "blocked"


def title_of(message: str) -> str:
    """A first title from the opening message: its first line, cut at a word."""
    line = message.strip().splitlines()[0] if message.strip() else "Conversation"
    if len(line) <= 60:
        return line
    return line[:60].rsplit(" ", 1)[0] + "…"


class ChatTurn:
    def __init__(self, server: Server, uid: int, request_id: str, params: ChatParams,
                 send: Send, cancel: threading.Event) -> None:
        self.server = server
        self.uid = uid
        self.request_id = request_id
        self.params = params
        self.send = send
        self.cancel = cancel
        self.policy: CompiledPolicy = server.guard.for_uid(uid)
        self.findings: list[Finding] = []

    async def report_policy(self, direction: str, findings: tuple[Finding, ...],
                            warnings: tuple[str, ...] = ()) -> None:
        self.findings.extend(findings)
        if (event := policy_event(self.request_id, direction, findings, warnings)) is not None:
            await self.send(event)

    async def run(self) -> DoneEvent:
        policy, params, history = self.policy, self.params, self.server.history
        if (problem := policy.check_input(params.message)) is not None:
            raise HushError(problem, code="too_large")
        keep = policy.storage_mode != "none"
        pseudonyms = Pseudonyms()
        past: list[dict[str, str]] = []
        cid: str | None = params.conversation
        system = params.system or self.server.settings.system_prompt
        if cid is not None:
            conversation = await history.call(Store.get, self.uid, cid)
            pseudonyms = self.server.pseudonyms.setdefault(cid, pseudonyms)
            system = params.system or conversation.system or system
            # Stored history passes the input rules again, with this conversation's
            # placeholders, so the model never sees more than a new message would show it.
            for m in conversation.messages:
                if m.error is None and m.role in ("user", "assistant"):
                    seen = policy.apply("input", m.content, pseudonyms=pseudonyms)
                    past.append({"role": m.role, "content": seen.text})

        decision = policy.apply("input", params.message, pseudonyms=pseudonyms)
        await self.report_policy("input", decision.findings, decision.warnings)
        if decision.blocked:
            self._audit()
            raise Blocked(decision.block_message or "this message is blocked by the policy")

        if keep:
            stored = policy.apply("storage", params.message)
            self.findings.extend(stored.findings)
            if cid is None:
                cid = await history.call(Store.create_conversation, self.uid,
                                         title=title_of(stored.text), system=system)
                self.server.pseudonyms[cid] = pseudonyms
            # The question is committed before any answer streams: acknowledged means kept.
            await history.call(Store.append, self.uid, cid, "user", stored.text)
        messages = [{"role": "system", "content": system}, *past,
                    {"role": "user", "content": decision.text}]
        answer, stats, redactor = await self.generate(messages, pseudonyms)
        await self.report_policy("output", redactor.decision().findings)
        if keep and cid is not None and answer:
            stored = policy.apply("storage", answer)
            self.findings.extend(stored.findings)
            await history.call(Store.append, self.uid, cid, "assistant", stored.text)
        self._audit()
        done: DoneEvent = {
            "type": "done",
            "id": self.request_id,
            "finish_reason": "blocked" if redactor.blocked else stats.finish_reason,
            "dropped_turns": stats.dropped_turns,
            "policy_version": policy.version,
            "usage": {"prompt_tokens": stats.prompt_tokens,
                      "completion_tokens": stats.completion_tokens},
            "timings": {
                "queued_ms": round(stats.queued_s * 1000, 1),
                "first_token_ms": round(stats.first_token_s * 1000, 1),
                "total_ms": round(stats.total_s * 1000, 1),
                "decode_tokens_per_s": round(stats.decode_tokens_per_s, 2),
                "batch_size": stats.batch_size,
            },
        }
        if cid is not None and keep:
            done["conversation"] = cid
        log.info("chat %s: %d+%d tokens, %s, %.1f tok/s, policy %s", self.request_id,
                 stats.prompt_tokens, stats.completion_tokens, done["finish_reason"],
                 stats.decode_tokens_per_s, policy.version)
        return done

    async def generate(self, messages: list[dict[str, str]], pseudonyms: Pseudonyms
                       ) -> tuple[str, GenerationStats, Any]:
        fields = self.params.options.model_dump()
        if fields["repetition_penalty"] is None:  # else the model's own default (Engine)
            fields["repetition_penalty"] = self.server.settings.repetition_penalty
        options = GenerationOptions(**{**fields, "stop": tuple(fields["stop"])})
        stats = GenerationStats()
        redactor = self.policy.stream("output", pseudonyms=pseudonyms)
        restorer = pseudonyms.restorer()
        shown: list[str] = []

        async def emit(text: str) -> None:
            # Placeholders the model echoes back become the user's own words again, but only
            # on the way to this user's screen.
            if text := restorer.push(text):
                shown.append(text)
                await self.send({"type": "token", "id": self.request_id, "text": text})

        stream = self.server.scheduler.generate(self.uid, messages, options, stats, self.cancel)
        async with contextlib.aclosing(stream):
            async for piece in stream:
                await emit(redactor.push(piece))
                if redactor.blocked:
                    self.cancel.set()  # nothing more of this answer may be shown
                    break
        await emit(redactor.finish())
        if tail := restorer.finish():
            shown.append(tail)
            await self.send({"type": "token", "id": self.request_id, "text": tail})
        return "".join(shown), stats, redactor

    def _audit(self) -> None:
        self.server.guard.record(self.findings, request_id=self.request_id,
                                 policy=self.policy, uid=self.uid)
