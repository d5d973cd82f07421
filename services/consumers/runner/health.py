"""A minimal HTTP server for a consumer's probes: ``/healthz``, ``/readyz``, ``/metrics``.

Consumers are not web services; this answers one short GET per connection on
``LIFTOFF_HEALTH_PORT`` (default 8081) with no dependency beyond asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

Probe = Callable[[], Awaitable[tuple[int, str]]]

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


async def serve_health(host: str, port: int, routes: dict[str, Probe]) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 5)
            while True:  # skip the headers
                line = await asyncio.wait_for(reader.readline(), 5)
                if line in (b"\r\n", b"\n", b""):
                    break
            parts = request_line.decode("latin-1").split()
            method, path = (parts[0], parts[1].split("?")[0]) if len(parts) >= 2 else ("", "")
            if method not in ("GET", "HEAD"):
                status, body = 405, "use GET\n"
            elif path in routes:
                status, body = await routes[path]()
            else:
                status, body = 404, "no such path\n"
            payload = body.encode()
            content_type = "text/plain; version=0.0.4" if path == "/metrics" else "text/plain"
            head = (
                f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                f"content-type: {content_type}\r\ncontent-length: {len(payload)}\r\n"
                "connection: close\r\n\r\n"
            ).encode()
            writer.write(head + (b"" if method == "HEAD" else payload))
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    return await asyncio.start_server(handle, host, port, reuse_address=True)
