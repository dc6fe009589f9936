"""Incremental synthesis: text arriving in deltas (an LLM's tokens), spoken while more arrives.

``StreamSynthesis`` cuts the text as it comes (``IncrementalSplitter``: at sentence ends, early
for the first piece), has the synthesizer normalise and segment each cut piece and speaks the
segments in order, yielding ``Spoken`` pieces that the servicer turns into protobuf messages.
It knows nothing about gRPC. Each piece of text is segmented once, by ``Synthesizer.prepare``;
the incremental cut only decides when enough raw text has arrived to hand one over.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from services.runtime.streams import Channel, producing
from services.tts import validation
from services.tts.synthesizer import TIME_TO_FIRST_AUDIO, AudioClock, Plan, Spoken, Synthesizer
from services.tts.text import IncrementalSplitter


class Flush:
    """In a stream's input, between text deltas: speak what is pending now."""


FLUSH = Flush()


class StreamSynthesis:
    """One incremental synthesis: text deltas and flushes in, speech out."""

    def __init__(self, synth: Synthesizer, plan: Plan) -> None:
        self.synth = synth
        self.plan = plan
        self.splitter = IncrementalSplitter(plan.language, synth.policy)

    async def run(self, texts: AsyncIterator[str | Flush]) -> AsyncIterator[Spoken]:
        """Yields the speech of each piece, in order, as soon as it is ready. Errors of the
        input are raised here; INVALID_ARGUMENT when nothing speakable was sent at all."""
        synth, plan = self.synth, self.plan
        # Text keeps arriving while earlier pieces are spoken: a reader task cuts it into
        # pieces and sends them on; this generator speaks them in order.
        pieces: Channel[tuple[str, float]] = Channel()
        spoken = 0
        playing = AudioClock()  # each piece is due when the audio before it has played
        async with producing(pieces, self._cut(texts, pieces)):
            async for raw, ready_at in pieces:
                for piece in synth.prepare(raw, plan, first=spoken == 0):
                    speech = await synth.speak(piece, plan, playing.due())
                    playing.add(speech.audio.duration)
                    if spoken == 0:
                        TIME_TO_FIRST_AUDIO.labels("StreamingSynthesize").observe(time.perf_counter() - ready_at)
                    yield speech
                    spoken += 1
        validation.check_stream_spoke(spoken)

    async def _cut(self, texts: AsyncIterator[str | Flush], pieces: Channel[tuple[str, float]]) -> None:
        """The producer: cuts the text into pieces as it arrives, each with when it was ready."""
        total = 0
        async for text in texts:
            if isinstance(text, Flush):
                self._send(self.splitter.flush(), pieces)
                continue
            total += len(text)
            validation.check_streamed_total(total, self.synth.max_text_chars)
            for piece in self.splitter.feed(text):
                pieces.send_nowait((piece, time.perf_counter()))
        self._send(self.splitter.flush(), pieces)

    @staticmethod
    def _send(rest: str, pieces: Channel[tuple[str, float]]) -> None:
        if rest.strip():
            pieces.send_nowait((rest, time.perf_counter()))
