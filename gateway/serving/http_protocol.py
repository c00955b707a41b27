"""uvicorn's HTTP/1.1 protocol, plus the connection deadlines and bounds uvicorn lacks.

uvicorn closes idle keep-alive connections, but nothing else: a client that
opens a connection and sends its headers one byte at a time (slow loris) holds
a socket and its buffers forever, and so does one that never sends anything,
or one that trickles a body the application did not wait to read. Each such
connection costs the attacker nothing. Here:

- request headers must be complete within ``limits.header_timeout_s`` of the
  connection being opened (first request) or of the request's first byte
  (later requests on a keep-alive connection), else the connection is closed;
- the request line and headers together may not exceed
  ``limits.max_header_bytes`` (431, then closed): httptools sets no bound;
- a body still arriving after the response was sent must end within
  ``limits.body_timeout_s``, else the connection is closed. (A body the
  application reads is bounded where it is read: gateway/deadlines.py.)
- a response whose bytes the client stops taking (the send buffer stays full
  for ``limits.write_timeout_s``) is cut: the connection is aborted, the
  request ends as a client disconnect, and its request slot and upstream
  stream are released. Without it, clients that ask for large answers and
  never read them hold every request slot, and the gateway sheds everyone else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.config import Limits

logger = logging.getLogger("agora.server")

HEADER_TIMEOUT = "header_timeout"
BODY_TIMEOUT = "body_timeout"
WRITE_TIMEOUT = "write_timeout"


class _HeadersTooLarge(Exception):
    """Raised from a parser callback to stop parsing an oversized request head."""


class BoundedHttpProtocol(HttpToolsProtocol):
    """One HTTP/1.1 connection with deadlines; configure a subclass with ``bounded_protocol``."""

    header_timeout_s: ClassVar[float] = 10.0
    body_timeout_s: ClassVar[float] = 30.0
    write_timeout_s: ClassVar[float] = 30.0
    max_header_bytes: ClassVar[int] = 65_536

    @staticmethod
    def on_timeout(reason: str) -> None:
        """Called when a deadline closes a connection (a metric counts them)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._write_deadline: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._head_too_large = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout_s, HEADER_TIMEOUT)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._disarm_write()
        super().connection_lost(exc)

    # The transport's flow control: paused while the send buffer is over its high-water mark.

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_deadline is None:
            self._write_deadline = self.loop.call_later(self.write_timeout_s, self._write_stalled)

    def resume_writing(self) -> None:
        self._disarm_write()
        super().resume_writing()

    # The parser's callbacks, in the order it calls them.

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        if self._deadline is None:  # the first request's clock started with the connection
            self._arm(self.header_timeout_s, HEADER_TIMEOUT)

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        cycle = self.cycle
        if cycle is not None and cycle.more_body and not self.transport.is_closing():
            self._arm(self.body_timeout_s, BODY_TIMEOUT)  # answered before its body arrived

    def send_400_response(self, msg: str) -> None:
        if not self._head_too_large:
            super().send_400_response(msg)
            return
        logger.debug(
            "refusing a request head over %d bytes from %s", self.max_header_bytes, self.client
        )
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: text/plain; charset=utf-8\r\ncontent-length: 0\r\n"
            b"connection: close\r\n\r\n"
        )
        self.transport.close()

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.max_header_bytes:
            self._head_too_large = True
            raise _HeadersTooLarge  # the parser stops; uvicorn answers via send_400_response

    def _arm(self, timeout_s: float, reason: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(timeout_s, self._expire, reason)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _disarm_write(self) -> None:
        if self._write_deadline is not None:
            self._write_deadline.cancel()
            self._write_deadline = None

    def _write_stalled(self) -> None:
        self._write_deadline = None
        logger.debug("aborting a connection from %s: it stopped reading its answer", self.client)
        self.on_timeout(WRITE_TIMEOUT)
        self.transport.abort()  # close() would wait for the buffer the client does not read

    def _expire(self, reason: str) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        logger.debug("closing a connection from %s: %s", self.client, reason.replace("_", " "))
        self.on_timeout(reason)
        self.transport.close()


def bounded_protocol(limits: Limits, notify: Callable[[str], None]) -> type[BoundedHttpProtocol]:
    """The protocol class for uvicorn's ``http`` setting, with these limits."""

    class Configured(BoundedHttpProtocol):
        header_timeout_s = limits.header_timeout_s
        body_timeout_s = limits.body_timeout_s
        write_timeout_s = limits.write_timeout_s
        max_header_bytes = limits.max_header_bytes

        @staticmethod
        def on_timeout(reason: str) -> None:
            notify(reason)

    return Configured
