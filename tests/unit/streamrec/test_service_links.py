"""Kubernetes' service-link variables against the strict check on ``STREAMREC_*`` variables."""

from __future__ import annotations

import logging

import pytest

from streamrec import settings as settings_module
from streamrec.errors import ConfigError
from streamrec.settings import Settings, is_service_link, shadowed_settings, unknown_variables

# What Kubernetes injects for a Service "streamrec-worker" (headless: no cluster IP, so only
# the host and port variables of a ClusterIP Service named "streamrec-web" are complete).
WORKER_SERVICE = {"STREAMREC_WORKER_SERVICE_HOST": "10.0.0.2",
                  "STREAMREC_WORKER_SERVICE_PORT": "6066",
                  "STREAMREC_WORKER_SERVICE_PORT_HTTP": "6066"}
WEB_SERVICE = {"STREAMREC_WEB_SERVICE_HOST": "10.0.0.1",
               "STREAMREC_WEB_SERVICE_PORT": "6066",
               "STREAMREC_WEB_SERVICE_PORT_HTTP": "6066",
               "STREAMREC_WEB_PORT": "tcp://10.0.0.1:6066",
               "STREAMREC_WEB_PORT_6066_TCP": "tcp://10.0.0.1:6066",
               "STREAMREC_WEB_PORT_6066_TCP_PROTO": "tcp",
               "STREAMREC_WEB_PORT_6066_TCP_PORT": "6066",
               "STREAMREC_WEB_PORT_6066_TCP_ADDR": "10.0.0.1"}


def set_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)


def test_a_service_named_like_a_setting_prefix_does_not_stop_the_pod(
        monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, WORKER_SERVICE)
    unknown_variables(WORKER_SERVICE)
    assert Settings().top_n == 20


def test_a_service_link_on_an_integer_setting_is_ignored_and_logged(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    set_env(monkeypatch, WEB_SERVICE)
    monkeypatch.setattr(settings_module, "_logged", set())  # logged once a process: again here
    assert shadowed_settings(WEB_SERVICE) == {"web_port": "STREAMREC_WEB_PORT"}
    with caplog.at_level(logging.WARNING, logger="streamrec.settings"):
        s = Settings()
    assert s.web_port == 6066  # the default: the link's value is not parsed as the port
    monkeypatch.setenv("STREAMREC_WEB_PORT", "7077")  # a real value still counts
    assert Settings().web_port == 7077
    monkeypatch.setenv("STREAMREC_WEB_PORT", "tcp://10.0.0.1:6066")
    Settings()
    assert "ignoring STREAMREC_WEB_PORT=tcp://10.0.0.1:6066: a Kubernetes service link" in caplog.text


def test_an_explicit_port_that_is_neither_a_number_nor_a_link_still_fails(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_WEB_PORT", "http://10.0.0.1:6066")  # not Kubernetes' shape
    with pytest.raises(ValueError, match="web_port"):
        Settings()


@pytest.mark.parametrize(("var", "value"), [
    ("STREAMREC_WEB_PROT", "6066"),  # a misspelling
    ("STREAMREC_WORKER_SERVICE_HOST", "two words"),  # the name's shape, not the value's
    ("STREAMREC_WEB_SERVICE_PORT", "http"),
    ("STREAMREC_WEB_PORT_6066_TCP", "tcp://10.0.0.1:7077"),  # port in name and value differ
    ("STREAMREC_WEB_PORT_6066_TCP_PROTO", "udp"),
    ("STREAMREC_TOP_NN", "tcp://10.0.0.1:6066"),  # a link's value on a name of no link shape
])
def test_what_is_not_a_service_link_is_still_refused(var: str, value: str) -> None:
    assert not is_service_link(var, value)
    with pytest.raises(ConfigError, match=f"unknown setting {var}.*enableServiceLinks: false"):
        unknown_variables({var: value})


def test_every_shape_kubernetes_injects_is_recognised() -> None:
    for var, value in {**WORKER_SERVICE, **WEB_SERVICE,
                       "STREAMREC_DB_PORT": "tcp://[fd00::1]:5432",  # IPv6 cluster IP
                       "STREAMREC_DNS_PORT_53_UDP": "udp://10.0.0.10:53"}.items():
        assert is_service_link(var, value), var
