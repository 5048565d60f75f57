"""The decision for one object: (its state, the target, the route, the known capabilities) -> strategies.

Pure: no I/O. `rekey plan` and `rekey run` call `decide` with the same inputs, so the plan's action for
an object is the run's first strategy. The run tries the strategies in order; one that answers "cannot"
(`workers.core.strategies.Cannot`) hands the object to the next.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from workers import sse
from workers.capabilities import Capabilities
from workers.cse import ContentAlg, CseFormat
from workers.model import Action, Encryption, Mode, ObjectHead
from workers.parts import MAX_SINGLE_COPY


class Strategy(StrEnum):
    """One way to bring an object into the target. `action` is what the report calls it."""

    SKIP = "skip"                    # already in the target: nothing written
    REFUSE = "refuse"                # will not be done; the reason says why
    UPDATE = "update"                # UpdateObjectEncryption (in place, SSE-KMS, nothing copied)
    COPY = "copy"                    # one CopyObject
    MULTIPART_COPY = "multipart-copy"  # UploadPartCopy in parallel parts
    STREAM = "stream"                # through rekey, re-encrypted server-side on the way in
    CSE_ENCRYPT = "cse-encrypt"      # plain or server-side -> client-side
    CSE_DECRYPT = "cse-decrypt"      # client-side -> server-side
    CSE_REENCRYPT = "cse-reencrypt"  # client-side -> client-side in another format (decrypt, encrypt)
    REWRAP = "rewrap"                # client-side: a new wrapping of the same data key
    CSE_COPY = "cse-copy"            # client-side, already under the target: copied as it is, with its envelope

    @property
    def action(self) -> Action:
        return _ACTIONS[self]

    @property
    def through_rekey(self) -> bool:
        """Whether the object's bytes pass through rekey (read and written by it)."""
        return self in (Strategy.STREAM, Strategy.CSE_ENCRYPT, Strategy.CSE_DECRYPT, Strategy.CSE_REENCRYPT)


_ACTIONS = {
    Strategy.SKIP: Action.SKIP, Strategy.REFUSE: Action.REFUSE, Strategy.UPDATE: Action.UPDATE,
    Strategy.COPY: Action.COPY, Strategy.MULTIPART_COPY: Action.MULTIPART_COPY, Strategy.STREAM: Action.STREAM,
    Strategy.CSE_ENCRYPT: Action.STREAM, Strategy.CSE_DECRYPT: Action.STREAM, Strategy.CSE_REENCRYPT: Action.STREAM,
    Strategy.REWRAP: Action.REWRAP, Strategy.CSE_COPY: Action.REWRAP,
}


@dataclass(frozen=True, slots=True)
class ClientSide:
    """What a client-side object's envelope says, as far as it is known without writing anything."""

    format: CseFormat
    content_alg: ContentAlg
    instruction_file: bool          # the envelope is in `<key>.instruction`
    under_target: bool = False      # the target keyring opens it and it is in the target format and place


@dataclass(frozen=True, slots=True)
class ObjectState:
    """One object as learned: its HEAD, its client-side envelope, and (bucket to bucket) the destination's."""

    head: ObjectHead
    client_side: ClientSide | None = None
    dest: ObjectHead | None = None

    @property
    def mode(self) -> Mode:
        """The source mode as found: `cse` for anything client-side, whatever the server adds."""
        return Mode.CSE if self.client_side is not None else self.head.encryption.mode


@dataclass(frozen=True, slots=True)
class Target:
    """What every object must end as."""

    encryption: Encryption                # server-side target (for a client-side target: what the data has)
    client_side: CseFormat | None = None  # the client-side format wanted, None for a server-side target
    instruction_file: bool = False        # client-side target: the envelope goes in `<key>.instruction`
    allow_decrypt: bool = False           # client-side sources may be decrypted into a server-side target
    multipart_threshold: int = 64 * 1024 * 1024

    @property
    def mode(self) -> Mode:
        return Mode.CSE if self.client_side is not None else self.encryption.mode


@dataclass(frozen=True, slots=True)
class RouteKind:
    """Where the object goes, as far as deciding needs it (see `workers.route`)."""

    in_place: bool          # same bucket and key on the same endpoint
    same_endpoint: bool     # server-side copy possible between source and destination


@dataclass(frozen=True, slots=True)
class Decision:
    """The ordered strategies for one object, with the reason for the first in words."""

    strategies: tuple[Strategy, ...]
    reason: str

    @property
    def first(self) -> Strategy:
        return self.strategies[0]

    @property
    def action(self) -> Action:
        return self.first.action


# The KMSKeyArn pattern of the S3 API model (botocore's s3 service-2.json).
KEY_ARN = re.compile(r"^arn:aws[a-zA-Z0-9-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[a-zA-Z0-9-]+$")
_UPDATE_SOURCES = (Mode.SSE_S3, Mode.SSE_KMS)
_MALFORMED_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")

REFUSE_DECRYPT = "client-side encrypted: decrypting it into {mode} needs [target] allow_client_side_decrypt = true"


