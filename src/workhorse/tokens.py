"""Credential checks shared by the surfaces that take a bearer token (dashboard, gRPC)."""

from __future__ import annotations

import hmac


def same(given: str, expected: str) -> bool:
    """``given == expected``, compared in constant time."""
    return hmac.compare_digest(given.encode(), expected.encode())


def bearer_matches(authorization: str, token: str) -> bool:
    """True if an ``Authorization`` value is ``Bearer <token>`` (the scheme in any case, as
    HTTP allows)."""
    scheme, _, value = authorization.partition(" ")
    return scheme.lower() == "bearer" and same(value.strip(), token)
