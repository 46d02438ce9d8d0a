"""A local stand-in for the provider APIs the fetcher calls (real HTTP, aiohttp).

Endpoints, each under its provider's prefix (point an account's ``api_base_url`` at ``{url}/{provider}``), one
module per provider:

* Amazon Pay (amazon_pay_api.py): ``/amazon_pay[/sandbox|/live]/v2/charges/{id}``, ``/refunds/{id}``,
  ``/disputes/{id}``, ``/chargePermissions/{id}`` — every request under ``/amazon_pay`` must carry a valid
  ``AMZN-PAY-RSASSA-PSS-V2`` signature (checked with the account's *public* key); otherwise 401
  ``InvalidRequestSignature``;
* Stripe (stripe_api.py): ``/stripe/v1/payment_intents/{id}`` and ``/stripe/v1/events`` (limit, starting_after,
  ending_before, delivery_success, created[gte|lte], types[], with Stripe's paging semantics);
* Mollie (mollie_api.py): ``/mollie/v2/payments/{id}`` and ``/orders/{id}`` (with ``embed``), and the lists of
  all ``/refunds``, ``/chargebacks``, ``/subscriptions`` (``from``, ``limit``, ``embed=payment``).

Scripting (in-process, see :class:`ProviderDouble`): objects (``set_object(provider, object_type, id, body)``;
Mollie refunds, chargebacks and payments are embedded and listed from what is stored), Stripe events, answers
on demand (429 + Retry-After, 500, slow, or held until released) and a log of every request. The same controls
are exposed over HTTP under ``/_double/`` for the demo traffic of ``make run``:
``python tests/provider_double/server.py --port 8900`` (or ``python -m tests.provider_double``).

Self-contained on purpose (aiohttp + cryptography + stdlib only): it must not share code with what it
checks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

if __package__ in (None, ""):
    # Run as a file (deploy/local/run.py): the provider modules beside it are imported as this package's.
    sys.path.append(str(Path(__file__).resolve().parents[1]))
    __package__ = "provider_double"

from . import amazon_pay_api, mollie_api, stripe_api

PROVIDERS = ("amazon_pay", "stripe", "mollie")


@dataclass
class Answer:
    """A scripted answer: ``status`` None means "answer normally" (after ``delay_s``)."""

    status: int | None = None
    retry_after: str | None = None
    delay_s: float = 0.0


@dataclass
class RequestRecord:
    at: float  # time.monotonic()
    provider: str
    method: str
    path: str
    status: int = 0
    signature: str | None = None  # amazon_pay: "ok" or why it was rejected
    mode: str | None = None  # amazon_pay: "sandbox" / "live" / None (no path prefix)


def max_in_window(times: list[float], window_s: float) -> int:
    """The most of ``times`` that fall within any ``window_s`` long interval."""
    times = sorted(times)
    best, start = 0, 0
    for end in range(len(times)):
        while times[end] - times[start] > window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


@dataclass
class ProviderDouble:
    amazon_keys: dict[str, rsa.RSAPublicKey] = field(default_factory=dict)
    api_keys: dict[str, str] = field(default_factory=dict)  # provider -> expected bearer token (optional)
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    stripe_events: list[dict[str, Any]] = field(default_factory=list)  # oldest first
    requests: list[RequestRecord] = field(default_factory=list)
    _scripts: dict[str, deque[Answer]] = field(default_factory=lambda: defaultdict(deque))
    _modes: dict[str, Answer] = field(default_factory=dict)
    _gates: dict[str, asyncio.Event] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    url: str = ""

    # --- scripting -----------------------------------------------------------------------------------
    def add_amazon_key(self, public_key_id: str, public_key_pem: bytes) -> None:
        key = serialization.load_pem_public_key(public_key_pem)
        assert isinstance(key, rsa.RSAPublicKey)
        self.amazon_keys[public_key_id] = key

    def set_object(self, provider: str, object_type: str, object_id: str, body: dict[str, Any]) -> None:
        self.objects[(provider, object_type, object_id)] = body

    def add_stripe_event(self, event: dict[str, Any], *, delivered: bool = True) -> None:
        self.stripe_events.append({**event, "_delivered": delivered})

    def script(self, provider: str, *answers: Answer) -> None:
        """The next requests to ``provider`` get these answers, in order."""
        self._scripts[provider].extend(answers)

    def set_mode(self, provider: str, answer: Answer | None) -> None:
        """Every request to ``provider`` gets ``answer`` (None: back to normal) once the script is used up."""
        if answer is None:
            self._modes.pop(provider, None)
        else:
            self._modes[provider] = answer

    def hold(self, provider: str) -> None:
        """Requests to ``provider`` hang (as a stuck provider would) until :meth:`release`."""
        self._gates[provider] = asyncio.Event()

    def release(self, provider: str) -> None:
        gate = self._gates.pop(provider, None)
        if gate is not None:
            gate.set()

    # --- observing -----------------------------------------------------------------------------------
    def count(self, provider: str | None = None, *, status: int | None = None) -> int:
        return sum(
            1
            for r in self.requests
            if (provider is None or r.provider == provider) and (status is None or r.status == status)
        )

    def max_in_window(self, provider: str, window_s: float) -> int:
        """The most requests to ``provider`` that arrived within any ``window_s`` long interval."""
        return max_in_window([r.at for r in self.requests if r.provider == provider], window_s)

    # --- serving -------------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.add_routes(amazon_pay_api.routes(self.objects))
        app.add_routes(stripe_api.routes(self.objects, self.stripe_events))
        app.add_routes(mollie_api.routes(self.objects))
        app.router.add_post("/_double/objects", self._admin_object)
        app.router.add_post("/_double/stripe/events", self._admin_event)
        app.router.add_post("/_double/answers", self._admin_answers)
        app.router.add_get("/_double/requests", self._admin_requests)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0][1]
        self.url = f"http://{host}:{bound}"
        return self.url

    async def stop(self) -> None:
        for provider in list(self._gates):
            self.release(provider)
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        provider = request.path.split("/")[1]
        if provider not in PROVIDERS:
            return await handler(request)  # type: ignore[no-any-return]
        record = RequestRecord(time.monotonic(), provider, request.method, request.path)
        self.requests.append(record)
        answer = self._scripts[provider].popleft() if self._scripts[provider] else self._modes.get(provider)
        gate = self._gates.get(provider)
        if gate is not None:
            await gate.wait()
        if answer is not None and answer.delay_s:
            await asyncio.sleep(answer.delay_s)
        if provider == "amazon_pay":
            record.signature = await amazon_pay_api.verify(self.amazon_keys, request)
            record.mode = amazon_pay_api.mode_of(request.path)
            if record.signature != "ok":
                return self._reply(record, 401, {"reasonCode": "InvalidRequestSignature", "message": record.signature})
        elif provider in self.api_keys and request.headers.get("Authorization") != f"Bearer {self.api_keys[provider]}":
            return self._reply(record, 401, {"error": {"type": "invalid_request_error", "message": "bad key"}})
        if answer is not None and answer.status is not None:
            headers = {"Retry-After": answer.retry_after} if answer.retry_after is not None else {}
            return self._reply(record, answer.status, {"error": f"scripted {answer.status}"}, headers)
        response = await handler(request)
        record.status = response.status
        return response  # type: ignore[no-any-return]

    @staticmethod
    def _reply(
        record: RequestRecord, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> web.Response:
        record.status = status
        return web.json_response(body, status=status, headers=headers)

    # --- the HTTP admin API (demo traffic) -----------------------------------------------------------
    async def _admin_object(self, request: web.Request) -> web.Response:
        item = await request.json()
        self.set_object(item["provider"], item["object_type"], item["object_id"], item["body"])
        return web.json_response({"ok": True})

    async def _admin_event(self, request: web.Request) -> web.Response:
        item = await request.json()
        self.add_stripe_event(item["event"], delivered=bool(item.get("delivered", True)))
        return web.json_response({"ok": True})

    async def _admin_answers(self, request: web.Request) -> web.Response:
        item = await request.json()
        answer = Answer(item.get("status"), item.get("retry_after"), float(item.get("delay_s", 0.0)))
        if item.get("persistent"):
            self.set_mode(item["provider"], None if item.get("clear") else answer)
        else:
            self.script(item["provider"], *([answer] * int(item.get("count", 1))))
        return web.json_response({"ok": True})

    async def _admin_requests(self, _request: web.Request) -> web.Response:
        counts = {p: self.count(p) for p in PROVIDERS}
        rejected = sum(1 for r in self.requests if r.signature not in (None, "ok"))
        return web.json_response({"counts": counts, "amazon_signature_rejections": rejected})


async def _serve(args: argparse.Namespace) -> None:
    double = ProviderDouble()
    for spec in args.amazon_public_key:
        key_id, _, path = spec.partition("=")
        double.add_amazon_key(key_id, Path(path).read_bytes())
    url = await double.start(args.host, args.port)
    print(f"provider double listening on {url} (amazon_pay keys: {sorted(double.amazon_keys)})", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await double.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument(
        "--amazon-public-key",
        action="append",
        default=[],
        metavar="KEY_ID=PEM_PATH",
        help="an Amazon Pay public key id and its public key PEM (repeatable)",
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
