"""The last-resort reply: repeats what was heard and says the language model is unavailable.

This is what the original product said when Ollama was unreachable; it keeps the voice loop
alive (the user hears that they were understood) when every model backend is down. It is the
one wording of that reply: the orchestrator says the same (``canned_reply``) when it cannot
reach this service at all, so a user hears one apology whichever link failed.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

from services.llm.backends.base import ChatMessage, Delta, Finish, GenerationParams

# Long utterances are cut: the point is to show it was heard, not to read it all back.
MAX_ECHO_CHARS = 200

TEMPLATES = {
    "fr": "J'ai entendu : « {heard} ». Désolé, le modèle de langage n'est pas disponible pour le moment.",
    "en": 'I heard: "{heard}". Sorry, the language model is unavailable right now.',
}


def canned_reply(heard: str, language: str) -> str:
    """The reply in ``language``, echoing ``heard``. English for a language it is not written
    in: this service only ever asks for "fr" or "en", the orchestrator asks in its session's
    language, which may be any (and English is the likelier shared one)."""
    heard = " ".join(heard.split())
    if len(heard) > MAX_ECHO_CHARS:
        heard = heard[:MAX_ECHO_CHARS].rsplit(" ", 1)[0] + "…"
    return TEMPLATES.get(language, TEMPLATES["en"]).format(heard=heard)


class CannedBackend:
    """Needs no model and cannot fail."""

    name = "canned"
    model = "canned"

    async def load(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncGenerator[Delta | Finish, None]:
        heard = next((m.content for m in reversed(messages) if m.role == "user"), "")
        yield Delta(canned_reply(heard, params.language))
        yield Finish("fallback")
