"""Admission on a full machine: answer slots taken in arrival order, the spoken wait notice,
the polite refusal past the give-up budget, and new conversations refused with a retry hint.
First the slots on their own, then through the real orchestrator over fake services."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from client.converse import EventNotSeen
from parole.orchestrator.v1 import orchestrator_pb2 as pb
from services.orchestrator.admission import DECLINED, NOTICE, Admission, Busy, Declined
from services.orchestrator.app import SERVICE
from services.runtime import healthcheck
from services.runtime.errors import retry_delay
from tests.e2e.driver import Session, final_transcript, is_kind
from tests.orchestrator.conftest import Harness
from tests.orchestrator.fakes import final, speculative, speech_event

WAIT = 15.0


class Notices:
    """Records the expected waits ``Admission.slot`` announced, and when."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, float]] = []
        self.began = time.monotonic()
        self.told = asyncio.Event()

    async def __call__(self, expected_wait: float) -> None:
        self.calls.append((time.monotonic() - self.began, expected_wait))
        self.told.set()

    async def first(self) -> tuple[float, float]:
        async with asyncio.timeout(WAIT):
            await self.told.wait()
        return self.calls[0]


async def queued(admission: Admission, n: int) -> None:
    """Lets the new waiting tasks run to their first suspension: each joins the queue there."""
    await asyncio.sleep(0)
    assert admission.waiting == n


async def hold(admission: Admission, release: asyncio.Event, entered: asyncio.Event | None = None) -> float:
    async with admission.slot() as waited:
        if entered is not None:
            entered.set()
        await release.wait()
    return waited


async def test_a_free_slot_is_taken_at_once_and_its_time_feeds_the_expected_wait() -> None:
    admission = Admission(1, notice_after=1.0, give_up_after=5.0)
    notices = Notices()
    assert admission.free and admission.expected_wait() == 0
    async with admission.slot(notices) as waited:
        assert waited == 0.0 and not admission.free and admission.busy == 1
        assert admission.expected_wait() == pytest.approx(admission.service_seconds)
    assert notices.calls == [] and admission.free
    assert admission.service_seconds < 3.0  # the short hold pulled the 3 s prior down


async def test_waiting_turns_get_their_slots_in_arrival_order() -> None:
    admission = Admission(1, notice_after=10.0, give_up_after=20.0)
    release, entered = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(hold(admission, release, entered))
    await entered.wait()
    order: list[str] = []

    async def turn(name: str) -> None:
        async with admission.slot():
            order.append(name)

    waiting = [asyncio.create_task(turn(name)) for name in ("a", "b", "c")]
    await queued(admission, 3)
    assert admission.expected_wait() == pytest.approx(4 * admission.service_seconds)
    release.set()
    await asyncio.gather(first, *waiting)
    assert order == ["a", "b", "c"] and admission.busy == admission.waiting == 0


async def test_the_slot_announces_a_wait_only_when_it_would_run_past_the_notice_budget() -> None:
    """Counted from the end of speech (``since``): a short expected wait is not announced (the
    answering stage's own timer covers it if it runs late); one that would end past the
    budget is, at once."""
    admission = Admission(1, notice_after=1.0, give_up_after=10.0)
    admission.service_seconds = 0.5
    release, entered = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(hold(admission, release, entered))
    await entered.wait()
    short, late = Notices(), Notices()
    quiet = asyncio.create_task(_slot(admission, short, since=time.monotonic()))
    await queued(admission, 1)
    # The same 0.5 s of expected wait, for a person who stopped speaking 0.8 s ago: past 1 s.
    told = asyncio.create_task(_slot(admission, late, since=time.monotonic() - 0.8))
    at, expected = await late.first()
    assert at < 0.5 and expected == pytest.approx(1.0)  # one turn ahead of it now, one in the slot
    release.set()
    await asyncio.gather(holder, quiet, told)
    assert short.calls == [] and len(late.calls) == 1


async def _slot(admission: Admission, notices: Notices, since: float | None = None) -> float:
    async with admission.slot(notices, since=since) as waited:
        return waited


async def test_a_long_expected_wait_is_announced_at_once() -> None:
    admission = Admission(1, notice_after=3.0, give_up_after=30.0)
    admission.service_seconds = 8.0
    release, entered = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(hold(admission, release, entered))
    await entered.wait()
    notices = Notices()
    waiter = asyncio.create_task(_slot(admission, notices))
    at, expected = await notices.first()
    assert at < 0.5 and expected == pytest.approx(8.0)
    release.set()
    await asyncio.gather(holder, waiter)
    assert len(notices.calls) == 1


