"""The worker's OpenAPI document (streams.openapi): a valid OpenAPI 3.1 document whose
paths and methods are exactly the routes the worker's web server serves."""

from __future__ import annotations

from typing import Any, cast

import msgspec
import pytest
from openapi_spec_validator import validate

from streamrec.events import ClickEvent
from streamrec.settings import Settings
from streams.openapi import PROTECTED, document

TOKEN = "a-token-of-twenty-chars"
VARIANTS = {"plain": {}, "events": {"web_events": True}, "tokens": {"web_tokens": TOKEN},
            "events+tokens": {"web_events": True, "web_tokens": TOKEN}}


@pytest.mark.parametrize("overrides", VARIANTS.values(), ids=VARIANTS.keys())
def test_the_document_is_valid_openapi(overrides: dict[str, Any]) -> None:
    validate(cast(Any, document(Settings(**overrides))))


def test_every_route_the_worker_serves_is_described_and_nothing_else() -> None:
    from faust.web.drivers.aiohttp import Web as AiohttpWeb

    from streams.app import create_app

    s = Settings(web_events=True, web_tokens=TOKEN)
    web = cast(AiohttpWeb, create_app(s).web)
    web.init_server()  # what the worker does as its server starts: mounts the blueprints
    served = {(r.resource.canonical, r.method) for r in web.web_app.router.routes()
              if r.method != "HEAD" and r.resource is not None}
    described = {(path, method.upper()) for path, ops in document(s)["paths"].items()
                 for method in ops}
    assert served == described
    # none of Faust's own pages (/router, /table, /graph, /stats, its index at /)
    assert not {p for p, _ in served if p.startswith(("/router", "/table", "/graph", "/stats"))
                or p == "/"}


def test_events_and_auth_appear_only_where_they_are_on() -> None:
    plain = document(Settings())
    assert "/events" not in plain["paths"] and "securitySchemes" not in plain["components"]
    assert not any("401" in op["responses"] for ops in plain["paths"].values()
                   for op in ops.values())
    full = document(Settings(web_events=True, web_tokens=TOKEN))
    guarded = {path for path, ops in full["paths"].items() for op in ops.values()
               if op.get("security") == [{"bearerAuth": []}] and "401" in op["responses"]}
    assert guarded == PROTECTED == {"/recs/{user_id}", "/metrics", "/events"}


def test_the_event_schema_is_the_workers_struct() -> None:
    doc = document(Settings(web_events=True))
    schema = doc["components"]["schemas"]["ClickEvent"]
    (_,), expected = msgspec.json.schema_components([ClickEvent])
    assert schema == expected["ClickEvent"]
    assert schema["required"] == ["event_id", "user_id", "item_id", "ts"]
