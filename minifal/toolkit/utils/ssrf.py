"""``fal.toolkit.utils.ssrf``: GET a URL only if every address it leads to is public.

For apps that fetch URLs their callers send and must not be steered at the host's own network:
each hop's host is resolved, every address must be globally routable (no loopback, private,
link-local, multicast, reserved, CGNAT, or such addresses embedded in IPv6 transition forms),
and the connection goes to the address that was checked (the request is pinned to it: the
``Host`` header and the TLS name stay the original host's), so a second DNS answer cannot
redirect it. Redirects are followed by hand, each hop checked the same way, credentials dropped
when the origin changes. Proxies are never used.

minifal's own input fetching (``File.as_bytes``, ``Image.to_pil``) does not go through here: a
self-hosted app's inputs often live on its own network. Apps that want fal's refusal call these.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import SplitResult, urljoin, urlsplit

import httpx

from minifal.toolkit.downloads import write_atomically

DEFAULT_ALLOWED_SCHEMES: frozenset[str] = frozenset({"http", "https"})
DEFAULT_MAX_REDIRECT_HOPS = 5

_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CROSS_ORIGIN_STRIPPED = frozenset({"authorization", "cookie", "proxy-authorization"})
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class SSRFError(Exception):
    pass


class SSRFHTTPStatusError(SSRFError):
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code
        super().__init__(f"HTTP request failed with status code {status_code}")


class SSRFConnectionError(SSRFError):
    pass


@dataclass
class SafeResponse:
    status_code: int
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes = b""


def is_globally_routable_ip(ip_str: str) -> bool:
    """Whether an address is public (addresses embedded in IPv6 transition forms included)."""
    try:
        ip = ipaddress.ip_address(ip_str)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_globally_routable_ip(str(ip.ipv4_mapped))
        if ip in _NAT64:
            return is_globally_routable_ip(str(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)))
        embedded = [ip.sixtofour] if ip.sixtofour is not None else []
        if ip.teredo is not None:
            embedded.extend(ip.teredo)
        if any(not is_globally_routable_ip(str(inner)) for inner in embedded):
            return False
    if (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    ):
        return False
    return not (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT)


def resolve_and_validate_host(hostname: str, port: int | None) -> list[str]:
    """Every address ``hostname`` resolves to; ``SSRFError`` unless all are public."""
    try:
        infos = socket.getaddrinfo(hostname, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise SSRFError("DNS resolution failed") from exc
    ips = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not ips:
        raise SSRFError("DNS resolution returned no addresses")
    if not all(is_globally_routable_ip(ip) for ip in ips):
        raise SSRFError("URL resolves to a non-public address")
    return ips


def merge_headers_for_pinned_request(
    extra_headers: dict[str, str] | None, pinned_headers: dict[str, str]
) -> dict[str, str]:
    """``extra_headers`` with any header the pinned request sets itself replaced by it."""
    pinned = {key.lower() for key in pinned_headers}
    kept = {k: v for k, v in (extra_headers or {}).items() if k.lower() not in pinned}
    return {**kept, **pinned_headers}


def ssrf_safe_get(
    url: str,
    *,
    timeout: float = 30.0,
    max_size: int | None = None,
    max_hops: int = DEFAULT_MAX_REDIRECT_HOPS,
    headers: dict[str, str] | None = None,
    allowed_schemes: frozenset[str] = DEFAULT_ALLOWED_SCHEMES,
) -> SafeResponse:
    """GET ``url`` (public addresses only); the body, at most ``max_size`` bytes."""
    return _safe_request(url, timeout, max_size, max_hops, headers, allowed_schemes, _read_all)


def ssrf_safe_get_headers(
    url: str,
    *,
    timeout: float = 30.0,
    max_hops: int = DEFAULT_MAX_REDIRECT_HOPS,
    headers: dict[str, str] | None = None,
    allowed_schemes: frozenset[str] = DEFAULT_ALLOWED_SCHEMES,
) -> SafeResponse:
    """GET ``url`` (public addresses only) and keep only the status and headers."""
    return _safe_request(url, timeout, None, max_hops, headers, allowed_schemes, None)


def ssrf_safe_get_to_file(
    url: str,
    target_path: os.PathLike[str] | str,
    *,
    timeout: float = 30.0,
    max_size: int | None = None,
    max_hops: int = DEFAULT_MAX_REDIRECT_HOPS,
    headers: dict[str, str] | None = None,
    allowed_schemes: frozenset[str] = DEFAULT_ALLOWED_SCHEMES,
    chunk_size: int = 64 * 1024,
) -> SafeResponse:
    """GET ``url`` (public addresses only) into ``target_path`` (written atomically)."""
    target = Path(target_path)

    def to_file(response: httpx.Response, limit: int | None) -> bytes:
        write_atomically(target, _limited(response.iter_bytes(chunk_size), limit))
        return b""

    return _safe_request(url, timeout, max_size, max_hops, headers, allowed_schemes, to_file)


BodyReader = Callable[[httpx.Response, int | None], bytes]


def _limited(chunks, limit: int | None):
    received = 0
    for chunk in chunks:
        received += len(chunk)
        if limit is not None and received > limit:
            raise SSRFError(f"Response body exceeds {limit} bytes")
        yield chunk


def _read_all(response: httpx.Response, limit: int | None) -> bytes:
    return b"".join(_limited(response.iter_bytes(), limit))


def _safe_request(
    url: str,
    timeout: float,
    max_size: int | None,
    max_hops: int,
    headers: dict[str, str] | None,
    allowed_schemes: frozenset[str],
    read_body: BodyReader | None,
) -> SafeResponse:
    try:
        return _follow(url, timeout, max_size, max_hops, headers, allowed_schemes, read_body)
    except httpx.HTTPError as exc:
        raise SSRFConnectionError(f"Request failed: {exc}") from exc


def _follow(
    url: str,
    timeout: float,
    max_size: int | None,
    max_hops: int,
    headers: dict[str, str] | None,
    allowed_schemes: frozenset[str],
    read_body: BodyReader | None,
) -> SafeResponse:
    current = url
    request_headers = dict(headers or {})
    with httpx.Client(timeout=timeout, trust_env=False, follow_redirects=False) as client:
        for _ in range(max_hops + 1):
            parts = _checked_parts(current, allowed_schemes)
            with _pinned_stream(client, parts, request_headers) as response:
                if response.status_code in _REDIRECT_STATUSES and "location" in response.headers:
                    target = urljoin(current, response.headers["location"])
                    if _origin(urlsplit(target)) != _origin(parts):
                        request_headers = {
                            k: v
                            for k, v in request_headers.items()
                            if k.lower() not in _CROSS_ORIGIN_STRIPPED
                        }
                    current = target
                    continue
                if response.status_code >= 400:
                    raise SSRFHTTPStatusError(response.status_code)
                declared = response.headers.get("content-length", "")
                if max_size is not None and declared.isdigit() and int(declared) > max_size:
                    raise SSRFError(f"Response body exceeds {max_size} bytes")
                content = read_body(response, max_size) if read_body is not None else b""
                return SafeResponse(response.status_code, dict(response.headers), content)
    raise SSRFError("Too many redirects")


def _checked_parts(url: str, allowed_schemes: frozenset[str]) -> SplitResult:
    parts = urlsplit(url)
    if parts.scheme.lower() not in allowed_schemes:
        raise SSRFError(f"URL scheme {parts.scheme!r} is not allowed")
    if not parts.hostname:
        raise SSRFError("URL has no hostname")
    return parts


def _origin(parts: SplitResult) -> tuple[str, str | None, int | None]:
    scheme = parts.scheme.lower()
    return scheme, parts.hostname, parts.port or _DEFAULT_PORTS.get(scheme)


def _pinned_stream(client: httpx.Client, parts: SplitResult, headers: dict[str, str]):
    """Open the request against the first checked address of the URL's host."""
    scheme, host, port = _origin(parts)
    ip = resolve_and_validate_host(host or "", port)[0]
    address = f"[{ip}]" if ":" in ip else ip
    authority = f"[{host}]" if host and ":" in host else host
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(scheme):
        authority = f"{authority}:{parts.port}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    pinned_url = f"{scheme}://{address}:{port}{path}"
    return client.stream(
        "GET",
        pinned_url,
        headers=merge_headers_for_pinned_request(headers, {"Host": authority or ""}),
        extensions={"sni_hostname": host} if scheme == "https" else {},
    )


__all__ = [
    "DEFAULT_ALLOWED_SCHEMES",
    "DEFAULT_MAX_REDIRECT_HOPS",
    "SSRFConnectionError",
    "SSRFError",
    "SSRFHTTPStatusError",
    "SafeResponse",
    "is_globally_routable_ip",
    "merge_headers_for_pinned_request",
    "resolve_and_validate_host",
    "ssrf_safe_get",
    "ssrf_safe_get_headers",
    "ssrf_safe_get_to_file",
]
