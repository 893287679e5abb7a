"""Outgoing requests for ``wasi:http/outgoing-handler``: aiohttp's client, on the event loop.

Imported when an actor first sends a request. Each failure is a :class:`HttpError`
whose code (``http:<case>``) names the ``error-code`` case the actor sees.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp

from ..base import ProviderError

MAX_REDIRECTS = 0
"""Redirects are the actor's to follow: each hop must pass the allowlist."""


class HttpError(ProviderError):
    """An outgoing request failed; ``case`` is the ``wasi:http`` ``error-code`` case."""

    def __init__(self, message: str, *, case: str) -> None:
        super().__init__(message)
        self.case = case

    @property
    def code(self) -> str:  # type: ignore[override]
        return f"http:{self.case}"


class Client:
    """One aiohttp session for a provider's outgoing requests. Use on the event loop."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def send(self, request: dict[str, Any], timeout_s: float, max_body: int) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=False)
        url = f"{request['scheme']}://{request['authority']}{request['path_with_query']}"
        headers = [(str(n), bytes(v).decode("latin-1")) for n, v in request["headers"]]
        try:
            async with self._session.request(
                    request["method"], url, headers=headers, data=bytes(request["body"]) or None,
                    allow_redirects=False, timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
                body = bytearray()
                async for chunk in response.content.iter_any():
                    body.extend(chunk)
                    if len(body) > max_body:
                        raise HttpError(f"the response body is larger than {max_body} bytes",
                                        case="HTTP-response-body-size")
                return {"status": response.status,
                        "headers": [[n.decode("latin-1").lower(), bytes(v)] for n, v in response.raw_headers],
                        "body": bytes(body)}
        except HttpError:
            raise
        except aiohttp.InvalidURL as exc:
            raise HttpError(f"invalid URL {url!r}", case="HTTP-request-URI-invalid") from exc
        except aiohttp.ClientConnectorDNSError as exc:
            raise HttpError(f"cannot resolve {request['authority']}: {exc.os_error}", case="DNS-error") from exc
        except aiohttp.ClientConnectorError as exc:
            case = "connection-refused" if isinstance(exc.os_error, ConnectionRefusedError) else \
                "destination-unavailable"
            if isinstance(exc.os_error, socket.gaierror):
                case = "DNS-error"
            raise HttpError(f"cannot connect to {request['authority']}: {exc.os_error}", case=case) from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            raise HttpError(f"{request['authority']} closed the connection: {exc}",
                            case="HTTP-response-incomplete") from exc
        except aiohttp.ClientResponseError as exc:
            raise HttpError(f"{request['authority']}: {exc.message}", case="HTTP-protocol-error") from exc
        except (TimeoutError, asyncio.TimeoutError) as exc:
            raise HttpError(f"{request['authority']} did not answer within {timeout_s:g} s",
                            case="HTTP-response-timeout") from exc
        except aiohttp.ClientError as exc:
            raise HttpError(f"{request['authority']}: {exc}", case="destination-unavailable") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