def decide(state: ObjectState, target: Target, route: RouteKind, caps: Capabilities) -> Decision:
    """The strategies for one object, best first. Pure."""
    if state.client_side is not None or target.client_side is not None:
        return _client_side(state, target, route)
    return _server_side(state.head, state.dest, target, route, caps)


def _client_side(state: ObjectState, target: Target, route: RouteKind) -> Decision:
    cs = state.client_side
    if cs is None:
        return Decision((Strategy.CSE_ENCRYPT,), "encrypted client-side on the way through rekey")
    if target.client_side is None:
        if not target.allow_decrypt:
            return Decision((Strategy.REFUSE,), REFUSE_DECRYPT.format(mode=target.encryption.mode.value))
        return Decision((Strategy.CSE_DECRYPT,), "client-side object decrypted into the server-side target")
    if cs.under_target and route.in_place:
        return Decision((Strategy.SKIP,), "already wrapped by the target keyring in the target format")
    if not route.same_endpoint:   # a copy (with or without a new wrapping) cannot cross endpoints
        return Decision((Strategy.CSE_REENCRYPT,), "another endpoint: decrypted and encrypted again on the way")
    if cs.under_target:
        return Decision((Strategy.CSE_COPY,), "already under the target keyring: copied with its envelope")
    if cs.format == target.client_side and cs.content_alg != ContentAlg.AES_CBC:
        return Decision((Strategy.REWRAP,), "same format: only the data key is wrapped anew")
    return Decision((Strategy.CSE_REENCRYPT,), f"{cs.format.value} to {target.client_side.value}: decrypted and "
                    "encrypted again")


def _server_side(head: ObjectHead, dest: ObjectHead | None, target: Target, route: RouteKind,
                 caps: Capabilities) -> Decision:
    enc = target.encryption
    if route.in_place and sse.satisfies(head.encryption, enc):
        return Decision((Strategy.SKIP,), "already in the target encryption")
    if dest is not None and _dest_holds_it(head, dest, enc):
        return Decision((Strategy.SKIP,), "destination already holds it in the target encryption")
    if not route.same_endpoint:
        return Decision((Strategy.STREAM,), "source and destination are different endpoints")
    path = (head.encryption.mode, enc.mode)
    small = head.size <= min(target.multipart_threshold, MAX_SINGLE_COPY)
    if not caps.copy_may_apply(path) or (small and not caps.copy_object_from(head.encryption.mode)):
        return Decision((Strategy.STREAM,), "this server's copy does not apply the new encryption to such sources")
    update = (Strategy.UPDATE,) if caps.update_encryption is True and why_not_applicable(
        head.encryption, enc, in_place=route.in_place) is None else ()
    if small:
        return Decision((*update, Strategy.COPY, Strategy.STREAM), _why(update, "server-side CopyObject"))
    if not caps.part_copy_may_work(path) or not _part_copy_finds(head.key, caps):
        return Decision((*update, Strategy.STREAM), _why(update, "the server refuses UploadPartCopy for this "
                                                         "source or target"))
    return Decision((*update, Strategy.MULTIPART_COPY, Strategy.STREAM),
                    _why(update, "server-side UploadPartCopy in parallel parts"))


def why_not_applicable(source: Encryption, target: Encryption, *, in_place: bool) -> str | None:
    """Why UpdateObjectEncryption cannot turn `source` into `target`, or None when it can. Pure."""
    if not in_place:
        return "only in place (it changes the object in its own bucket)"
    if target.mode != Mode.SSE_KMS:
        return f"only to SSE-KMS (target is {target.mode.value})"
    if source.mode not in _UPDATE_SOURCES:
        return f"only from SSE-S3 or SSE-KMS (object is {source.mode.value})"
    if not target.kms_key_id or not KEY_ARN.match(target.kms_key_id):
        return "needs the target KMS key as a full key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)"
    if target.context:
        return "cannot set an encryption context"
    return None


def _part_copy_finds(key: str, caps: Capabilities) -> bool:
    """RGW 16 decodes an UploadPartCopy source once too often: `%41` names another key (NoSuchKey, learned),
    and a `%` not followed by two hex digits aborts radosgw itself (an assertion): never sent there."""
    if "%" not in key:
        return True
    return caps.get("upload_part_copy_finds_percent_keys") is not False and not _MALFORMED_ESCAPE.search(key)


def _why(update: tuple[Strategy, ...], reason: str) -> str:
    return "UpdateObjectEncryption, else " + reason if update else reason


def _dest_holds_it(head: ObjectHead, dest: ObjectHead, enc: Encryption) -> bool:
    return dest.size == head.size and sse.satisfies(dest.encryption, enc) and (
        dest.etag == head.etag
        or (dest.metadata == head.metadata and dest.content_type == head.content_type and _not_older(dest, head)))


def _not_older(dest: ObjectHead, src: ObjectHead) -> bool:
    return dest.last_modified is not None and src.last_modified is not None and \
        dest.last_modified >= src.last_modified
