"""Bearer tokens: the check of streams.web and the STREAMREC_WEB_TOKENS setting."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from streamrec.errors import ConfigError
from streamrec.settings import Settings
from streams.web import bearer_refusal

OLD, NEW = b"old-token-0123456789", b"new-token-0123456789"


def test_any_listed_token_is_admitted() -> None:
    for token in (OLD, NEW):
        assert bearer_refusal(f"Bearer {token.decode()}", [OLD, NEW]) is None
    assert bearer_refusal(f"bearer  {NEW.decode()} ", [OLD, NEW]) is None  # scheme is case-insensitive


def test_a_missing_token_gets_the_challenge_without_an_error_code() -> None:
    for header in (None, ""):
        message, challenge = bearer_refusal(header, [OLD]) or ("", "")
        assert challenge == 'Bearer realm="streamrec"' and "Authorization: Bearer" in message


def test_a_wrong_token_or_scheme_is_refused_with_its_error_code() -> None:
    for header in (f"Bearer {OLD.decode()}x", "Bearer old-token", f"Bearer {OLD.decode()[:-1]}",
                   "Bearer \udcff\u00e9"):
        refusal = bearer_refusal(header, [OLD, NEW])
        assert refusal is not None and refusal[1].endswith('error="invalid_token"'), header
    for header in (f"Basic {OLD.decode()}", "Bearer", "Bearer   ", OLD.decode()):
        refusal = bearer_refusal(header, [OLD])
        assert refusal is not None and refusal[1].endswith('error="invalid_request"'), header


def test_tokens_are_split_at_commas_and_blank_entries_dropped() -> None:
    s = Settings(web_tokens=SecretStr(f" {NEW.decode()} ,, {OLD.decode()},"))
    assert s.web_token_values == (NEW.decode(), OLD.decode())
    assert Settings().web_token_values == ()


@pytest.mark.parametrize(("value", "match"), [
    (" , ", "holds no token"),
    ("short", "token 1 has 5 characters, a token needs 16 or more"),
    (f"{OLD.decode()},with space in it 12345", "token 2 holds a character"),
    (f"{OLD.decode()},quote\"d-0123456789", "token 2 holds a character"),
])
def test_a_malformed_token_list_stops_the_settings(value: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as e:
        Settings(web_tokens=SecretStr(value))
    assert "0123456789" not in str(e.value)  # no token is shown


def test_the_bind_address_is_loopback_unless_set() -> None:
    assert Settings().web_bind == "127.0.0.1"
