"""The async driver: runs the sans-I/O Engine against an AudioLeg and the providers.

It turns leg events and provider streams into engine calls, and the engine's actions into
leg calls (synchronously, so a barge-in clears the leg in the same frame that confirmed it)
and provider tasks. Everything it starts ends with the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from bridge.callmodel import CallInfo
from bridge.conversation import actions as act
from bridge.conversation.convert import ChunkConverter
from bridge.conversation.driver_clock import Clock, LoopClock
from bridge.conversation.engine import Engine, State
from bridge.conversation.stt_ends import LATE_RECORD
from bridge.conversation.stt_feed import SttFeed
from bridge.conversation.tool_runner import run_tool
from bridge.conversation.transcript import TranscriptWriter
from bridge.conversation.vad import FrameVad, Later, create_vad, release_vad
from bridge.leg import (
    FRAME_BYTES,
    AudioFrame,
    AudioLeg,
    DtmfDigit,
    EventFeed,
    LegEnded,
    LegEvent,
    PlaybackDone,
    PlaybackProgress,
    PlaybackStarted,
)
from bridge.metrics import (
    BARGE_INS,
    FALSE_INTERRUPTIONS,
    PREEMPTIONS,
    PROVIDER_FAILURES,
    PROVIDER_HEALTHY,
    STT_LATE_FINALS,
    TURN_LATENCY,
)
from bridge.providers.base import LLM, TTS, Message, ProviderError, SttStream, TextDelta, ToolCall, ToolSpec
from bridge.providers.factory import ProviderSet
from bridge.providers.llm.warm import warm_on_speech
from bridge.settings import Settings
from bridge.settings.paths import resolve_path

log = logging.getLogger(__name__)

# The engine's timers run when its next deadline comes (Engine.next_deadline), not on a
# period and not on caller frames (the leg may stop delivering them: hold). A wake-up later
# than planned is the loop running late, by that much (noise below _LATE_S is ignored).
_LATE_S = 0.05
# A deadline that a tick at its very time did not act on (float rounding: now - start vs
# start + limit) is tried again this much later, not in a busy loop.
_RETRY_S = 0.005
_END_WAIT_S = 5.0  # after our hang-up/transfer, how long to wait for the leg to end
_prompts: dict[tuple[str, float], str] = {}


def load_system_prompt(path: str) -> str:
    """The prompt file's text, cached by (path, mtime); missing file: warn, no prompt."""
    if not path:
        return ""
    try:
        file = resolve_path(path)  # as `check` finds it, from any working directory
        mtime = file.stat().st_mtime
        key = (path, mtime)
        if key not in _prompts:
            _prompts[key] = file.read_text(encoding="utf-8").strip()
        return _prompts[key]
    except OSError as exc:
        log.warning("system prompt %s unreadable (%s); the agent runs without one", path, exc)
        return ""


