"""The LLM contract's request limits and checks: Generate and AddExchange requests, and the
session id every session RPC carries. The servicer calls these and the session store checks
ids with ``check_session_id``; what only the running service can tell (a backend this server
does not have) is refused where it is known.

Most caps are the server's settings (``LLM_MAX_TEXT_CHARS``, ``LLM_MAX_MESSAGES``,
``LLM_MAX_TOKENS_LIMIT``): they are built from them here, so the message and the field
violation of each are still written once. The orchestrator checks the session ids it passes
on with ``check_session_id``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from parole.llm.v1 import llm_pb2
from services.llm.backends.base import ChatMessage, Role
from services.llm.config import LANGUAGES, LlmSettings
from services.runtime.errors import InvalidArgument
from services.runtime.validation import Cap, Limit

SESSION_ID = re.compile(r"[A-Za-z0-9_.\-]{1,128}")  # used with fullmatch: "$" would accept a trailing newline
TEMPERATURE = Limit("options.temperature", 0.0, 2.0)
ROLES: dict[llm_pb2.Role.ValueType, Role] = {
    llm_pb2.ROLE_SYSTEM: "system",
    llm_pb2.ROLE_USER: "user",
    llm_pb2.ROLE_ASSISTANT: "assistant",
}


@dataclass(frozen=True)
class CheckedGenerate:
    """A Generate request's fields once checked (the servicer makes the command of them)."""

    text: str
    """Stripped; may be empty for a stateless call whose last message is the user's."""
    messages: list[ChatMessage]
    temperature: float | None


def check_session_id(session_id: str, field_name: str = "session_id") -> str:
    """The id, or INVALID_ARGUMENT saying what an id may contain."""
    if not SESSION_ID.fullmatch(session_id):
        raise InvalidArgument(
            "session_id must be 1 to 128 letters, digits, '-', '_' or '.'",
            fields={field_name: "letters, digits, '-', '_' or '.', 1 to 128 characters"},
        )
    return session_id


def check_language(language: str, field: str) -> None:
    """Empty (the session's or the server's default) or one the prompts are written in."""
    if language and language not in LANGUAGES:
        raise InvalidArgument(f"language '{language}' is not supported", fields={field: " or ".join(LANGUAGES)})


def _text_cap(settings: LlmSettings, field: str) -> Cap:
    return Cap(field, settings.max_text_chars, "characters")


def _check_messages(request: llm_pb2.GenerateRequest, settings: LlmSettings) -> list[ChatMessage]:
    """A stateless call's messages."""
    Cap("messages", settings.max_messages, "messages").check(len(request.messages))
    messages: list[ChatMessage] = []
    for i, m in enumerate(request.messages):
        role = ROLES.get(m.role)
        if role is None:
            raise InvalidArgument(
                f"messages[{i}] has no valid role", fields={f"messages[{i}].role": "system, user or assistant"}
            )
        _text_cap(settings, f"messages[{i}].content").check(len(m.content), f"messages[{i}]")
        if not m.content.strip():
            raise InvalidArgument(f"messages[{i}] is empty", fields={f"messages[{i}].content": "must not be empty"})
        messages.append(ChatMessage(role, m.content))
    return messages


def check_generate(request: llm_pb2.GenerateRequest, settings: LlmSettings) -> CheckedGenerate:
    """A Generate request: a session turn (session_id and text) or a stateless call (messages)."""
    text = request.text.strip()
    _text_cap(settings, "text").check(len(request.text))
    if request.session_id and request.messages:
        raise InvalidArgument(
            "send either session_id (server-kept history) or messages (stateless), not both",
            fields={"messages": "must be empty when session_id is set"},
        )
    if request.speculative and not request.session_id:
        raise InvalidArgument(
            "speculative answers are for sessions: a stateless call (messages) remembers nothing anyway",
            fields={"speculative": "needs session_id"},
        )
    messages: list[ChatMessage] = []
    if request.session_id:
        check_session_id(request.session_id)
        if not text:
            raise InvalidArgument("text is empty", fields={"text": "the user's turn must not be empty"})
    else:
        messages = _check_messages(request, settings)
        if not text and (not messages or messages[-1].role != "user"):
            raise InvalidArgument(
                "nothing to answer: text is empty and the last message is not the user's",
                fields={"text": "the user's turn must not be empty"},
            )
    opts = request.options
    Limit("options.max_tokens", 0, settings.max_tokens_limit, hint="0: the server default").check(opts.max_tokens)
    temperature = TEMPERATURE.check(opts.temperature) if opts.HasField("temperature") else None
    check_language(opts.language, "options.language")
    _text_cap(settings, "options.system_prompt").check(len(opts.system_prompt))
    return CheckedGenerate(text, messages, temperature)


def check_add_exchange(request: llm_pb2.AddExchangeRequest, settings: LlmSettings) -> None:
    """An AddExchange request: a session, both halves of the exchange, and its language."""
    check_session_id(request.session_id)
    for name in ("user", "assistant"):
        value = getattr(request, name)
        if not value.strip():
            raise InvalidArgument(f"{name} is empty", fields={name: "must not be empty"})
        _text_cap(settings, name).check(len(value))
    check_language(request.language, "language")
