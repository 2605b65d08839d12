"""The console's login: the token as a bearer token, or as basic auth's password."""

from __future__ import annotations

import base64

from engine.tracker.login import allowed

TOKEN = "s3cret-token"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_without_a_token_the_console_is_open() -> None:
    assert allowed(None, None) and allowed("Bearer anything", None)


def test_the_token_opens_it_as_a_bearer_token_or_as_basic_auths_password_with_any_user() -> None:
    assert allowed(f"Bearer {TOKEN}", TOKEN)
    assert allowed(f"bearer  {TOKEN} ", TOKEN)
    assert allowed(basic("anyone", TOKEN), TOKEN)
    assert allowed(basic("", TOKEN), TOKEN)


def test_anything_else_is_refused() -> None:
    for header in (None, "", "Bearer", f"Bearer {TOKEN}x", basic(TOKEN, "wrong"), "Basic !!!", f"Token {TOKEN}",
                   "Basic " + base64.b64encode(TOKEN.encode()).decode(), basic("a", "é")):  # fmt: skip
        assert not allowed(header, TOKEN), header
