"""Answer: the turns, one at a time. Each turn runs think (LLM → text) and speak (text → TTS
→ audio) at once, joined by a channel of text, with everything it says going out through its
``TurnOutput``. An interrupt (barge-in, or the client's control message) cancels the turn in
progress and tells the client to stop playing.

Preemptive answers: when the STT sends the transcript of a pause before deciding whether the
turn is over, ``speculate`` starts answering it at once with the turn's output held back. The
final transcript then either confirms it (same words: what was held goes out at once and the
turn goes on, the LLM's head start kept) or replaces it (the speaker said more: it is
cancelled, nothing of it was heard); speech resuming withdraws it (``withdraw``)."""

from __future__ import annotations

import asyncio
import functools
import re
import time

import structlog

from parole.orchestrator.v1 import orchestrator_pb2 as pb
from services.orchestrator.admission import Admission, Busy, Declined, declined_text, notice_text
from services.orchestrator.gate import Gatekeeper
from services.orchestrator.metrics import CONTINUATIONS, SPECULATIVE_TURNS, WAIT_NOTICES
from services.orchestrator.outbox import Outbox
from services.orchestrator.stages.early import EarlyNotice
from services.orchestrator.stages.speak import WARM_TIMEOUT, Speak
from services.orchestrator.stages.think import Think
from services.orchestrator.turn import Turn, TurnOutput, TurnQueue
from services.runtime.streams import Channel, producing


