"""``fal.FalServerlessKeyCredentials``: a fal key as its id and secret.

fal's SDK uses it to call fal's platform. Locally it is what a client sends to a minifal gateway
started with ``--auth-key ID:SECRET`` (or ``$MINIFAL_AUTH_KEY``): ``to_headers()`` gives
``Authorization: Key ID:SECRET``, the header the gateway checks. gRPC credentials
(``to_grpc``) are not applicable: minifal has no gRPC control plane.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(repr=False)
class FalServerlessKeyCredentials:
    key_id: str
    key_secret: str

    @property
    def key(self) -> str:
        """The whole key, as ``FAL_KEY`` and ``--auth-key`` spell it."""
        return f"{self.key_id}:{self.key_secret}"

    def to_headers(self) -> dict[str, str]:
        return {"Authorization": f"Key {self.key}"}

    def __repr__(self) -> str:
        return f"FalServerlessKeyCredentials(key_id={self.key_id!r}, key_secret='***')"
