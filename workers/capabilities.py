"""What an S3 endpoint can do, as one typed record; facts learned from its answers; their stored names.

`Capabilities` is immutable: a worker that learns something hands a `Fact` to the engine's store
(`engine.capabilities.CapabilityStore`), which folds it into a new record and persists it in the
checkpoint. `decide()` reads the record; nothing else interprets capability names.

Stored form (checkpoint meta `capabilities`, the report's `capabilities`): a flat JSON map of
name -> bool, names as they have always been written, so old checkpoints keep what they learned:

    copy_applies_{src}_to_{dst}          False once a CopyObject kept the source's encryption
    copy_supported_{src}_to_{dst}        False once CopyObject answered NotImplemented for this path
    copy_response_truthful_{src}_to_{dst} verify = "auto": copy answers agreed with HeadObject (or not)
    upload_part_copy_from_{mode}         False once UploadPartCopy answered NotImplemented for this source
    upload_part_copy_into_sse_c          probe: a part copy into SSE-C comes out readable
    update_object_encryption             probe: UpdateObjectEncryption really works
    copy_first                           False once a copy made before reading the source came out wrong
    if_match                             False once the server ignored If-Match on a write
    target_applied:{mode}:{kms key}      probe: a write in the target mode comes back in it
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Protocol

from workers.model import Mode

Path = tuple[Mode, Mode]   # (source mode, target mode) of a copy


class Topic(StrEnum):
    """What a fact is about."""

    COPY_APPLIES = "copy_applies"
    COPY_SUPPORTED = "copy_supported"
    COPY_RESPONSE_TRUTHFUL = "copy_response_truthful"
    PART_COPY_FROM = "upload_part_copy_from"
    PART_COPY_INTO_SSE_C = "upload_part_copy_into_sse_c"
    UPDATE_ENCRYPTION = "update_object_encryption"
    COPY_FIRST = "copy_first"
    IF_MATCH = "if_match"
    TARGET_APPLIED = "target_applied"
    NAMED = "named"          # a fact kept by its stored name only (see `Capabilities.named`)


_PATH_TOPICS = (Topic.COPY_APPLIES, Topic.COPY_SUPPORTED, Topic.COPY_RESPONSE_TRUTHFUL)
_FLAG_TOPICS = (Topic.PART_COPY_INTO_SSE_C, Topic.UPDATE_ENCRYPTION, Topic.COPY_FIRST, Topic.IF_MATCH)


@dataclass(frozen=True, slots=True)
class Fact:
    """One thing learned about the endpoint. `path` for copy facts, `mode` for part copies, `target`
    (mode:kms key) for the target probe."""

    topic: Topic
    value: bool
    path: Path | None = None
    mode: Mode | None = None
    target: str | None = None

    @property
    def name(self) -> str:
        if self.topic == Topic.NAMED:
            return str(self.target)
        if self.path is not None:
            return f"{self.topic.value}_{self.path[0].value}_to_{self.path[1].value}"
        if self.mode is not None:
            return f"{self.topic.value}_{self.mode.value}"
        if self.target is not None:
            return f"{self.topic.value}:{self.target}"
        return self.topic.value


@dataclass(frozen=True, slots=True)
class Capabilities:
    """Everything known about the endpoint; None / absent = not known yet (assume it works, and check)."""

    copy_applies: Mapping[Path, bool] = field(default_factory=dict)
    copy_supported: Mapping[Path, bool] = field(default_factory=dict)
    copy_response_truthful: Mapping[Path, bool] = field(default_factory=dict)
    part_copy_from: Mapping[Mode, bool] = field(default_factory=dict)
    part_copy_into_sse_c: bool | None = None
    update_encryption: bool | None = None
    copy_first: bool | None = None
    if_match: bool | None = None
    targets_applied: Mapping[str, bool] = field(default_factory=dict)
    # Facts the routing modules keep by name (workers.carry, workers.readback, RGW's copy forms):
    # copy_object_from_{mode}, upload_part_copy_finds_percent_keys, if_match_unquoted, keeps_tags_{route},
    # readback_{path}, copy_first_tags.
    named: Mapping[str, bool] = field(default_factory=dict)

    def get(self, name: str) -> bool | None:
        """A fact by its stored name."""
        return self._flags().get(name)

    # --- questions decide() and the strategies ask -------------------------------------------------

    def copy_may_apply(self, path: Path) -> bool:
        return self.copy_applies.get(path) is not False and self.copy_supported.get(path) is not False

    def copy_object_from(self, mode: Mode) -> bool:
        """CopyObject from a source in `mode` was not refused (RGW answers 501 for SSE-KMS/SSE-C sources)."""
        return self.named.get(f"copy_object_from_{mode.value}") is not False

    def part_copy_may_work(self, path: Path) -> bool:
        if self.part_copy_from.get(path[0]) is False:
            return False
        # UploadPartCopy into SSE-C needs the probe: some servers complete it unreadably.
        return path[1] != Mode.SSE_C or self.part_copy_into_sse_c is True

    # --- learning -------------------------------------------------------------------------------------

    def knows(self, fact: Fact) -> bool:
        return self._flags().get(fact.name) == fact.value

    def learned(self, fact: Fact) -> Capabilities:
        """A new record with `fact` folded in."""
        t, v = fact.topic, fact.value
        if fact.path is not None and t == Topic.COPY_APPLIES:
            return replace(self, copy_applies={**self.copy_applies, fact.path: v})
        if fact.path is not None and t == Topic.COPY_SUPPORTED:
            return replace(self, copy_supported={**self.copy_supported, fact.path: v})
        if fact.path is not None and t == Topic.COPY_RESPONSE_TRUTHFUL:
            return replace(self, copy_response_truthful={**self.copy_response_truthful, fact.path: v})
        if fact.mode is not None and t == Topic.PART_COPY_FROM:
            return replace(self, part_copy_from={**self.part_copy_from, fact.mode: v})
        if fact.target is not None and t == Topic.NAMED:
            return replace(self, named={**self.named, fact.target: v})
        if fact.target is not None and t == Topic.TARGET_APPLIED:
            return replace(self, targets_applied={**self.targets_applied, fact.target: v})
        return self._learned_flag(fact)

    def _learned_flag(self, fact: Fact) -> Capabilities:
        if fact.topic == Topic.PART_COPY_INTO_SSE_C:
            return replace(self, part_copy_into_sse_c=fact.value)
        if fact.topic == Topic.UPDATE_ENCRYPTION:
            return replace(self, update_encryption=fact.value)
        if fact.topic == Topic.COPY_FIRST:
            return replace(self, copy_first=fact.value)
        if fact.topic == Topic.IF_MATCH:
            return replace(self, if_match=fact.value)
        raise ValueError(f"fact {fact.name} lacks its subject")

    # --- stored form ------------------------------------------------------------------------------

    def facts(self) -> list[Fact]:
        out: list[Fact] = []
        for topic, table in ((Topic.COPY_APPLIES, self.copy_applies), (Topic.COPY_SUPPORTED, self.copy_supported),
                             (Topic.COPY_RESPONSE_TRUTHFUL, self.copy_response_truthful)):
            out += [Fact(topic, v, path=p) for p, v in table.items()]
        out += [Fact(Topic.PART_COPY_FROM, v, mode=m) for m, v in self.part_copy_from.items()]
        out += [Fact(Topic.TARGET_APPLIED, v, target=t) for t, v in self.targets_applied.items()]
        out += [Fact(Topic.NAMED, v, target=n) for n, v in self.named.items()]
        for topic, value in ((Topic.PART_COPY_INTO_SSE_C, self.part_copy_into_sse_c),
                             (Topic.UPDATE_ENCRYPTION, self.update_encryption),
                             (Topic.COPY_FIRST, self.copy_first), (Topic.IF_MATCH, self.if_match)):
            if value is not None:
                out.append(Fact(topic, value))
        return out

    def to_flags(self) -> dict[str, bool]:
        return dict(self._flags())

    def _flags(self) -> Mapping[str, bool]:
        """The stored form, made once per record (records are immutable; workers ask it per object)."""
        hit = _FLAGS_MADE.get(id(self))
        if hit is None or hit[0] is not self:
            if len(_FLAGS_MADE) >= _FLAGS_KEPT:
                _FLAGS_MADE.clear()
            hit = _FLAGS_MADE[id(self)] = (self, {f.name: f.value for f in self.facts()})
        return hit[1]

    @classmethod
    def from_flags(cls, flags: Mapping[str, object]) -> Capabilities:
        """The record from its stored form; names it does not know are ignored."""
        caps = cls()
        for name, value in flags.items():
            fact = parse_fact(str(name), bool(value))
            if fact is not None:
                caps = caps.learned(fact)
        return caps


_FLAGS_KEPT = 64
_FLAGS_MADE: dict[int, tuple[Capabilities, dict[str, bool]]] = {}   # id(record) -> (record, its flags)


def parse_fact(name: str, value: bool) -> Fact | None:
    """The fact a stored name says, or None for a name this version does not know."""
    if name.startswith(Topic.TARGET_APPLIED.value + ":"):
        return Fact(Topic.TARGET_APPLIED, value, target=name[len(Topic.TARGET_APPLIED.value) + 1:])
    for topic in _FLAG_TOPICS:
        if name == topic.value:
            return Fact(topic, value)
    for topic in _PATH_TOPICS:
        head = topic.value + "_"
        if name.startswith(head) and "_to_" in name:
            src, _, dst = name[len(head):].partition("_to_")
            modes = _modes(src, dst)
            return Fact(topic, value, path=modes) if modes else None
    head = Topic.PART_COPY_FROM.value + "_"
    if name.startswith(head) and name[len(head):] in {m.value for m in Mode}:
        return Fact(Topic.PART_COPY_FROM, value, mode=Mode(name[len(head):]))
    return named(name, value)


def _modes(src: str, dst: str) -> Path | None:
    try:
        return Mode(src), Mode(dst)
    except ValueError:
        return None


def copy_applies(path: Path, value: bool) -> Fact:
    return Fact(Topic.COPY_APPLIES, value, path=path)


def copy_supported(path: Path, value: bool) -> Fact:
    return Fact(Topic.COPY_SUPPORTED, value, path=path)


def response_truthful(path: Path, value: bool) -> Fact:
    return Fact(Topic.COPY_RESPONSE_TRUTHFUL, value, path=path)


def part_copy_from(mode: Mode, value: bool) -> Fact:
    return Fact(Topic.PART_COPY_FROM, value, mode=mode)


def flag(topic: Topic, value: bool) -> Fact:
    return Fact(topic, value)


def named(name: str, value: bool) -> Fact:
    """A fact kept by its stored name (see `Capabilities.named`)."""
    return Fact(Topic.NAMED, value, target=name)


def target_applied(target: str, value: bool) -> Fact:
    return Fact(Topic.TARGET_APPLIED, value, target=target)


class CapabilityHook(Protocol):
    """The engine's store as a worker sees it: the record as known now, and a way to add a fact."""

    @property
    def current(self) -> Capabilities: ...

    async def learn(self, fact: Fact) -> None: ...


class LocalCapabilities:
    """A store that only remembers for its own lifetime (tests, tools, `rekey plan`)."""

    def __init__(self, caps: Capabilities | None = None) -> None:
        self._caps = caps or Capabilities()

    @property
    def current(self) -> Capabilities:
        return self._caps

    async def learn(self, fact: Fact) -> None:
        self._caps = self._caps.learned(fact)