class Answer:
    """The answering stage: ``run`` takes turns from the queue; ``interrupt`` cuts one short."""

    def __init__(
        self,
        think: Think,
        speak: Speak,
        *,
        turns: TurnQueue,
        outbox: Outbox,
        gate: Gatekeeper,
        output_rate: int,
        log: structlog.stdlib.BoundLogger,
        admission: Admission,
        language: str,
        continuation: float = 0.0,
    ) -> None:
        self.think = think
        self.speak = speak
        self.turns = turns
        self.outbox = outbox
        self.gate = gate
        self.output_rate = output_rate
        self.log = log
        self.current: asyncio.Task[None] | None = None
        self.current_turn: Turn | None = None
        self.current_out: TurnOutput | None = None
        self.continuation = continuation
        self.held: TurnOutput | None = None
        """The turn whose output waits because the speaker resumed right after it (``hold``)."""
        self._hold_over = asyncio.Event()
        self._hold_over.set()
        self.admission = admission
        self.language = language
        self.ahead: Ahead | None = None
        """The turn answered ahead on a speculative transcript, waiting for its final."""
        self.early = EarlyNotice(turns=turns, outbox=outbox, gate=gate, admission=admission, say=self._notice)
        """Says "one moment" from the end of speech when the final runs late on a full machine."""

    async def run(self) -> None:
        """One turn at a time until the queue ends; then the session's stream ends too."""
        # The wait notice is said when the machine is full, when a synthesis would be slowest:
        # have it ready now in this session's voice, while the session has nothing to say.
        warm = asyncio.create_task(self.speak.phrase(notice_text(self.language), WARM_TIMEOUT), name="warm-notice")
        try:
            async for turn in self.turns.channel:
                watchdog: asyncio.Task[None] | None = None
                ahead, self.ahead = self.ahead, None
                noticed = self.early.take(turn)  # it said "one moment" before its words came
                # An answer ahead that degraded (the LLM refused a guess while busy, or failed)
                # is not kept: the final gets a real try.
                if (
                    ahead is not None
                    and noticed is None
                    and not ahead.turn.degraded
                    and same_words(ahead.turn.text, turn.text)
                ):
                    out = ahead.adopt(turn)
                    turn = out.turn
                    self.current = ahead.task
                    # Its own watch did not run (a guess must not say "one moment"): now a turn.
                    watchdog = asyncio.create_task(self._watch(turn, out), name="watch-adopted")
                else:
                    if ahead is not None:
                        await ahead.abandon()
                    turn.mark("turn_started", time.monotonic())
                    out = noticed or TurnOutput(turn, self.outbox, self.gate)
                    self.current = asyncio.create_task(self.answer(turn, out), name=f"turn-{turn.turn_id}")
                self.current_turn, self.current_out = turn, out
                # wait() (unlike await) does not raise the turn's own cancellation (a barge-in),
                # while a cancellation of this loop (the session ending) still propagates.
                try:
                    await asyncio.wait({self.current})
                finally:
                    if watchdog is not None:
                        watchdog.cancel()
                        watchdog = None
                if self.held is out:  # it ended while held: the next final says what becomes of it
                    await self._hold_over.wait()
                if turn.merged or out.held is not None or self.current.cancelled():
                    # interrupted, or merged into the next turn: what was held goes unheard
                    if out.held is not None:
                        out.discard()
                    self._finished(out, interrupted=True)
                elif (error := self.current.exception()) is not None:
                    raise error
                await self.think.remember(turn)
                self.current, self.current_turn, self.current_out = None, None, None
        finally:
            self.early.close()
            # The session ended mid-turn (the client left, a stage failed): the turn goes too.
            for task in (warm, self.current, self.ahead.task if self.ahead else None):
                if task is not None and not task.done():
                    task.cancel()
                    await asyncio.wait({task})
        # The client closed its side and every queued turn is answered: end the stream.
        self.outbox.close()

    async def answer(self, turn: Turn, out: TurnOutput) -> None:
        """One turn: think and speak at once, the LLM's text flowing into the TTS stream."""
        turn.out_rate = self.output_rate
        structlog.contextvars.bind_contextvars(turn_id=turn.turn_id)
        self.log.debug("turn", text=turn.text, ahead=turn.speculative)
        # Unbounded: the text of one answer is small, and the LLM must never wait on the TTS
        # (the client gets the text as it comes even when the speech lags or failed).
        speech: Channel[str] = Channel()
        watchdog = None if turn.speculative else asyncio.create_task(self._watch(turn, out))
        self.admission.answering += 1
        try:
            async with producing(speech, self._think(turn, out, speech)):
                await self.speak.run(out, speech)
        finally:
            self.admission.answering -= 1
            if watchdog is not None:
                watchdog.cancel()
        if turn.speculative and pb.STAGE_LLM in turn.degraded:
            return  # an answer ahead that found the model busy: its final gets a real try
        out.end()
        self._finished(out, interrupted=False)

    async def _think(self, turn: Turn, out: TurnOutput, speech: Channel[str]) -> None:
        """The language model's part of the turn, in an answer slot: the slot is held while
        the model writes, and freed as soon as it is done (the TTS speaking the end of this
        answer overlaps the next turn's thinking)."""
        try:
            # An answer ahead never waits: it would hold a place in the queue for a guess.
            notify = functools.partial(self._notice, out)
            async with self.admission.slot(notify, wait=not turn.speculative, since=turn.start) as waited:
                if waited:
                    turn.mark("answer_slot", time.monotonic())
                await self.think.run(turn, out, speech)
        except Busy:
            # Marked degraded, so the final does not adopt it and gets a real try in the queue.
            turn.degraded.add(pb.STAGE_LLM)
            SPECULATIVE_TURNS.labels("skipped_busy").inc()
        except Declined as declined:
            self._decline(turn, out, speech, declined.waited)

    async def _watch(self, turn: Turn, out: TurnOutput) -> None:
        """Never silence past the notice budget on a shared machine: a turn with no audio yet
        when it runs out, while other conversations are open or other turns are answered too,
        says "one moment". Alone, a slow answer just comes (a notice would only push it back)."""
        await asyncio.sleep(max(0.0, turn.start + self.admission.notice_after - time.monotonic()))
        if "first_audio" not in turn.timing and self.admission.shared:
            await self._notice(out, self.admission.expected_wait(0))

    async def _notice(self, out: TurnOutput, expected_wait: float) -> None:
        """The turn must wait for the language model: say so out loud now (once a turn)."""
        if out.noticed:
            return
        out.noticed = True
        WAIT_NOTICES.labels("notice").inc()
        text = notice_text(self.language)
        chunk = await self.speak.phrase(text)
        out.wait_notice(text, expected_wait, [chunk] if chunk is not None else [])
        self.log.info("turn waits for the language model", expected_wait=round(expected_wait, 1))

    def _decline(self, turn: Turn, out: TurnOutput, speech: Channel[str], waited: float) -> None:
        """No slot within the give-up budget: a polite refusal is the turn's answer, spoken."""
        WAIT_NOTICES.labels("declined").inc()
        text = declined_text(self.language)
        turn.mark("first_token", time.monotonic())
        out.text(text)
        speech.send_nowait(text)
        out.degraded(
            pb.STAGE_LLM,
            f"the language model was busy with other conversations for {waited:.0f} s; the turn was declined "
            "(ask again, or add answer capacity: ORCH_ANSWER_SLOTS with a backend that serves several at once)",
            code="RESOURCE_EXHAUSTED",
        )

    def speculate(self, text: str, *, start: float, heard_at: float) -> None:
        """Starts answering a pause's transcript ahead of its final, its output held back.
        Only when nothing else is being answered or waits: a turn must never overtake one."""
        if self.ahead is not None:
            self.ahead.cancel()
            self.ahead = None
        if self.current is not None or self.turns.waiting or self.gate.closed(time.monotonic()):
            return
        if not self.admission.idle:
            SPECULATIVE_TURNS.labels("skipped_busy").inc()
            return
        turn = Turn("", text, start, heard_at, speculative=True)
        turn.mark("speculative_transcript", heard_at)
        turn.mark("turn_started", heard_at)
        out = TurnOutput(turn, self.outbox, self.gate, held=True)
        self.ahead = Ahead(out, asyncio.create_task(self.answer(turn, out), name="turn-ahead"))
        SPECULATIVE_TURNS.labels("started").inc()

    def withdraw(self) -> None:
        """The speaker went on after the pause: the answer ahead is for words they did not
        end on. Nothing of it was heard."""
        if self.ahead is not None:
            self.ahead.cancel()
            self.ahead = None

    def hold(self, now: float) -> bool:
        """Speech resumed. If the turn being answered was spoken and ended less than
        ``continuation`` seconds ago, and nothing of its answer has been heard, the speaker may
        be going on with the same sentence: its output is held (the LLM and TTS go on) until
        the next final says (``merge``) or the speech proves to be noise (``release``)."""
        turn, out = self.current_turn, self.current_out
        if self.held is not None:
            return True
        if turn is None or out is None or self.current is None or self.current.done() or not turn.spoken:
            return False
        if "first_audio" in turn.timing or out.noticed or now - turn.start > self.continuation:
            return False
        out.hold()
        self.held = out
        self._hold_over.clear()
        CONTINUATIONS.labels("held").inc()
        return True

    def merge(self) -> str | None:
        """The speaker went on with words: the held turn is cancelled unheard (the LLM does
        not remember it) and its text returned, to be joined to the new final's."""
        out, self.held = self.held, None
        self._hold_over.set()
        if out is None:
            return None
        out.turn.merged = True
        if self.current is not None and self.current_out is out:
            self.current.cancel()
        CONTINUATIONS.labels("merged").inc()
        self.log.info("the speaker went on after a pause: the turn continues", turn_id=out.turn.turn_id)
        return out.turn.text

    def release(self) -> None:
        """The speech that resumed held no words (a cough, a door), or recognition stopped:
        the held answer goes out now, and on as it comes."""
        out, self.held = self.held, None
        self._hold_over.set()
        if out is not None:
            out.confirm()
            CONTINUATIONS.labels("released").inc()

    def interrupt(self, reason: str) -> None:
        """Barge-in or interrupt: cancel the answer in progress and tell the client to stop."""
        self.withdraw()
        self.held = None  # a held turn interrupted here is discarded by ``run``
        self._hold_over.set()
        turn_id = self.current_turn.turn_id if self.current_turn else self.gate.turn_id
        if self.current is not None and not self.current.done():
            self.current.cancel()
        elif turn_id is None or not self.gate.closed(time.monotonic()):
            return  # nothing is being said or played
        self.outbox.emit(turn_id or "", stop_playback=pb.StopPlayback(turn_id=turn_id or "", reason=reason))
        self.gate.open()

    def _finished(self, out: TurnOutput, *, interrupted: bool) -> None:
        outcome = out.finish(interrupted=interrupted)
        self.log.info("turn done", outcome=outcome, **{k: round(v, 3) for k, v in out.turn.timing.items()})


