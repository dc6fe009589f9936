"""The orchestrator: holds spoken conversations by chaining STT, LLM and TTS with the stages
overlapping, so the first words of the answer play while the rest is still being generated.

Follow the audio by reading ``Conversation.run`` (``session.py``), a list of four stages that
run at once for the whole session and emit into one outbox (``outbox.py``), the Converse
response stream:

1. ``stages/intake.py``: the client's messages. Microphone audio passes the gate
   (``gate.py``: ignored while the answer plays, so the assistant never hears itself) to
   listen; playback reports go to the gate; typed text becomes a turn.
2. ``stages/listen.py``: microphone audio → one long-lived STT stream (reopened if the
   service drops) → speech events and transcripts; a final transcript with words becomes a
   turn (``turn.py``), timed from when the voice stopped (``gate.AudioClock``). On a full
   machine whose final runs late, ``stages/early.py`` says "one moment" from the end of
   speech, under the turn id the words then get. Requests are checked in ``validation.py``.
3. ``stages/answer.py``: one turn at a time. ``stages/think.py`` streams the LLM's tokens as
   answer text while ``stages/speak.py`` feeds them into a TTS stream and gets audio back
   clause by clause. Everything a turn says leaves through its ``TurnOutput`` (``turn.py``):
   text, audio (where the gate closes), stage errors, the end, the latency record. A failing
   LLM or TTS is called under a breaker (``guard.py``) and the turn degrades: a canned reply
   spoken, or text only. Barge-in or an interrupt cancels the turn.
4. ``gate.Gatekeeper.run``: reopens the microphone once the client has played the answer
   (plus a tail for the room's echo).

Every turn ends with a ``TurnLatency`` record: seconds from the end of speech to each hop the
turn went through (``turn.POINTS``: end of turn detected, final transcript, turn started, LLM
request, first token, first text into the TTS stream, first TTS audio, first audio released,
last audio), also observed in ``parole_turn_latency_seconds{stage}``.

Streams between stages are ``services.runtime.streams.Channel`` (mic → STT requests, LLM text
→ TTS requests, the outbox); ``metrics.py`` holds the Prometheus metrics; ``servicer.py`` and
``app.py`` are the gRPC side.
"""
