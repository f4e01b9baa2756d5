"""One chat turn, end to end: policy on the way in, store, model, policy on the way out.

    system prompt and message -> input rules (block / redact / pseudonymize) -> store (storage
            rules) -> scheduler + model -> output rules on the token stream -> placeholders
            restored -> client, and the answer to the store (storage rules)

The system prompt is text from the client like the message, so it passes the same rules: a
secret in it is blocked, redacted or replaced before the model or the store sees it. The
policy is a snapshot taken when the turn starts; `done` names its version. All policy work
runs in the guard's threads, never on the event loop.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .engine.generator import GenerationOptions
from .errors import Blocked, HushError
from .guard import policy_event
from .policy import CompiledPolicy, Decision, Finding, Pseudonyms, StreamRedactor
from .protocol import ChatParams, DoneEvent
from .scheduler import GenerationStats
from .store import Store

if TYPE_CHECKING:
    from .server import Server

log = logging.getLogger("hushd.chat")

Send = Callable[[Mapping[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Screened:
    """What the model may see of one turn, after the input rules."""

    system: Decision
    past: list[dict[str, str]]
    message: Decision


def screen_input(policy: CompiledPolicy, pseudonyms: Pseudonyms, system: str,
                 history: Iterable[tuple[str, str]], message: str) -> Screened:
    """Input rules on the system prompt, the stored history and the new message (in a policy
    thread). Stored history passes them again, with this conversation's placeholders, so the
    model never sees more than a new message would show it."""
    screened_system = policy.apply("input", system, pseudonyms=pseudonyms)
    past = [{"role": role, "content": policy.apply("input", content, pseudonyms=pseudonyms).text}
            for role, content in history]
    return Screened(screened_system, past,
                    policy.apply("input", message, pseudonyms=pseudonyms))


def merged(*findings: Iterable[Finding]) -> tuple[Finding, ...]:
    """Findings of several texts in one direction, counted together."""
    counts: Counter[tuple[str, str, Any, str]] = Counter()
    for group in findings:
        for f in group:
            counts[(f.rule, f.detector, f.direction, f.action)] += f.count
    return tuple(Finding(*key, count) for key, count in sorted(counts.items()))


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
        guard = self.server.guard
        if (problem := policy.check_input(params.message)) is not None:
            raise HushError(problem, code="too_large")
        keep = policy.storage_mode != "none"
        pseudonyms = Pseudonyms()
        stored_history: list[tuple[str, str]] = []
        cid: str | None = params.conversation
        system = params.system or self.server.settings.system_prompt
        if cid is not None:
            conversation = await history.call(Store.get, self.uid, cid)
            pseudonyms = self.server.pseudonyms.setdefault(cid, pseudonyms)
            system = params.system or conversation.system or system
            stored_history = [(m.role, m.content) for m in conversation.messages
                              if m.error is None and m.role in ("user", "assistant")]
        size = len(system) + len(params.message) + sum(len(c) for _, c in stored_history)
        seen = await guard.run(size, screen_input, policy, pseudonyms, system, stored_history,
                               params.message)
        await self.report_policy("input", merged(seen.system.findings, seen.message.findings),
                                 (*seen.system.warnings, *seen.message.warnings))
        if seen.system.blocked:
            self._audit()
            raise Blocked("The system prompt is refused: "
                          f"{seen.system.block_message or 'the policy blocks it'}")
        if seen.message.blocked:
            self._audit()
            raise Blocked(seen.message.block_message or "this message is blocked by the policy")

        if keep:
            stored = await guard.apply(policy, "storage", params.message)
            self.findings.extend(stored.findings)
            if cid is None:
                stored_system = await guard.apply(policy, "storage", system)
                self.findings.extend(stored_system.findings)
                cid = await history.call(Store.create_conversation, self.uid,
                                         title=title_of(stored.text),
                                         system=stored_system.text or None)
                self.server.pseudonyms[cid] = pseudonyms
            # The question is committed before any answer streams: acknowledged means kept.
            await history.call(Store.append, self.uid, cid, "user", stored.text)
        messages = [{"role": "system", "content": seen.system.text}, *seen.past,
                    {"role": "user", "content": seen.message.text}]
        answer, stats, redactor = await self.generate(messages, pseudonyms)
        await self.report_policy("output", redactor.decision().findings)
        if keep and cid is not None and answer:
            stored = await guard.apply(policy, "storage", answer)
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
        redactor = StreamRedactor(self.policy, "output", pseudonyms)
        restorer = pseudonyms.restorer()
        shown: list[str] = []

        async def emit(text: str) -> None:
            # Placeholders the model echoes back become the user's own words again, but only
            # on the way to this user's screen.
            if text := restorer.push(text):
                shown.append(text)
                await self.send({"type": "token", "id": self.request_id, "text": text})

        run = self.server.guard.run
        stream = self.server.scheduler.generate(self.uid, messages, options, stats, self.cancel)
        async with contextlib.aclosing(stream):
            async for piece in stream:
                await emit(await run(len(piece), redactor.push, piece))
                if redactor.blocked:
                    self.cancel.set()  # nothing more of this answer may be shown
                    break
        await emit(await run(0, redactor.finish))
        if tail := restorer.finish():
            shown.append(tail)
            await self.send({"type": "token", "id": self.request_id, "text": tail})
        return "".join(shown), stats, redactor

    def _audit(self) -> None:
        self.server.guard.record(self.findings, request_id=self.request_id,
                                 policy=self.policy, uid=self.uid)