class Ahead:
    """A turn answered on a speculative transcript, its output held until the final comes."""

    def __init__(self, out: TurnOutput, task: asyncio.Task[None]) -> None:
        self.out = out
        self.task = task

    @property
    def turn(self) -> Turn:
        return self.out.turn

    def adopt(self, final: Turn) -> TurnOutput:
        """The final has the same words: the turn takes the final's id and timing, and what
        it has said so far is released (the LLM and TTS may be well ahead by now)."""
        turn = self.out.turn
        turn.turn_id = final.turn_id
        turn.final_at = final.final_at
        turn.spoken = final.spoken
        for point in ("end_of_turn", "final_transcript"):
            if point in final.timing:
                turn.timing[point] = final.timing[point] + final.start - turn.start
        self.out.confirm()
        SPECULATIVE_TURNS.labels("confirmed").inc()
        return self.out

    def cancel(self) -> None:
        self.out.drop()
        self.task.cancel()
        SPECULATIVE_TURNS.labels("withdrawn").inc()

    async def abandon(self) -> None:
        """The final said something else: the answer ahead goes, unheard."""
        self.cancel()
        await asyncio.wait({self.task})


def same_words(a: str, b: str) -> bool:
    """The same words, whatever the case, spacing and punctuation."""
    return _words(a) == _words(b)


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())
