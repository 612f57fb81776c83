"""Requests to the worker's HTTP port, by route, method and status (on ``/metrics``).

``streamrec_http_requests_total{route,method,status}`` and
``streamrec_http_request_duration_seconds{route,method,status}``, registered on the
worker's registry (:attr:`streams.prometheus.WorkerMetrics.registry`). ``route`` is
the route's pattern (``/recs/{user_id}``, never the user id), ``unmatched`` for a path
no route serves; ``method`` is one of :data:`METHODS` or ``other``: label values stay few
whatever clients send.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
# seconds: a /recs read is a Redis round trip (~1 ms); a POST /events a produce with acks=all
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["route", "method", "status"]
        self.requests = Counter("streamrec_http_requests", "HTTP requests answered, by route "
                                "pattern, method and status", labels, registry=registry)
        self.duration = Histogram("streamrec_http_request_duration_seconds", "Time to answer "
                                  "an HTTP request, by route pattern, method and status",
                                  labels, buckets=BUCKETS, registry=registry)

    def observe(self, route: str | None, method: str, status: int, seconds: float) -> None:
        labels = (route or UNMATCHED, method if method in METHODS else "other", str(status))
        self.requests.labels(*labels).inc()
        self.duration.labels(*labels).observe(seconds)
