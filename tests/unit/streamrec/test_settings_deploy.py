"""Unit tests of the deployment settings in :mod:`streamrec.settings`: setting-name hints,
the Redis password file, the advertised HTTP address."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from streamrec.errors import ConfigError
from streamrec.settings import NOT_SETTINGS, Settings, unknown_variables


def hint(var: str) -> str:
    with pytest.raises(ConfigError) as e:
        unknown_variables({var: "x"})
    return str(e.value)


def test_hints_name_only_real_settings() -> None:
    msg = hint("STREAMREC_REDIS_PASSWROD")
    assert "STREAMREC_REDIS_PORT" not in msg
    assert "did you mean STREAMREC_REDIS_PASSWORD_FILE?" in msg
    for var in NOT_SETTINGS:  # deploy/local.sh's variables pass, but are never suggested
        unknown_variables({var: "1"})
        assert var not in hint(var[:-1] + "X")


def test_the_password_file_goes_into_the_redis_url(tmp_path: Path) -> None:
    secret = tmp_path / "redis_password"
    secret.write_text("s3cr:t/@x\n")  # a compose secret file, newline and all
    s = Settings(redis_url=SecretStr("redis://redis:6379/0"), redis_password_file=secret)
    assert s.redis_url.get_secret_value() == "redis://:s3cr%3At%2F%40x@redis:6379/0"
    assert "s3cr" not in s.redis_host and "s3cr" not in repr(s)
    from redis.connection import parse_url

    assert parse_url(s.redis_url.get_secret_value())["password"] == "s3cr:t/@x"
    acl = Settings(redis_url=SecretStr("rediss://streamrec@redis:6380/1"), redis_password_file=secret)
    assert parse_url(acl.redis_url.get_secret_value())["username"] == "streamrec"
    # handed to a child process (to_env), the settings build again
    env = {**s.to_env()}
    assert Settings(redis_url=SecretStr(env["STREAMREC_REDIS_URL"]),
                    redis_password_file=Path(env["STREAMREC_REDIS_PASSWORD_FILE"])) == s


def test_a_bad_password_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="STREAMREC_REDIS_PASSWORD_FILE=.*missing: cannot read"):
        Settings(redis_password_file=tmp_path / "missing")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        Settings(redis_password_file=tmp_path / "empty")
    (tmp_path / "pw").write_text("one")
    with pytest.raises(ConfigError, match="has a password and STREAMREC_REDIS_PASSWORD_FILE another"):
        Settings(redis_url=SecretStr("redis://:two@redis:6379/0"), redis_password_file=tmp_path / "pw")


def test_the_advertised_web_address(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(web_port=6070, web_bind="0.0.0.0").web_address == f"{socket.gethostname()}:6070"
    assert Settings(web_port=6070).web_address == "127.0.0.1:6070"  # the bind, where it is one
    assert Settings(web_port=6070, web_bind="::1").web_address == "[::1]:6070"
    s = Settings(web_port=6066, web_advertised_address="127.0.0.1:6067")
    assert s.web_address == "127.0.0.1:6067"
    with pytest.raises(ValidationError, match="web_advertised_address"):
        Settings(web_advertised_address="no-port")
    monkeypatch.setenv("STREAMREC_WEB_ADVERTISED_ADDRESS", "localhost:6068")
    assert Settings().web_address == "localhost:6068"
