"""Kafka connection settings for every client the project makes, in one place.

``client_kwargs`` feeds aiokafka's producers, consumers and admin client
(replay, publish, topic admin, model-update listener, training from the topic);
``faust_credentials`` feeds the Faust app. Both come from the same settings, so
a cluster that needs SASL (PLAIN, SCRAM-SHA-256/512) and/or TLS (CA, client
certificate) is configured once. Passwords stay ``SecretStr`` until this
boundary and are never logged.
"""

from __future__ import annotations

import ssl
from typing import Any

import faust

from streamrec.settings import Settings


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """A TLS context for SSL / SASL_SSL (server verified against the CA), else None."""
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    ctx = ssl.create_default_context(
        cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None)
    if settings.kafka_ssl_certfile is not None:
        key_password = settings.kafka_ssl_key_password
        ctx.load_cert_chain(str(settings.kafka_ssl_certfile),
                            str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
                            key_password.get_secret_value() if key_password else None)
    return ctx


Kafka = str | Settings  # a plain bootstrap list (no security) or the full settings


def client_kwargs(settings: Kafka) -> dict[str, Any]:
    """``bootstrap_servers`` and security arguments for an aiokafka client."""
    if isinstance(settings, str):
        return {"bootstrap_servers": settings}
    kwargs: dict[str, Any] = {"bootstrap_servers": settings.kafka_bootstrap,
                              "security_protocol": settings.kafka_security_protocol}
    ctx = ssl_context(settings)
    if ctx is not None:
        kwargs["ssl_context"] = ctx
    if settings.kafka_security_protocol.startswith("SASL_"):
        password = settings.kafka_sasl_password
        kwargs.update(sasl_mechanism=settings.kafka_sasl_mechanism,
                      sasl_plain_username=settings.kafka_sasl_username,
                      sasl_plain_password=password.get_secret_value() if password else None)
    return kwargs


def faust_credentials(settings: Settings) -> faust.SASLCredentials | faust.SSLCredentials | None:
    """The Faust app's ``broker_credentials`` (None for PLAINTEXT)."""
    ctx = ssl_context(settings)
    if settings.kafka_security_protocol.startswith("SASL_"):
        password = settings.kafka_sasl_password
        return faust.SASLCredentials(username=settings.kafka_sasl_username,
                                     password=password.get_secret_value() if password else None,
                                     ssl_context=ctx, mechanism=settings.kafka_sasl_mechanism)
    if ctx is not None:
        return faust.SSLCredentials(ctx)
    return None