class Conversation:
    def __init__(
        self,
        leg: AudioLeg,
        providers: ProviderSet,
        settings: Settings,
        *,
        transcript: TranscriptWriter,
        call_info: CallInfo,
        fallback_audio: bytes,
        clock: Clock | None = None,
        vad: FrameVad | None = None,
    ) -> None:
        self.leg = leg
        self.providers = providers
        self.settings = settings
        self.transcript = transcript
        self.info = call_info
        self.clock = clock or LoopClock()
        self.vad = vad
        self.engine = Engine(
            settings,
            system_prompt=load_system_prompt(settings.conversation.system_prompt_file),
            provider_counts={
                "stt": len(providers.stt), "llm": len(providers.llm), "tts": len(providers.tts)
            },
            fallback_audio=fallback_audio,
        )
        self._index = {"stt": 0, "llm": 0, "tts": 0}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._llm_tasks: dict[str, asyncio.Task[None]] = {}  # reply id -> its running LLM round
        self._tts: dict[str, tuple[asyncio.Queue[str | None], asyncio.Task[None]]] = {}
        # caller audio (and finalize marks) for the STT, in order, released in chunks of
        # stt.send_chunk_ms (stt_feed.py); the sender waits on _stt_waiter until some may go
        self._stt_feed = SttFeed(settings.stt.send_chunk_ms)
        self._stt_waiter: asyncio.Future[None] | None = None
        self._stt: SttStream | None = None
        self._stt_ready = asyncio.Event()
        self._stt_reader: asyncio.Task[None] | None = None
        # the leg's events come to _on_event (AudioLeg.consume); until run() starts, a feed
        # that holds nothing
        self._events: EventFeed = _NO_FEED
        self._loop: asyncio.AbstractEventLoop  # run()'s
        # run()'s context (the call's: callcontext's CallUUID). The engine also runs in the
        # leg's own call (the media clock's task, a socket callback), which is no call's: the
        # tasks it starts from there are given this one.
        self._context: contextvars.Context | None = None
        self._over: asyncio.Future[None] | None = None  # set when the driver is done (run())
        self._now = self.clock.now
        self._speech_now: Callable[[bytes, Later], bool | None] = _no_vad
        self._vad_later: Later = self._vad_done  # one bound method, not one a frame
        self._pending: bytes | None = None  # the frame waiting for silero's batched window
        self._heard = False  # the engine heard speech on the last frame (an onset: False -> True)
        self._end_timer: asyncio.TimerHandle | None = None  # our hang-up: waiting for the leg's end
        self._last_event = 0.0
        self._extra = {"call_id": call_info.call_id}
        self._wake = math.inf  # when the ticker wakes next (the engine's next deadline or sooner)
        self._ticker_task: asyncio.Task[None] | None = None
        self._ticking = False

    # -- running ---------------------------------------------------------------------------
    async def run(self) -> str:
        own_vad = self.vad is None
        if self.vad is None:
            # Loading silero takes ~30 ms: not on the loop that paces every call's audio.
            self.vad = await asyncio.to_thread(create_vad, self.settings.conversation.vad)
        vad = self.vad
        self._speech_now = vad.speech_now
        loop = self._loop = asyncio.get_running_loop()
        self._context = contextvars.copy_context()
        over = self._over = loop.create_future()
        self._spawn(self._switch_stt(0), "stt-open")
        self._spawn(self._stt_sender(), "stt-send")
        # The leg hands each event to _on_event in its own call (no task woken per frame);
        # the feed starts held: what came meanwhile waits until the engine has started.
        self._events = self.leg.consume(self._on_event)
        try:
            self._feed(self.engine.start)
            self._events.release()
            await over
        finally:
            self._pending = None  # a window still queued: its answer finds no frame
            self._events.detach()
            if self._end_timer is not None:
                self._end_timer.cancel()
            await self._shutdown()
            if own_vad:
                release_vad(vad)
        return self.engine.end_reason or "ended"

    def _finish(self) -> None:
        """The call is over for the driver (the leg ended, the caller was transferred, or our
        hang-up was never answered): no more events; run() returns."""
        self._pending = None
        self._events.detach()
        if self._over is not None and not self._over.done():
            self._over.set_result(None)

    def _on_event(self, event: LegEvent) -> None:
        """The leg's consumer: one event, in order, in the leg's own call (the media tick,
        the socket reader). Never re-entered: the leg queues what comes meanwhile."""
        if self._end_timer is not None:
            self._last_event = self._loop.time()
        engine = self.engine
        try:
            if isinstance(event, AudioFrame):
                pcm = event.pcm
                if len(pcm) != FRAME_BYTES:
                    return  # the AudioLeg contract says 20 ms frames; skip anything else
                speech = self._speech_now(pcm, self._vad_later)
                if speech is None:
                    # silero's window joins the batch of this loop pass (vad.py); the frame
                    # waits for it and so do the events after it (the feed holds them)
                    self._pending = pcm
                    self._events.hold()
                    return
                self._on_frame(pcm, speech)
            elif isinstance(event, PlaybackStarted):
                self._feed(engine.on_playback_started, event.utterance_id, event.t)
            elif isinstance(event, PlaybackProgress):
                self._feed(engine.on_playback_progress, event.utterance_id, event.heard_ms)
            elif isinstance(event, PlaybackDone):
                self._feed(engine.on_playback_done, event.utterance_id, event.heard_ms)
            elif isinstance(event, DtmfDigit):
                self._feed(engine.on_dtmf, event.digit)
            elif isinstance(event, LegEnded):
                self._feed(engine.on_leg_ended, event.reason)
                self._finish()
        except Exception as exc:
            self._crashed(exc)

    def _vad_done(self, result: bool | BaseException) -> None:
        """silero's batched run answered the waiting frame: it goes to the engine now (the
        time is read now, so the engine never sees time go back), then the events held
        behind it."""
        pcm, self._pending = self._pending, None
        if pcm is None:
            return  # the call finished meanwhile
        try:
            if isinstance(result, BaseException):
                raise result
            self._on_frame(pcm, result)
        except Exception as exc:
            self._crashed(exc)
        self._events.release()

    def _on_frame(self, pcm: bytes, speech: bool) -> None:
        engine = self.engine
        engine.on_frame(self._now(), pcm, speech)
        actions = engine.take_actions()
        if actions:
            # A frame that emits nothing changes no engine deadline (the engine tests
            # check it on every frame): most frames skip the next_deadline re-read.
            self._run(actions)
        if not engine.heard_speech:  # the engine's verdict (echo guard, level gate)
            # Chunks only while the caller speaks. The end of speech goes at once, and
            # so does each frame of the silence after it: an STT that ends the turn
            # itself (Flux) times its end of turn on that silence, and a chunk would
            # hold it back (measured: Flux's EagerEndOfTurn ~60 ms later at 80 ms).
            self._heard = False
            self._stt_flush()
        elif not self._heard:  # the caller started speaking: a question may follow
            self._heard = True
            # the LLM's pool may have dropped its idle connection since the offer (llm/warm.py)
            warm_on_speech(self.providers.llm, self._index["llm"], self.settings.llm.warmup_on_speech)

    def _crashed(self, exc: BaseException) -> None:
        """A bug on the frame path (the engine, the VAD, silero's run): end the call rather
        than leave the caller in dead air, as for a crashed task."""
        log.error("conversation failed on a leg event", exc_info=exc, extra=self._extra)
        if not self.engine.ended:
            try:
                self.engine.on_leg_ended(self._now(), "error")
            except Exception:  # the same bug again: the call must still end
                log.exception("ending the conversation failed too", extra=self._extra)
            self._spawn_free(self.leg.hangup("error"), "hangup")
        self._finish()

    def _end_wait(self) -> None:
        """Our hang-up or transfer ended the engine and the leg has not ended: after
        _END_WAIT_S without any event from it, stop waiting."""
        idle = self._loop.time() - self._last_event
        if idle >= _END_WAIT_S:
            self._end_timer = None
            self._finish()
            return
        self._end_timer = self._loop.call_later(_END_WAIT_S - idle, self._end_wait)

    def _schedule(self) -> None:
        """After every engine input: wake the ticker sooner if the engine's next deadline came
        closer (a later one is found when the ticker wakes and finds nothing due)."""
        due = self.engine.next_deadline()
        if due >= self._wake:
            return
        self._wake = due
        if self._ticking:
            return  # the running ticker reads _wake when it goes back to sleep
        if self._ticker_task is not None:
            self._ticker_task.cancel()
        self._ticker_task = self._spawn(self._ticker(), "tick")

    async def _ticker(self) -> None:
        """The engine's timers, at its deadlines. Woken later than planned, the loop was late
        (starved, a GC pass): the engine first moves its provider deadlines back by that much
        and the tick waits one loop pass, so a provider whose bytes came in meanwhile is read
        first and not failed for our delay."""
        clock, engine = self.clock, self.engine
        deferred = False  # the last wake-up was late and put its tick off by one loop pass
        while not engine.ended and self._wake < math.inf:
            slept_at = clock.now()
            planned = max(self._wake, slept_at)
            await clock.sleep(planned - slept_at)
            now = clock.now()
            self._ticking = True
            try:
                self._wake = math.inf
                late = now - planned
                if late > _LATE_S:
                    engine.on_loop_late(now, late)
                # A tick is put off once, never twice in a row: under a loop that stays slower
                # than _LATE_S a pass, deferring every time would never run the timers.
                ticked = not (late > _LATE_S and not deferred)
                if ticked:
                    engine.on_tick(now)
                    deferred = False
                else:
                    deferred = True
                    self._wake = now  # the tick itself: after one pass of the loop
                self._apply()
            finally:
                self._ticking = False
            if ticked and self._wake <= now:
                self._wake = now + _RETRY_S
        self._ticker_task = None

    async def _shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._close_stt()

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = self._spawn_free(coro, name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _spawn_free(self, coro: Any, name: str) -> asyncio.Task[Any]:
        """A task in the call's context, wherever it is started from (see _context)."""
        context = self._context.copy() if self._context is not None else None
        name = f"{name}-{self.info.call_id}"
        return asyncio.get_running_loop().create_task(coro, name=name, context=context)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            # A bug, not a provider failure (those are reported to the engine): end the call
            # rather than leave the caller in dead air.
            log.error("conversation task %s crashed", task.get_name(), exc_info=exc, extra=self._extra)
            if not self.engine.ended:
                self.engine.on_leg_ended(self.clock.now(), "error")
                self._spawn_free(self.leg.hangup("error"), "hangup")
                if self._end_timer is None:
                    self._wait_for_end()

    # -- engine in, actions out ------------------------------------------------------------
    def _feed(self, method: Callable[..., None], *args: Any) -> None:
        method(self.clock.now(), *args)
        self._apply()

    def _apply(self) -> None:
        self._run(self.engine.take_actions())

    def _run(self, actions: list[act.Action]) -> None:
        # What the leg reports while we act on it (a PlaybackStarted from play(), a
        # PlaybackProgress from pause()) is handed to _on_event after these actions, as it
        # was read after them when a task read the leg.
        events = self._events
        events.hold()
        try:
            for action in actions:
                self._do(action)
            engine = self.engine
            if engine.end_reason == "transferred":
                # The caller is with someone else now: stop reading; the daemon releases our side.
                self._finish()
            self._schedule()
            if engine.state is State.ENDED and self._end_timer is None:
                self._wait_for_end()
        finally:
            events.release()

    def _wait_for_end(self) -> None:
        """The engine ended (our hang-up): the leg should end now; do not wait for ever."""
        if self._over is None or self._over.done():
            return
        self._last_event = self._loop.time()
        self._end_timer = self._loop.call_later(_END_WAIT_S, self._end_wait)

    def _do(self, a: act.Action) -> None:
        leg = self.leg
        if isinstance(a, act.SttAudio):
            if self._stt_feed.audio(a.pcm):
                self._stt_wake()
        elif isinstance(a, act.Play):
            leg.play(a.utterance_id, a.pcm)
        elif isinstance(a, act.TtsText):
            job = self._tts.get(a.reply_id)
            if job is not None:
                job[0].put_nowait(a.text)
        elif isinstance(a, act.SttFinalize):
            self._stt_feed.finalize()  # after the audio it finalizes, at once
            self._stt_wake()
        elif isinstance(a, act.EndUtterance):
            leg.end_utterance(a.utterance_id)
        elif isinstance(a, act.ClearPlayback):
            leg.clear()
        elif isinstance(a, act.PausePlayback):
            leg.pause()
            self._stt_flush()  # a cut-in: its words are wanted now (min_words, the history)
        elif isinstance(a, act.ResumePlayback):
            FALSE_INTERRUPTIONS.inc()
            leg.resume()
        elif isinstance(a, act.Preempted):
            PREEMPTIONS.labels(a.outcome).inc()
        elif isinstance(a, act.StartLlm):
            llm = self.providers.llm[self._index["llm"]]
            self._llm_tasks[a.reply_id] = self._spawn(self._llm(llm, a.stream_id, a.messages, a.tools), "llm")
        elif isinstance(a, act.StartTts):
            queue: asyncio.Queue[str | None] = asyncio.Queue()
            tts = self.providers.tts[self._index["tts"]]
            self._tts[a.reply_id] = (queue, self._spawn(self._tts_job(tts, a.reply_id, queue), "tts"))
        elif isinstance(a, act.EndTts):
            job = self._tts.get(a.reply_id)
            if job is not None:
                job[0].put_nowait(None)
        elif isinstance(a, act.CancelReply):
            self._cancel(a.reply_id)
        elif isinstance(a, act.UseProvider):
            self._index[a.kind] = a.index
            if a.kind == "stt":
                self._spawn(self._switch_stt(a.index), "stt-switch")
            log.warning("%s: failing over to %s", a.kind, self._name(a.kind, a.index), extra=self._extra)
        elif isinstance(a, act.ProviderFailed):
            name = self._name(a.kind, a.index)
            PROVIDER_FAILURES.labels(a.kind, name, a.label).inc()
            PROVIDER_HEALTHY.labels(a.kind, name).set(0)
            log.warning("%s provider %s failed: %s", a.kind, name, a.reason, extra=self._extra)
            self.transcript.write("provider_failure", kind=a.kind, provider=name, reason=a.reason)
        elif isinstance(a, act.RunTool):
            self._spawn(self._tool(a.reply_id, a.call), "tool")
        elif isinstance(a, act.Transfer):
            self._spawn(self._transfer(a.target), "transfer")
        elif isinstance(a, act.Hangup):
            self._spawn(leg.hangup(a.reason), "hangup")
        elif isinstance(a, act.Record):
            if a.event == LATE_RECORD:
                STT_LATE_FINALS.inc()
            self.transcript.write(a.event, **a.data)
        elif isinstance(a, act.TurnDone):
            self._turn_done(a)
        elif isinstance(a, act.BargeIn):
            BARGE_INS.inc()
            self._stt_flush()
            log.info("barge-in after %d ms of the reply", a.heard_ms, extra=self._extra)

    def _name(self, kind: str, index: int) -> str:
        items: list[Any] = getattr(self.providers, kind)
        return str(getattr(items[index], "name", kind)) if 0 <= index < len(items) else kind

    def _turn_done(self, a: act.TurnDone) -> None:
        marks = a.marks
        figures = marks.as_dict()
        for mark in ("stt_final", "llm_first_token", "tts_first_byte", "first_audio_out"):
            if mark in figures:
                TURN_LATENCY.labels(mark).observe(figures[mark] / 1000)
        if "bridge_overhead" in figures:
            TURN_LATENCY.labels("bridge_overhead").observe(figures["bridge_overhead"] / 1000)
        for kind in ("stt", "llm", "tts"):
            PROVIDER_HEALTHY.labels(kind, self._name(kind, self._index[kind])).set(1)
        log.info("turn latency (ms) %s", figures, extra={**self._extra, **figures})
        self.transcript.write("latency", **figures)

    def _cancel(self, reply_id: str) -> None:
        task = self._llm_tasks.pop(reply_id, None)
        if task is not None:
            task.cancel()
        job = self._tts.pop(reply_id, None)
        if job is not None:
            job[1].cancel()

    # -- provider tasks --------------------------------------------------------------------
    async def _llm(
        self, llm: LLM, stream_id: str, messages: tuple[Message, ...], tools: tuple[ToolSpec, ...]
    ) -> None:
        engine = self.engine
        try:
            stream = llm.stream(messages, tools)
            try:
                async for event in stream:
                    if isinstance(event, TextDelta):
                        self._feed(engine.on_llm_text, stream_id, event.text)
                    elif isinstance(event, ToolCall):
                        self._feed(engine.on_llm_tool, stream_id, event)
            finally:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any provider failure: the engine fails over
            self._feed(engine.on_llm_failed, stream_id, *_failure(exc))
            return
        self._feed(engine.on_llm_done, stream_id)

    async def _tts_job(self, tts: TTS, reply_id: str, queue: asyncio.Queue[str | None]) -> None:
        engine = self.engine
        taken = 0

        async def text() -> AsyncIterator[str]:
            nonlocal taken
            while (clause := await queue.get()) is not None:
                self._feed(engine.on_tts_text_taken, reply_id, taken)
                taken += 1
                yield clause

        converter = ChunkConverter()
        try:
            stream = tts.synthesize(text())
            try:
                async for chunk in stream:
                    pcm = converter.convert(chunk)
                    if pcm:
                        self._feed(engine.on_tts_audio, reply_id, pcm)
            finally:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()
            tail = converter.flush()
            if tail:
                self._feed(engine.on_tts_audio, reply_id, tail)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._feed(engine.on_tts_failed, reply_id, *_failure(exc))
            return
        self._tts.pop(reply_id, None)
        self._feed(engine.on_tts_done, reply_id)

    async def _tool(self, reply_id: str, call: ToolCall) -> None:
        result = await run_tool(call, self.leg, self.settings.conversation.http_tools)
        self._feed(self.engine.on_tool_result, reply_id, call.id, result)

    async def _transfer(self, target: str) -> None:
        try:
            ok = await self.leg.transfer(target)
        except Exception as exc:
            log.warning("transfer failed: %s", exc, extra=self._extra)
            ok = False
        self._feed(self.engine.on_transfer_result, ok)

    # -- STT ----------------------------------------------------------------------------------
    async def _switch_stt(self, index: int) -> None:
        await self._close_stt()
        try:
            stream = await self.providers.stt[index].open()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._feed(self.engine.on_stt_failed, *_failure(exc))
            return
        self._stt = stream
        self._stt_reader = self._spawn(self._stt_read(stream), "stt-read")
        self._stt_ready.set()

    async def _close_stt(self) -> None:
        stream, self._stt = self._stt, None
        self._stt_ready.clear()
        reader, self._stt_reader = self._stt_reader, None
        if reader is not None:
            reader.cancel()
        if stream is not None:
            with contextlib.suppress(Exception):
                await stream.close()

    async def _stt_read(self, stream: SttStream) -> None:
        try:
            async for transcript in stream.transcripts():
                self._feed(self.engine.on_transcript, transcript)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._stt_failed(stream, exc)
            return
        if stream is self._stt:
            self._stt_failed(stream, RuntimeError("transcript stream ended"))

    def _stt_failed(self, stream: SttStream, exc: BaseException) -> None:
        if stream is not self._stt:
            return  # an old stream we already left
        self._stt = None
        self._stt_ready.clear()
        self._feed(self.engine.on_stt_failed, *_failure(exc))

    def _stt_wake(self) -> None:
        waiter = self._stt_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _stt_flush(self) -> None:
        if self._stt_feed.flush():
            self._stt_wake()

    async def _stt_sender(self) -> None:
        """Caller audio to the STT in order, as the feed releases it: one send per chunk, and a
        finalize after the audio queued before it."""
        feed = self._stt_feed
        loop = asyncio.get_running_loop()
        while True:
            while not feed.ready:
                self._stt_waiter = loop.create_future()
                try:
                    await self._stt_waiter
                finally:
                    self._stt_waiter = None
            await self._stt_ready.wait()
            stream = self._stt
            parts = feed.take()
            if stream is None:
                continue
            try:
                for audio, finalize in parts:
                    if audio:
                        await stream.send(audio)
                    if finalize:
                        await stream.finalize()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._stt_failed(stream, exc)


class _NoFeed:
    """The feed before run() attached the leg's: holds nothing."""

    def hold(self) -> None:
        pass

    def release(self) -> None:
        pass

    def detach(self) -> None:
        pass


_NO_FEED = _NoFeed()


def _no_vad(pcm: bytes, later: Later) -> bool | None:
    raise RuntimeError("no VAD before run()")


def _failure(exc: BaseException) -> tuple[str, str]:
    """(reason, label): the label is the failure metric's, one of a few words (a provider's
    own error says whether a retry could help); the reason is '<label>: <text>' for the log."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, ProviderError):
        label = "retryable" if exc.retryable else "fatal"
    elif isinstance(exc, TimeoutError):
        label = "timeout"
    elif isinstance(exc, OSError):
        label = "network"
    else:
        label = "error"
    return f"{label}: {text}"[:200], label


async def run_conversation(
    leg: AudioLeg,
    providers: ProviderSet,
    settings: Settings,
    *,
    transcript: TranscriptWriter,
    call_info: CallInfo,
    fallback_audio: bytes,
    clock: Clock | None = None,
    vad: FrameVad | None = None,
) -> str:
    """Hold the conversation on ``leg`` until the call ends; returns why it ended."""
    started = time.monotonic()
    conversation = Conversation(
        leg, providers, settings, transcript=transcript, call_info=call_info,
        fallback_audio=fallback_audio, clock=clock, vad=vad,
    )
    reason = await conversation.run()
    log.info("conversation over after %.1f s: %s", time.monotonic() - started, reason,
             extra={"call_id": call_info.call_id})
    return reason
