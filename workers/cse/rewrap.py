"""Re-wrap: a new wrapping of an object's data key under another keyring; the body never changes."""

from __future__ import annotations

import dataclasses

from workers.cse.content import verify_commitment
from workers.cse.envelope import CseFormat, Envelope
from workers.cse.keyrings import Keyring
from workers.errors import UnsupportedError


async def rewrap_envelope(env: Envelope, old: Keyring, new: Keyring, fmt: CseFormat) -> Envelope:
    """Unwrap `env`'s data key with `old` and wrap it with `new`; content alg, IV, message id stay.

    Changing the format is not a re-wrap (V3 derives its content key): UnsupportedError. For V3 the commitment
    is checked before wrapping, so a swapped data key is never given a new, valid-looking wrapping.
    """
    if fmt is not env.format:
        raise UnsupportedError(f"{env.format.value} to {fmt.value} changes the content key derivation: "
                               "it needs full re-encryption, not a re-wrap")
    if env.format is CseFormat.V1:
        raise UnsupportedError("V1 objects are read-only: re-encrypt them to V2 or V3")
    data_key = await old.unwrap(env)
    if env.format is CseFormat.V3:
        verify_commitment(data_key, env)
    wrapped = await new.wrap(data_key, fmt)
    return dataclasses.replace(env, wrap_alg=wrapped.wrap_alg, encrypted_data_key=wrapped.edk,
                               description=dict(wrapped.description))
