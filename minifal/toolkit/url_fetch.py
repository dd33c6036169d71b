"""Reading the bytes behind a URL an app was given: ``data:`` URIs and http(s), bounded.

Everything a request hands us by URL goes through here, so the limits live in one place: a size cap
(``$MINIFAL_MAX_DOWNLOAD_BYTES``, 100 MB by default) enforced while streaming, a timeout per network
operation, and a handful of redirects. Failures raise :class:`DownloadError` (this module is its one
home; ``minifal.toolkit.downloads`` re-exports it), except an oversized body, which raises
:class:`minifal.exceptions.FileTooLargeError` so the runner can answer 413.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from email.message import Message
from pathlib import PurePosixPath
from urllib.parse import unquote, unquote_to_bytes, urlsplit

import httpx

from minifal.exceptions import FileTooLargeError
from minifal.host import envs

DEFAULT_TIMEOUT_S = 30.0
MAX_REDIRECTS = 5
FETCHABLE_SCHEMES = ("http", "https", "data")
CHUNK_SIZE = 1024 * 1024
USER_AGENT = "minifal (python-httpx)"


class DownloadError(Exception):
    """A URL could not be read: malformed, unreachable, timed out, or answered with an error.

    ``status_code`` is the answer the runner gives when this escapes an endpoint: the URL came
    from the caller, so by default it is the caller's problem (400).
    """

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


def max_download_bytes() -> int:
    """The size cap for fetched inputs: ``$MINIFAL_MAX_DOWNLOAD_BYTES``, else 100 MB."""
    return envs.MAX_DOWNLOAD_BYTES.get()


def check_fetchable_url(url: str) -> str:
    """Return ``url`` if it is an http(s) or ``data:`` URL, else raise ``ValueError``.

    This is the gate for URLs a caller sends: ``file://``, ``ftp:`` and friends would let a request
    read the server's own disk or reach odd services, so they are refused before any I/O.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in FETCHABLE_SCHEMES:
        allowed = ", ".join(f"{name}:" for name in FETCHABLE_SCHEMES)
        raise ValueError(f"URL scheme must be one of {allowed} (got {_shorten(url)!r})")
    if scheme in ("http", "https") and not parts.hostname:
        raise ValueError(f"URL has no host: {_shorten(url)!r}")
    if scheme == "data" and "," not in url:
        raise ValueError("data: URL has no ',' before its payload")
    return url


class OpenedUrl:
    """A URL whose headers are known and whose body has not been read yet."""

    def __init__(
        self,
        url: str,
        chunks: Iterable[bytes],
        *,
        content_type: str | None,
        content_length: int | None,
        file_name: str | None,
    ) -> None:
        self.url = url
        self.content_type = content_type
        self.content_length = content_length
        self.file_name = file_name
        """The name the server suggests (``Content-Disposition``), else the URL path's last part."""
        self._chunks = chunks

    def iter_bytes(self, max_bytes: int | None) -> Iterator[bytes]:
        """Yield the body; raise ``FileTooLargeError`` as soon as it passes ``max_bytes``."""
        if max_bytes is not None and (self.content_length or 0) > max_bytes:
            raise _too_large(self.url, max_bytes)
        received = 0
        for chunk in self._chunks:
            received += len(chunk)
            if max_bytes is not None and received > max_bytes:
                raise _too_large(self.url, max_bytes)
            yield chunk

    def read(self, max_bytes: int | None) -> bytes:
        return b"".join(self.iter_bytes(max_bytes))


