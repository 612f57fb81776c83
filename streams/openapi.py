"""The OpenAPI 3.1 document of the worker's HTTP port, served at ``/openapi.json``.

Built from the worker's settings, so it describes what this worker answers: ``POST
/events`` only where ``STREAMREC_WEB_EVENTS`` is on, and the bearer scheme with its 401s
only where ``STREAMREC_WEB_TOKENS`` is set. The click event's schema is generated from
the struct the worker decodes with (:class:`streamrec.events.ClickEvent`), so the two
cannot drift apart. ``tests/unit/streams/test_openapi.py`` validates the document and
checks that its paths are exactly the routes :func:`streams.web.register` serves.
"""

from __future__ import annotations

from typing import Any

import msgspec

from streamrec.events import ClickEvent
from streamrec.settings import Settings

MAX_N = 1000  # the largest ?n= of GET /recs
PROTECTED = frozenset({"/recs/{user_id}", "/metrics", "/events"})  # behind the tokens, if set
SCHEMES = {"bearerAuth": {"type": "http", "scheme": "bearer",
                          "description": "one of the tokens in STREAMREC_WEB_TOKENS"}}

Json = dict[str, Any]


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Json, description: str) -> Json:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _strings(nullable: bool = False) -> Json:
    return {"type": ["array", "null"] if nullable else "array", "items": {"type": "string"}}


def _object(properties: Json, required: list[str] | None = None) -> Json:
    return {"type": "object", "properties": properties,
            "required": list(properties) if required is None else required}


_PROVENANCE = {
    "user_id": {"type": "string"},
    "items": _strings(),
    "model_version": {"type": "string", "description": "the bundle that made the list"},
}

SCHEMAS: Json = {
    "Error": {**_object({"error": {"type": "string", "description": "what went wrong"}}),
              "additionalProperties": False},
    "EventError": {**_object({
        "error": {"type": "string", "description": "why the worker would refuse the event"},
        "kind": {"type": "string", "description": "the failure's short name, as in the "
                 "dead-letter records (too_large, malformed_json, invalid_utf8, invalid_event, …)"},
    }), "additionalProperties": False},
    "Health": _object({"status": {"const": "ok"}, "worker_id": {"type": "string"}}),
    "Ready": _object({
        "ready": {"type": "boolean"},
        "waiting_for": {**_strings(), "description": "what keeps the worker from serving"},
        "worker_id": {"type": "string"},
        "model_version": {"type": ["string", "null"]},
    }),
    "StoredList": {**_object({
        **_PROVENANCE,
        "scores": {"type": "array", "items": {"type": ["number", "null"]}},
        "reasons": {**_strings(nullable=True), "description": "why each item is there"},
        "source": {"type": "string", "description": "model, or trending/popular for a user "
                   "with no usable history"},
        "generated_at": {"type": "integer", "description": "epoch ms"},
        "last_event_id": {"type": "string"},
        "last_event_ts": {"type": "integer", "description": "epoch ms"},
        "seq": {"type": "integer", "description": "events applied to the user's session"},
        "epoch": {"type": "integer", "description": "fencing epoch of the writing worker"},
        "schema": {"type": "integer", "description": "the stored layout's version"},
        "list_id": {"type": ["string", "null"], "description": "names the list in "
                    "impressions and clicks"},
        "arm": {"type": ["string", "null"], "description": "the experiment arm that made it"},
        "fallback": {"const": False},
    }), "description": "the user's stored list (at most n items)"},
    "FallbackList": {**_object({
        **_PROVENANCE,
        "scores": {"type": "null"},
        "reasons": _strings(),
        "source": {"enum": ["trending", "popular"]},
        "list_id": {"type": "null"},
        "fallback": {"const": True},
    }), "description": "a user with no list: the trending items, topped up from the "
                       "bundle's popularity list"},
    "Accepted": _object({
        "event_id": {"type": "string"},
        "partition": {"type": "integer", "minimum": 0},
        "offset": {"type": "integer", "minimum": 0},
    }),
}


