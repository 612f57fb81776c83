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


def test_validation_errors_name_the_variables_that_set_them(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from streamrec.settings import describe_validation_error

    monkeypatch.setenv("STREAMREC_BATCH_WAIT_S", "-1")
    monkeypatch.setenv("STREAMREC_MAX_EVENT_BYTES", "abc")
    with pytest.raises(ValidationError) as info:
        Settings()
    text = describe_validation_error(info.value)
    assert "STREAMREC_BATCH_WAIT_S='-1': Input should be greater than 0" in text
    assert "STREAMREC_MAX_EVENT_BYTES='abc': Input should be a valid integer" in text


@pytest.mark.parametrize(("url", "message"), [
    ("foo://u:hunter2@x", "must start with redis://, rediss:// or unix:// \\(in lower case\\), not foo://"),
    ("REDIS://u:hunter2@x", "not REDIS://"),
    ("localhost:6379", "not a URL without a scheme"),
    ("redis://u:hunter2@h:abc/0", "its port is not a number from 0 to 65535"),
    ("redis://u:pa/hunter2@h:6379/0", "its port is not a number"),  # an unencoded / in the password
    ("redis://u:1234/hunter2@h:6379/0", "its database is not a number from 0 up"),
    ("redis://u:hunter2@h:6379/x", "its database is not a number"),
    ("redis://u:hunter2@h:6379/-1", "its database is not a number"),
    ("redis://u:hunter2@h?db=x", "Invalid value for 'db' in connection URL"),
])
def test_a_bad_redis_url_is_refused_at_start_up_without_its_password(url: str, message: str) -> None:
    from pydantic import SecretStr

    with pytest.raises(ConfigError, match=message) as info:
        Settings(redis_url=SecretStr(url))
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("url", ["redis://h:6379/0", "rediss://u:p@h", "redis:///1", "redis://h/",
                                 "unix:///tmp/redis.sock", "unix:///s?db=1", "redis://[::1]:6379/0",
                                 "redis://h:6379/%31", "rediss://u:p%2Fq@h:6380/2?ssl_cert_reqs=none"])
def test_every_url_redis_py_accepts_is_accepted(url: str) -> None:
    from pydantic import SecretStr

    assert Settings(redis_url=SecretStr(url)).redis_url.get_secret_value() == url


def test_settings_from_the_environment_raise_one_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_TOP_N", "many")
    with pytest.raises(ConfigError, match="invalid settings: STREAMREC_TOP_N='many': Input should be a valid integer"):
        Settings.from_env()


def test_a_dead_letter_limit_the_producer_cannot_send_is_refused() -> None:
    from pydantic import ValidationError

    assert Settings(dead_letter_max_bytes=983_040).dead_letter_max_bytes == 983_040
    with pytest.raises(ValidationError, match="(?s)dead_letter_max_bytes.*less than or equal to 983040"):
        Settings(dead_letter_max_bytes=1_048_000)


def test_the_isolation_level_is_committed_reads_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().isolation_level == "read_committed"
    monkeypatch.setenv("STREAMREC_ISOLATION_LEVEL", "read_uncommitted")
    assert Settings.from_env().isolation_level == "read_uncommitted"
    monkeypatch.setenv("STREAMREC_ISOLATION_LEVEL", "dirty")
    with pytest.raises(ConfigError, match="STREAMREC_ISOLATION_LEVEL='dirty'"):
        Settings.from_env()
