"""What the test proxies share: relaying one request to the real server and replying."""

from __future__ import annotations

import http.client
import http.server
from collections.abc import Mapping

#: Headers that belong to one connection, never forwarded.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "te", "upgrade"}
)


def relay(
    handler: http.server.BaseHTTPRequestHandler,
    connection: http.client.HTTPConnection,
    body: bytes,
    headers: Mapping[str, str],
) -> None:
    """Send the handler's request to `connection` and reply with what came back
    (502 when the server cannot be reached)."""
    try:
        connection.request(handler.command, handler.path, body=body or None, headers=dict(headers))
        response = connection.getresponse()
        status, got, answer = response.status, response.getheaders(), response.read()
    except OSError as exc:
        reply(handler, 502, {"Content-Type": "text/plain"}, f"{exc}\n".encode())
        return
    finally:
        connection.close()
    reply(handler, status, dict(got), answer)


def reply(
    handler: http.server.BaseHTTPRequestHandler,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
) -> None:
    """Answer with `status`, the end-to-end `headers` and `body`."""
    handler.send_response(status)
    for name, value in headers.items():
        if name.lower() not in HOP_BY_HOP:
            handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)
