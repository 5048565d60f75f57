"""One object, top to bottom: learn its state, decide, run the strategies in order, build the outcome.

    migrate_object(job, ref)
      copy_first            bucket to bucket, absent at the destination: copy, then HEAD (2 requests)
      head_source           the object as it is now (SSE-C: with the configured key)
      resume_envelope       an instruction file a killed run meant to write after the data: put it now
      learn                 envelope, instruction-file pairing, the destination's copy
      decide                pure: ordered strategies (workers.core.decide)
      strategies            each returns Written or raises Cannot (the next one takes over)
      outcome               the one place an Outcome is built

Per-object errors become outcomes here and only here; fatal errors propagate.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from workers.core import copy_first as first
from workers.core import outcome
from workers.core.decide import Decision, Strategy, decide
from workers.core.learn import Learned, announces_client_side, head_source, learn
from workers.core.pending import resume_envelope
from workers.core.strategies import RUNS, Attempt, Cannot
from workers.errors import FatalError, ObjectGoneError, RekeyError, UnsupportedError
from workers.job import Job, object_retries
from workers.model import Mode, ObjectRef, Outcome
from workers.serverside import source_tags

log = logging.getLogger("rekey.migrate")
SERVER_SIDE = (Strategy.UPDATE, Strategy.COPY, Strategy.MULTIPART_COPY, Strategy.STREAM)


async def migrate_object(job: Job, ref: ObjectRef, *, listed: bool = True) -> Outcome:
    """Everything that happens to one object; per-object errors come back as its outcome.
    `listed=False`: the key comes from a manifest, so a 404 means it does not exist (failed), not that
    it was deleted since a listing (skipped)."""
    token = object_retries.set([0])
    try:
        return await _migrate(job, ref, listed)
    finally:
        object_retries.reset(token)


async def _migrate(job: Job, ref: ObjectRef, listed: bool) -> Outcome:
    subject = outcome.Subject(ref, ref.version_id, None, _target_mode(job))
    try:
        if first.applies(job, ref):
            written = await first.copy_first(job, ref)
            if written is not None:
                return outcome.done(subject, written)
        head = await head_source(job, ref)
    except FatalError:
        raise
    except ObjectGoneError as exc:
        return outcome.gone(subject, exc) if listed else outcome.missing(subject, exc)
    except RekeyError as exc:
        return outcome.failed(subject, _named(job, ref, exc), None)
    ref = replace(ref, size=head.size, etag=head.etag, version_id=ref.version_id or head.version_id)
    # As found: an object whose metadata (or listing pair) says client-side is `cse`, even when its envelope
    # then turns out to be tampered with.
    found = Mode.CSE if announces_client_side(ref, head) else head.encryption.mode
    subject = replace(subject, ref=ref, source_mode=found, read=True)
    running: Strategy | None = None
    try:
        resumed = await resume_envelope(job, ref, head)
        if resumed is not None:
            return outcome.done(replace(subject, source_mode=Mode.CSE), resumed)
        learned = await learn(job, ref, head)
        subject = replace(subject, source_mode=learned.state.mode)
        if learned.instruction_file_of_another:   # an orphan, or its object is not in this run: left as it is
            return outcome.done(replace(subject, source_mode=Mode.CSE),
                                await RUNS[Strategy.SKIP](Attempt(job, ref, head, learned)))
        decision = decide(learned.state, job.policy.decide_target, job.route.kind, job.caps.current)
        log.debug("%s: %s -> %s: %s (%s)", ref.key, learned.state.mode.value, _target_mode(job).value,
                  "/".join(decision.strategies), decision.reason)
        await _journal_source_mode(job, ref, learned, decision)
        # Read before any write that could drop them (an in-place copy may delete them): the tags to carry.
        tags = await source_tags(job, ref, head) if decision.first in SERVER_SIDE else None
        attempt = Attempt(job, ref, head, learned, decision.reason, tags)
        for running in decision.strategies:
            try:
                return outcome.done(subject, await RUNS[running](attempt))
            except Cannot as cannot:
                log.info("%s: %s: %s; trying the next way", ref.key, running.value, cannot.reason)
                if cannot.fact is not None:
                    await job.caps.learn(cannot.fact)
                attempt = replace(attempt, head=cannot.head or attempt.head, held=cannot.held or attempt.held)
        exhausted: RekeyError = UnsupportedError(
            f"no way left to re-encrypt it ({'/'.join(decision.strategies)} could not)",
            bucket=job.src.bucket, key=ref.key, op="migrate")
    except FatalError:
        raise
    except RekeyError as exc:
        exhausted = exc
    return outcome.failed(subject, _named(job, ref, exhausted), running)


async def _journal_source_mode(job: Job, ref: ObjectRef, learned: Learned, decision: Decision) -> None:
    """In place, a write replaces the object the source mode was read from: record the mode first, so
    a run killed after the write still reports what the object was."""
    if job.in_place and decision.first not in (Strategy.SKIP, Strategy.REFUSE) and job.hooks.objects is not None:
        await job.hooks.objects.source_seen(ref, learned.state.mode)


def _target_mode(job: Job) -> Mode:
    return job.policy.decide_target.mode


def _named(job: Job, ref: ObjectRef, exc: RekeyError) -> RekeyError:
    if not exc.key:  # format and crypto errors know no object: name it
        exc.bucket, exc.key, exc.op = job.src.bucket, ref.key, exc.op or "transform"
    return exc