async def test_past_the_give_up_budget_the_turn_is_declined_and_the_slot_is_not_lost() -> None:
    admission = Admission(1, notice_after=0.1, give_up_after=0.4)
    release, entered = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(hold(admission, release, entered))
    await entered.wait()
    notices = Notices()
    with pytest.raises(Declined) as declined:
        await _slot(admission, notices)
    assert declined.value.waited >= 0.4 and len(notices.calls) == 1
    assert admission.waiting == 0
    release.set()
    await holder
    assert admission.free
    assert await _slot(admission, Notices()) < 0.05  # the semaphore kept its one slot


async def test_a_cancelled_wait_leaves_the_queue_and_an_answer_ahead_never_waits() -> None:
    admission = Admission(1, notice_after=5.0, give_up_after=10.0)
    release, entered = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(hold(admission, release, entered))
    await entered.wait()
    with pytest.raises(Busy):
        async with admission.slot(wait=False):
            pass
    waiter = asyncio.create_task(_slot(admission, Notices()))
    await queued(admission, 1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert admission.waiting == 0
    release.set()
    await holder
    assert admission.free and await _slot(admission, Notices()) < 0.05


# --------------------------------------------------------------- through the orchestrator


def fast_admission(harness: Harness, *, notice_after: float, give_up_after: float) -> Admission:
    """Short budgets for the test (sessions take the stubs' admission when they start)."""
    admission = Admission(1, notice_after=notice_after, give_up_after=give_up_after)
    harness.app.stubs.admission = admission
    return admission


async def busy_model(harness: Harness) -> Session:
    """A conversation whose answer holds the only slot until ``llm.hold`` is set."""
    llm = harness.fakes.llm
    llm.hold = asyncio.Event()
    busy = harness.session()
    await busy.wait_for(is_kind("session_started"), timeout=WAIT)
    busy.send_text("Tell me a long story.")
    async with asyncio.timeout(WAIT):
        await llm.called.wait()
    return busy


async def test_a_turn_behind_a_busy_model_hears_one_moment_then_its_answer(harness: Harness) -> None:
    admission = fast_admission(harness, notice_after=0.3, give_up_after=WAIT)
    admission.service_seconds = 0.1  # expected to be short: told when the notice budget runs out
    busy = await busy_model(harness)
    s = harness.session()
    await s.wait_for(is_kind("session_started"), timeout=WAIT)
    s.send_text("What time is it?")
    notice = (await s.wait_for(is_kind("wait_notice"), timeout=WAIT)).wait_notice
    assert notice.text == NOTICE["en"] and notice.expected_wait_seconds > 0
    spoken = await s.wait_for(lambda m: m.WhichOneof("event") == "reply_audio" and m.reply_audio.notice, timeout=WAIT)
    assert spoken.reply_audio.text == NOTICE["en"] and spoken.reply_audio.audio
    assert NOTICE["en"] in harness.fakes.tts.phrases  # cached at start-up and each session's start, then said
    assert not s.of("reply_text"), "nothing of the answer before the model is free"
    assert harness.fakes.llm.hold is not None
    harness.fakes.llm.hold.set()
    lat = (await s.wait_for(is_kind("latency"), timeout=WAIT)).latency
    at = {m.point: m.seconds for m in lat.marks}
    assert 0.3 <= at["wait_notice"] < at["answer_slot"] <= at["first_token"] <= at["first_audio"]
    assert lat.first_audio_seconds == at["first_audio"] and not lat.degraded_stages
    answer = [m.reply_audio for m in s.of("reply_audio") if not m.reply_audio.notice and m.reply_audio.audio]
    assert answer and lat.reply_text == "".join(m.reply_text.delta for m in s.of("reply_text"))
    await s.close(timeout=WAIT)
    await busy.close(timeout=WAIT)


async def test_a_turn_waiting_past_the_give_up_budget_is_declined_out_loud(harness: Harness) -> None:
    fast_admission(harness, notice_after=0.2, give_up_after=0.8)
    s = harness.session(language="fr")  # before the machine is full: it would be refused after
    await s.wait_for(is_kind("session_started"), timeout=WAIT)
    busy = await busy_model(harness)
    s.send_text("Quelle heure est-il ?")
    lat = (await s.wait_for(is_kind("latency"), timeout=WAIT)).latency
    assert lat.reply_text == DECLINED["fr"] and lat.degraded_stages == [pb.STAGE_LLM]
    assert [(e.error.code, e.error.degraded) for e in s.of("error")] == [("RESOURCE_EXHAUSTED", True)]
    assert "ORCH_ANSWER_SLOTS" in s.of("error")[0].error.message
    assert NOTICE["fr"] in harness.fakes.tts.phrases and harness.fakes.tts.texts[-1] == DECLINED["fr"]
    assert [r.text for r in harness.fakes.llm.requests] == ["Tell me a long story."], "never sent to the model"
    assert harness.fakes.llm.hold is not None
    harness.fakes.llm.hold.set()
    await s.close(timeout=WAIT)
    await busy.close(timeout=WAIT)


async def test_a_new_conversation_is_refused_with_a_retry_hint_while_the_wait_is_too_long(harness: Harness) -> None:
    admission = fast_admission(harness, notice_after=3.0, give_up_after=5.0)
    admission.on_saturation = harness.app.saturation_changed
    busy = await busy_model(harness)
    admission.service_seconds = 12.0  # a turn arriving now would wait 12 s > 5 s
    admission.report()
    # Readiness says so (the service's own name), liveness does not ("").
    assert await health(harness, SERVICE) == healthcheck.NOT_SERVING
    assert await health(harness, "") == healthcheck.SERVING
    refused = harness.session()
    reason = await refused.wait_ended()
    assert refused.error is not None and refused.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, reason
    assert "retry in 12 s" in (refused.error.details() or "")
    assert retry_delay(refused.error) == pytest.approx(12.0)
    assert harness.fakes.llm.hold is not None
    harness.fakes.llm.hold.set()
    await busy.close(timeout=WAIT)
    assert not admission.saturated and await health(harness, SERVICE) == healthcheck.SERVING
    again = harness.session()
    await again.wait_for(is_kind("session_started"), timeout=WAIT)
    await again.close(timeout=WAIT)


async def health(harness: Harness, name: str) -> int:
    """The orchestrator's health for ``name``, once pending updates have run."""
    await asyncio.sleep(0)  # the status is set by a task the saturation change scheduled
    return await healthcheck.status(harness.channel, service=name, deadline=WAIT)


async def listening(harness: Harness, streams: int) -> None:
    """Waits until ``streams`` STT streams were opened: the fake STT speaks on the newest."""
    async with asyncio.timeout(WAIT):
        while harness.fakes.stt.streams < streams:
            harness.fakes.stt.connected.clear()  # no await since the check: none is missed
            await harness.fakes.stt.connected.wait()


async def ended_beside_a_busy_model(harness: Harness) -> tuple[Session, Session]:
    """Another conversation holds the model; this one's speech just ended (0.3 s notice budget)."""
    fast_admission(harness, notice_after=0.3, give_up_after=WAIT)
    busy = await busy_model(harness)
    s = harness.session()
    await s.wait_for(is_kind("session_started"), timeout=WAIT)
    await listening(harness, 2)
    harness.fakes.stt.send(speech_event(True))
    harness.fakes.stt.send(speech_event(False))
    return busy, s


async def test_a_final_running_late_on_a_busy_machine_says_one_moment_from_the_end_of_speech(
    harness: Harness,
) -> None:
    """On a full machine the STT's final can come seconds after the end of speech: the notice
    is timed from the end (SPEECH_ENDED), under the turn id the words then get, said once."""
    busy, s = await ended_beside_a_busy_model(harness)
    stt = harness.fakes.stt
    notice = await s.wait_for(is_kind("wait_notice"), timeout=WAIT)
    spoken = await s.wait_for(lambda m: is_kind("reply_audio")(m) and m.reply_audio.notice, timeout=WAIT)
    assert notice.turn_id and spoken.turn_id == notice.turn_id
    assert not [m for m in s.of("transcript") if m.transcript.is_final], "said before the words were recognised"
    stt.send(final("What time is it?"))
    heard = await s.wait_for(final_transcript, timeout=WAIT)
    assert heard.turn_id == notice.turn_id
    assert harness.fakes.llm.hold is not None
    harness.fakes.llm.hold.set()
    lat = await s.wait_for(is_kind("latency"), timeout=WAIT)
    at = {m.point: m.seconds for m in lat.latency.marks}
    assert lat.turn_id == notice.turn_id and 0.3 <= at["wait_notice"] < at["final_transcript"] < at["first_audio"]
    assert len(s.of("wait_notice")) == 1, "said once, not again when the turn waited for its slot"
    answer = [m for m in s.of("reply_audio") if m.reply_audio.audio and not m.reply_audio.notice]
    assert answer and {m.turn_id for m in answer} == {notice.turn_id}
    sequences = [m.reply_audio.sequence for m in s.of("reply_audio") if m.turn_id == notice.turn_id]
    assert sequences == sorted(set(sequences)), "one numbering for the notice and the answer"
    await s.close(timeout=WAIT)
    await busy.close(timeout=WAIT)


async def test_a_notice_said_for_a_cough_ends_its_turn_and_none_is_said_over_resumed_speech(
    harness: Harness,
) -> None:
    busy, s = await ended_beside_a_busy_model(harness)
    stt = harness.fakes.stt
    notice = await s.wait_for(is_kind("wait_notice"), timeout=WAIT)
    stt.send(final(""))  # it was a cough: no words, no answer, and the turn ends
    lat = await s.wait_for(is_kind("latency"), timeout=WAIT)
    assert lat.turn_id == notice.turn_id and lat.latency.reply_text == "" and not lat.latency.interrupted
    assert [m.turn_id for m in s.of("reply_audio") if m.reply_audio.is_last] == [notice.turn_id]
    # The person pauses and goes on before the budget: nothing is said over their words.
    stt.send(speech_event(True))
    stt.send(speech_event(False))
    stt.send(speech_event(True))
    ended = time.monotonic()
    with pytest.raises(EventNotSeen):
        await s.wait_for(lambda m: is_kind("wait_notice")(m) and m.turn_id != notice.turn_id, timeout=1.0)
    assert time.monotonic() - ended >= 0.9
    assert [r.text for r in harness.fakes.llm.requests] == ["Tell me a long story."]
    assert harness.fakes.llm.hold is not None
    harness.fakes.llm.hold.set()
    await s.close(timeout=WAIT)
    await busy.close(timeout=WAIT)


async def test_alone_a_late_final_says_no_notice(harness: Harness) -> None:
    """Nothing else is answered: the late words are answered as they come (a notice would
    only push the answer back)."""
    fast_admission(harness, notice_after=0.3, give_up_after=WAIT)
    s = harness.session()
    await s.wait_for(is_kind("session_started"), timeout=WAIT)
    await listening(harness, 1)
    stt = harness.fakes.stt
    stt.send(speech_event(True))
    stt.send(speech_event(False))
    with pytest.raises(EventNotSeen):
        await s.wait_for(is_kind("wait_notice"), timeout=1.0)
    stt.send(final("What time is it?"))
    lat = await s.wait_for(is_kind("latency"), timeout=WAIT)
    assert "wait_notice" not in {m.point for m in lat.latency.marks} and not s.of("wait_notice")
    await s.close(timeout=WAIT)


async def test_a_slow_answer_beside_another_open_conversation_hears_one_moment(harness: Harness) -> None:
    """No other answer is in progress, but another conversation is open (its listening takes
    cores too): a turn whose speech is still silent at the notice budget says "one moment";
    alone it would not."""
    fast_admission(harness, notice_after=0.3, give_up_after=WAIT)
    tts = harness.fakes.tts
    tts.hold = asyncio.Event()  # a slow voice: the answer's text is there, its audio is not
    alone = harness.session()
    await alone.wait_for(is_kind("session_started"), timeout=WAIT)
    alone.send_text("What time is it?")
    with pytest.raises(EventNotSeen):
        await alone.wait_for(is_kind("wait_notice"), timeout=1.0)
    tts.hold.set()
    await alone.wait_for(is_kind("latency"), timeout=WAIT)
    tts.hold = asyncio.Event()
    other = harness.session()
    await other.wait_for(is_kind("session_started"), timeout=WAIT)
    alone.send_text("And the date?")
    notice = await alone.wait_for(is_kind("wait_notice"), timeout=WAIT)
    assert notice.wait_notice.text == NOTICE["en"] and not other.of("wait_notice")
    tts.hold.set()
    lat = await alone.wait_for(lambda m: is_kind("latency")(m) and m.turn_id == notice.turn_id, timeout=WAIT)
    at = {m.point: m.seconds for m in lat.latency.marks}
    assert 0.3 <= at["wait_notice"] < at["first_audio"]
    await other.close(timeout=WAIT)
    await alone.close(timeout=WAIT)


async def test_an_answer_ahead_still_silent_at_the_budget_says_one_moment_once_adopted(harness: Harness) -> None:
    """The answer started on the pause's transcript is adopted by the final; on a shared
    machine its slow speech gets the notice like any turn's."""
    fast_admission(harness, notice_after=0.3, give_up_after=WAIT)
    tts, stt = harness.fakes.tts, harness.fakes.stt
    tts.hold = asyncio.Event()
    other = harness.session()
    await other.wait_for(is_kind("session_started"), timeout=WAIT)
    s = harness.session()
    await s.wait_for(is_kind("session_started"), timeout=WAIT)
    await listening(harness, 2)
    stt.send(speech_event(True))
    stt.send(speculative("What time is it?"))
    async with asyncio.timeout(WAIT):
        await harness.fakes.llm.called.wait()
    stt.send(speech_event(False))
    stt.send(final("What time is it?"))
    notice = await s.wait_for(is_kind("wait_notice"), timeout=WAIT)
    tts.hold.set()
    lat = await s.wait_for(is_kind("latency"), timeout=WAIT)
    assert lat.turn_id == notice.turn_id and len(harness.fakes.llm.requests) == 1, "the answer ahead was kept"
    at = {m.point: m.seconds for m in lat.latency.marks}
    assert "speculative_transcript" in at and at["wait_notice"] < at["first_audio"]
    assert len(s.of("wait_notice")) == 1
    await other.close(timeout=WAIT)
    await s.close(timeout=WAIT)
