"""uvicorn's httptools protocol with the two guards it lacks: a deadline for the request head and a
size cap on it.

uvicorn bounds the body only through our app (``HttpSettings.body_timeout_s``) and idle keep-alive
connections through ``timeout_keep_alive``; with httptools nothing bounds how long the request line and
headers may take to arrive (a slow-loris client holds the connection forever) or how large they grow
(``h11_max_incomplete_event_size`` applies to h11 only). Both end here with uvicorn's own
``400`` + ``Connection: close``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    header_timeout_s = 5.0
    max_head_bytes = 64 * 1024

    @classmethod
    def configured(cls, header_timeout_s: float, max_head_bytes: int) -> type[GuardedHttpToolsProtocol]:
        """The protocol class uvicorn instantiates per connection, with these limits."""
        return type(cls.__name__, (cls,), {"header_timeout_s": header_timeout_s, "max_head_bytes": max_head_bytes})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that never sends its first byte is a slow client too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def data_received(self, data: bytes) -> None:
        # httptools reports a header only once it is complete, so an endless header is counted here, on
        # the raw bytes that arrive while the head is still incomplete.
        if self._head_timer is not None:
            self._head_bytes += len(data)
        super().data_received(data)
        if (self._head_timer is not None and self._head_bytes > self.max_head_bytes
                and not self.transport.is_closing()):
            self._disarm()
            self.send_400_response("Request head too large.")

    def on_headers_complete(self) -> None:
        self._disarm()
        self._head_bytes = 0
        super().on_headers_complete()

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.send_400_response("Request head not received in time.")
