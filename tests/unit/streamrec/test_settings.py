"""Unit tests of :mod:`streamrec.settings`."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamrec.errors import ConfigError
from streamrec.settings import Settings, unknown_variables


def test_settings_round_trip_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import SecretStr

    from streamrec.settings import Settings

    s = Settings(redis_url=SecretStr("redis://x:1/2"), top_n=7, key_prefix="p:")
    env = s.to_env()
    assert env["STREAMREC_REDIS_URL"] == "redis://x:1/2" and "STREAMREC_WORKER_ID" not in env
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert Settings() == s


def test_unknown_setting_is_refused_with_the_closest_name() -> None:
    with pytest.raises(ConfigError, match="did you mean STREAMREC_KAFKA_SECURITY_PROTOCOL"):
        unknown_variables({"STREAMREC_KAFKA_SECURITY_PROTOCL": "SASL_SSL"})
    with pytest.raises(ConfigError, match="unknown setting STREAMREC_NOPE"):
        unknown_variables({"STREAMREC_NOPE": "1"})
    unknown_variables({"STREAMREC_KAFKA_PORT": "9092", "STREAMREC_TOP_N": "5", "OTHER": "x"})


def test_unknown_setting_stops_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_REDIS_UR", "redis://x")
    with pytest.raises(ConfigError, match="STREAMREC_REDIS_URL"):
        Settings()


def test_incomplete_security_settings_say_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs STREAMREC_KAFKA_SASL_USERNAME"):
        Settings(kafka_security_protocol="SASL_PLAINTEXT")
    with pytest.raises(ConfigError, match="go together"):
        Settings(kafka_security_protocol="SSL", kafka_ssl_certfile=tmp_path / "c.pem")
    with pytest.raises(ConfigError, match="does not exist"):
        Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match="use SSL or SASL_SSL"):
        Settings(kafka_ssl_cafile=tmp_path / "ca.pem")



def test_an_event_limit_above_what_http_and_the_producer_carry_is_refused() -> None:
    """Above 1 MiB the HTTP server and the producer refuse the event first, so a larger
    limit would be a promise the worker cannot keep."""
    from pydantic import ValidationError

    assert Settings(max_event_bytes=1_048_576).max_event_bytes == 1_048_576
    with pytest.raises(ValidationError, match="(?s)max_event_bytes.*less than or equal to 1048576"):
        Settings(max_event_bytes=4 * 1024 * 1024)
