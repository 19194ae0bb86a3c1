"""The alert webhook against a real HTTP server on loopback: delivery, retries, timeouts, and giving up."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from dmine_spark.analyze.alerts import alert_line, post_webhook
from dmine_spark.config import WebhookConfig


class _Server:
    """A loopback endpoint answering each POST with the next status of ``answers`` (then 200)."""

    def __init__(self, answers: list[int], delay: float = 0.0) -> None:
        self.answers, self.bodies = list(answers), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.bodies.append(json.loads(body))
                if delay:
                    threading.Event().wait(delay)
                status = outer.answers.pop(0) if outer.answers else 200
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    made: list[_Server] = []

    def make(answers: list[int], delay: float = 0.0) -> _Server:
        made.append(_Server(answers, delay))
        return made[-1]

    yield make
    for s in made:
        s.close()


ALERT = {"alert_id": "a1", "entity": "AAPL", "rule": "share_zscore:bearish", "observed": 0.6, "score": 4.2}


def test_an_alert_is_posted_as_json(server) -> None:
    s = server([])
    assert post_webhook(WebhookConfig(url=s.url, headers={"X-Token": "t"}), ALERT) == ""
    assert s.bodies == [ALERT]


def test_server_errors_are_retried_with_backoff(server) -> None:
    s = server([503, 500])
    waits: list[float] = []
    hook = WebhookConfig(url=s.url, retries=3, backoff_seconds=0.5)
    assert post_webhook(hook, ALERT, sleep=waits.append) == ""
    assert len(s.bodies) == 3 and waits == [0.5, 1.0]


def test_a_client_error_is_not_retried(server) -> None:
    s = server([400])
    err = post_webhook(WebhookConfig(url=s.url, retries=3, backoff_seconds=0), ALERT)
    assert err.startswith("HTTP 400") and len(s.bodies) == 1


def test_a_slow_endpoint_times_out_and_gives_up(server) -> None:
    s = server([], delay=1.0)
    err = post_webhook(WebhookConfig(url=s.url, timeout_seconds=0.2, retries=1, backoff_seconds=0), ALERT)
    assert "after 2 attempts" in err


def test_an_endpoint_that_is_down_gives_up_in_one_line() -> None:
    err = post_webhook(WebhookConfig(url="http://127.0.0.1:9/hook", retries=2, backoff_seconds=0), ALERT)
    assert "after 3 attempts" in err and "\n" not in err


def test_alert_line_says_what_moved() -> None:
    from datetime import datetime

    line = alert_line(
        {**ALERT, "label": "bearish", "baseline": 0.15, "window_start": datetime(2026, 3, 2), "volume": 40}
    )
    assert (
        line == "alert a1: AAPL 2026-03-02 00:00 share_zscore:bearish: bearish share 0.60 vs 0.15, score 4.20, 40 texts"
    )
