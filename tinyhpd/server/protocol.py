"""The HTTP protocol uvicorn runs, with a header read timeout: a connection that has not sent a whole request head
within `header_timeout` seconds of opening (or of its previous response) is closed. uvicorn has no such limit, so a
client trickling its headers (slowloris) held a connection slot for as long as it liked."""
from __future__ import annotations

from typing import Any, Type

__all__ = ["with_header_timeout"]


def with_header_timeout(header_timeout: float) -> Type[Any]:
    """uvicorn's own HTTP protocol class, subclassed to close connections whose request head is late."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class HeaderTimeoutProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
            super().connection_made(transport)
            self._arm_header_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_header_timer()

        def _arm_header_timer(self) -> None:
            self.loop.call_later(header_timeout, self._header_deadline, self.cycle)

        def _header_deadline(self, cycle_then) -> None:  # type: ignore[no-untyped-def]
            """No new request head since the timer was armed, and none in progress: close."""
            if self.transport.is_closing() or self.cycle is not cycle_then:
                return
            if cycle_then is None or cycle_then.response_complete:
                self.transport.close()

    return HeaderTimeoutProtocol