@contextmanager
def open_url(
    url: str,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    headers: dict[str, str] | None = None,
) -> Iterator[OpenedUrl]:
    """Open ``url`` for streaming; the connection is closed when the block ends.

    ``timeout`` bounds each network step (connect, each read), not the whole transfer: a large
    file on a slow but live link is allowed, a stalled one is not.
    """
    try:
        check_fetchable_url(url)
    except ValueError as exc:
        raise DownloadError(str(exc)) from None
    if urlsplit(url).scheme.lower() == "data":
        data, media_type = decode_data_url(url)
        yield OpenedUrl(
            url, [data], content_type=media_type, content_length=len(data), file_name=None
        )
        return
    request_headers = {"User-Agent": USER_AGENT, **(headers or {})}
    try:
        with (
            httpx.Client(
                follow_redirects=True, max_redirects=MAX_REDIRECTS, timeout=timeout
            ) as client,
            client.stream("GET", url, headers=request_headers) as response,
        ):
            if response.status_code >= 400:
                raise DownloadError(
                    f"Fetching {_shorten(url)} failed: the server answered HTTP "
                    f"{response.status_code}"
                )
            yield OpenedUrl(
                url,
                _http_chunks(response, url),
                content_type=_media_type(response.headers.get("content-type")),
                content_length=_body_length(response.headers),
                file_name=_suggested_file_name(response),
            )
    except httpx.HTTPError as exc:
        raise DownloadError(f"Fetching {_shorten(url)} failed: {exc}") from exc


def fetch_bytes(
    url: str,
    *,
    max_bytes: int | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> bytes:
    """The whole body behind ``url``, at most ``max_bytes`` (default: ``max_download_bytes()``)."""
    limit = max_download_bytes() if max_bytes is None else max_bytes
    with open_url(url, timeout=timeout) as opened:
        return opened.read(limit)


def decode_data_url(url: str) -> tuple[bytes, str]:
    """Payload and media type of a ``data:`` URL (RFC 2397), base64 or percent-encoded."""
    header, sep, payload = url.partition(",")
    if not sep or not header.lower().startswith("data:"):
        raise DownloadError("Malformed data: URL (expected 'data:[<type>][;base64],<payload>')")
    params = header[len("data:") :].split(";")
    is_base64 = params[-1].strip().lower() == "base64"
    if is_base64:
        params.pop()
    media_type = params[0].strip() or "text/plain"
    raw = unquote_to_bytes(payload)
    if not is_base64:
        return raw, media_type
    try:
        return base64.b64decode(b"".join(raw.split()), validate=True), media_type
    except (binascii.Error, ValueError):
        raise DownloadError("Malformed data: URL: its payload is not valid base64") from None


def _http_chunks(response: httpx.Response, url: str) -> Iterator[bytes]:
    """The response body, with transport failures mid-stream reported as ``DownloadError``."""
    try:
        yield from response.iter_bytes(CHUNK_SIZE)
    except httpx.HTTPError as exc:
        raise DownloadError(f"Fetching {_shorten(url)} failed: {exc}") from exc


def _suggested_file_name(response: httpx.Response) -> str | None:
    disposition = response.headers.get("content-disposition")
    if disposition:
        message = Message()
        message["content-disposition"] = disposition
        name = message.get_filename()
        if name:
            return PurePosixPath(name.replace("\\", "/")).name or None
    return PurePosixPath(unquote(response.url.path)).name or None


def _media_type(content_type: str | None) -> str | None:
    if not content_type:
        return None
    return content_type.split(";", 1)[0].strip() or None


def _body_length(headers: httpx.Headers) -> int | None:
    """The body's size as we will read it; unknown when it is compressed on the wire.

    A body cut short is caught by httpx itself (it raises when fewer bytes than declared arrive).
    """
    if headers.get("content-encoding", "identity").lower() != "identity":
        return None
    try:
        return int(headers["content-length"])
    except (KeyError, ValueError):
        return None


def _too_large(url: str, max_bytes: int) -> FileTooLargeError:
    return FileTooLargeError(f"File at {_shorten(url)} is larger than {max_bytes} bytes.")


def _shorten(url: str, limit: int = 100) -> str:
    """A URL short enough for an error message (``data:`` URLs can be megabytes long)."""
    return url if len(url) <= limit else url[: limit - 3] + "..."
