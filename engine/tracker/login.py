"""The console's login: when ``POKESAGA_TRACKER_TOKEN`` is set, the page and its JSON API answer only
a request that carries the token — ``Authorization: Bearer <token>``, or basic auth with any user
name and the token as the password (what a browser asks for, once, and then sends with every call
of the page). ``/metrics`` stays open to the scraper. Unset, the console answers anyone who can
reach its port, which is 127.0.0.1 unless ``POKESAGA_METRICS_HOST`` says otherwise."""

from __future__ import annotations

import base64
import binascii
import hmac

CHALLENGE = 'Basic realm="pokesaga tracker", charset="UTF-8"'
ASKED = (
    "this tracker asks for its token (POKESAGA_TRACKER_TOKEN): send 'Authorization: Bearer <token>', or log in "
    "with any user name and the token as the password"
)


def allowed(authorization: str | None, token: str | None) -> bool:
    """Whether a request with this ``Authorization`` header may see the console (``token`` None: anyone)."""
    if token is None:
        return True
    scheme, _, credentials = (authorization or "").strip().partition(" ")
    if scheme.lower() == "bearer":
        return _same(credentials.strip(), token)
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        _, colon, password = decoded.partition(":")
        return bool(colon) and _same(password, token)
    return False


def _same(given: str, token: str) -> bool:
    """Compared in constant time: how long a refusal takes tells nothing of the token."""
    return hmac.compare_digest(given.encode(), token.encode())
