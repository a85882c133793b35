"""A local webhook receiver that checks Standard Webhooks signatures and records what arrives.

The signatures are checked with the reference ``standardwebhooks`` library, not with the hub's own
signing code: a receiver written to the spec must accept what the hub sends.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError


class WebhookReceiver:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self._webhook = Webhook(secret)
        self.received: list[dict[str, Any]] = []  # accepted deliveries, in arrival order
        self.attempts: list[str] = []  # every webhook-id that reached us, accepted or not
        self.bad_signatures = 0
        self.fail_next = 0
        self.fail_status = 500
        self.fail_for: set[str] = set()  # master IDs to refuse (permanently, 400)
        self.ok_status = 204
        self.answer_body = b""  # sent with every answer other than a 204
        self.redirect_to = ""  # when set, every POST is answered 307 to this URL
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                msg_id = self.headers.get("webhook-id", "")
                status = receiver._handle(
                    msg_id, self.headers.get("webhook-timestamp", "0"), self.headers.get("webhook-signature", ""), body
                )
                answer = b"" if status == 204 else receiver.answer_body
                self.send_response(status)
                if status == 307:
                    self.send_header("Location", receiver.redirect_to)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        # Polled every 50 ms for shutdown, not the default 500 ms: each test stops one.
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def _handle(self, msg_id: str, timestamp: str, signature: str, body: bytes) -> int:
        with self._lock:
            self.attempts.append(msg_id)
            if self.redirect_to:
                return 307
            if not self._signed(msg_id, timestamp, signature, body):
                self.bad_signatures += 1
                return 401
            payload = json.loads(body)
            if payload["data"]["masterId"] in self.fail_for:
                return 400
            if self.fail_next > 0:
                self.fail_next -= 1
                return self.fail_status
            self.received.append({"id": msg_id, "receivedAt": time.time(), **payload})
            return self.ok_status

    def _signed(self, msg_id: str, timestamp: str, signature: str, body: bytes) -> bool:
        headers = {"webhook-id": msg_id, "webhook-timestamp": timestamp, "webhook-signature": signature}
        try:
            # Also refuses a timestamp more than 5 minutes off, as the spec asks receivers to.
            self._webhook.verify(body, headers, json_parse=False)
        except (WebhookVerificationError, ValueError):  # ValueError: a signature list it cannot split
            return False
        return True

    def changes_for(self, master_id: str) -> list[int]:
        return [m["data"]["changeId"] for m in self.received if m["data"]["masterId"] == master_id]

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