def event_schemas() -> Json:
    """The click event's JSON Schema (and any it refers to), generated from ClickEvent."""
    (_,), components = msgspec.json.schema_components(
        [ClickEvent], ref_template="#/components/schemas/{name}")
    return components


def document(settings: Settings) -> Json:
    """The OpenAPI document of a worker running with ``settings``."""
    auth = bool(settings.web_token_values)
    err = _ref("Error")
    paths: Json = {
        "/health": {"get": {
            "summary": "Liveness: 200 while the event loop answers", "operationId": "health",
            "responses": {"200": _json(_ref("Health"), "alive")}}},
        "/ready": {"get": {
            "summary": "Readiness: a bundle is loaded, partitions are assigned, tables are "
                       "recovered and the items topic was read to its end",
            "operationId": "ready",
            "responses": {"200": _json(_ref("Ready"), "ready"),
                          "503": _json(_ref("Ready"), "not ready; waiting_for says why")}}},
        "/metrics": {"get": {
            "summary": "Prometheus metrics (text exposition format)", "operationId": "metrics",
            "responses": {"200": {"description": "the metrics",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/recs/{user_id}": {"get": {
            "summary": "The user's list, or the fallback list for a user with none (never a 404)",
            "operationId": "recs",
            "parameters": [
                {"name": "user_id", "in": "path", "required": True,
                 "schema": {"type": "string", "minLength": 1, "pattern": r"^(?!\.\.?$)[^/]+$"}},
                {"name": "n", "in": "query", "required": False,
                 "description": "at most this many items",
                 "schema": {"type": "integer", "minimum": 1, "maximum": MAX_N,
                            "default": settings.top_n}},
            ],
            "responses": {
                "200": _json({"oneOf": [_ref("StoredList"), _ref("FallbackList")]}, "the list"),
                "400": _json(err, f"n is not one integer from 1 to {MAX_N} in ASCII digits, "
                             "or a query parameter other than n"),
                "503": _json(err, "no bundle loaded yet, Redis unreachable, or every read "
                                  "connection busy for 2 s (then with Retry-After)"),
            }}},
        "/openapi.json": {"get": {
            "summary": "This document", "operationId": "openapi",
            "responses": {"200": _json({"type": "object"}, "the OpenAPI document")}}},
    }
    schemas: Json = dict(SCHEMAS)
    if settings.web_events:
        schemas |= event_schemas()
        event_err = _ref("EventError")
        paths["/events"] = {"post": {
            "summary": "One click event, validated as the worker validates the clicks topic "
                       "and produced to it keyed by user_id",
            "operationId": "postEvent",
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("ClickEvent")}}},
            "responses": {
                "202": _json(_ref("Accepted"), "written to the clicks topic (acknowledged by "
                             "the broker); the worker applies it like any click"),
                "400": _json(event_err, "not JSON, not UTF-8, or a query parameter"),
                "408": _json(event_err, "the body did not arrive whole within "
                             "STREAMREC_WEB_BODY_TIMEOUT_S"),
                "413": _json(event_err, "larger than STREAMREC_MAX_EVENT_BYTES"),
                "415": _json(event_err, "the body is not application/json"),
                "422": _json(event_err, "JSON that is not a valid click event"),
                "503": _json(err, "the broker is unreachable or did not acknowledge in time; "
                             "retrying with the same event_id is safe (duplicates are dropped)"),
            }}}
    if auth:
        for path in PROTECTED & paths.keys():
            for op in paths[path].values():
                op["security"] = [{"bearerAuth": []}]
                op["responses"]["401"] = {
                    **_json(err, "no token, or not one of STREAMREC_WEB_TOKENS"),
                    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}}
    doc: Json = {
        "openapi": "3.1.0",
        "info": {"title": "streamrec worker", "version": "1",
                 "description": "A streamrec worker's HTTP port: health, readiness, metrics, "
                                "recommendation lists and, where enabled, click events."},
        "paths": paths,
        "components": {"schemas": schemas},
    }
    if auth:
        doc["components"]["securitySchemes"] = SCHEMES
    return doc
