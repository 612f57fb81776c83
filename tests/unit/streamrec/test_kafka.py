"""Unit tests of :mod:`streamrec.kafka`."""

from __future__ import annotations

from pathlib import Path

from streamrec.kafka import client_kwargs, faust_credentials
from streamrec.settings import Settings


def test_kafka_security_arguments(tmp_path: Path) -> None:
    plain = client_kwargs(Settings())
    assert plain["security_protocol"] == "PLAINTEXT" and "sasl_plain_password" not in plain
    assert faust_credentials(Settings()) is None
    s = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                 kafka_sasl_username="svc", kafka_sasl_password="s3cret")  # type: ignore[arg-type]
    kw = client_kwargs(s)
    assert (kw["security_protocol"], kw["sasl_mechanism"], kw["sasl_plain_username"],
            kw["sasl_plain_password"]) == ("SASL_SSL", "SCRAM-SHA-512", "svc", "s3cret")
    assert kw["ssl_context"] is not None
    creds = faust_credentials(s)
    assert creds is not None and creds.mechanism.value == "SCRAM-SHA-512"
    assert "s3cret" not in repr(s) and "s3cret" not in repr(creds)  # secrets never reach logs
    assert client_kwargs("host:1") == {"bootstrap_servers": "host:1"}

