"""Which ``?fal_webhook=`` URLs the gateway will POST results to: a guard against SSRF.

A self-hosted gateway sits inside someone's network, so a caller's webhook URL must not make it
reach what the caller cannot: the cloud's metadata service, the host's own ports, the LAN.
- Always refused, whatever the allow-list says: link-local addresses (``169.254.0.0/16``,
  ``fe80::/10``, where the metadata services live) and the other cloud-metadata addresses,
  multicast, unspecified and reserved ones.
- Refused unless ``--webhook-allow`` covers them: private (RFC 1918, ``fc00::/7``, CGNAT) and
  loopback addresses. A gateway that listens only on loopback allows loopback by default (local
  development: the caller is on this machine anyway).
- The host name is resolved and every address it resolves to must pass; the check runs at
  submit (a refusal is a 400) and again at delivery, which then connects to an address it
  checked (a second DNS answer cannot redirect it). Redirects are not followed.
Addresses are classified by ``minifal.toolkit.utils.ssrf.is_globally_routable_ip``.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from minifal.toolkit.utils.ssrf import is_globally_routable_ip

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

CLOUD_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",  # AWS, GCP, Azure, Oracle, DigitalOcean, OpenStack
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.253",  # AWS DNS
        "fd00:ec2::254",  # AWS IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud (legacy)
    )
)
LOOPBACK_NETWORKS: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)
PRIVATE_NETWORKS: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("10.0.0.0/8"),
    ipaddress.ip_network("172.16.0.0/12"),
    ipaddress.ip_network("192.168.0.0/16"),
    ipaddress.ip_network("100.64.0.0/10"),
    ipaddress.ip_network("fc00::/7"),
)
ALLOW_WORDS = {"loopback": LOOPBACK_NETWORKS, "private": PRIVATE_NETWORKS}
SCHEMES = ("http", "https")

Resolver = Callable[[str, int], list[str]]


class WebhookRefused(ValueError):
    """The webhook URL is not one the gateway POSTs to; the message says why (the 400's detail)."""


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (in the resolver's order, without repeats)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise WebhookRefused(f"fal_webhook host {host!r} does not resolve") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def parse_allow_list(entries: Iterable[str]) -> tuple[IPNetwork, ...]:
    """``--webhook-allow`` values: ``loopback``, ``private``, or networks (``10.1.0.0/16``,
    ``192.168.1.7``), comma-separated or repeated."""
    networks: list[IPNetwork] = []
    for entry in entries:
        for word in filter(None, (part.strip() for part in entry.split(","))):
            if word.lower() in ALLOW_WORDS:
                networks.extend(ALLOW_WORDS[word.lower()])
                continue
            try:
                networks.append(ipaddress.ip_network(word, strict=False))
            except ValueError:
                raise ValueError(
                    f"--webhook-allow: {word!r} is not 'loopback', 'private' or a network"
                ) from None
    return tuple(networks)


def listens_only_on_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class CheckedWebhook:
    url: str
    parts: SplitResult
    addresses: tuple[str, ...]
    """What the host resolved to, every one allowed; delivery connects to the first."""


@dataclass(frozen=True)
class WebhookPolicy:
    allowed: tuple[IPNetwork, ...] = ()
    resolver: Resolver = resolve

    @classmethod
    def for_gateway(cls, listen_host: str, allow: Iterable[str] = ()) -> WebhookPolicy:
        """The allow-list given, plus loopback when the gateway listens only on loopback."""
        allowed = parse_allow_list(allow)
        if listens_only_on_loopback(listen_host):
            allowed = LOOPBACK_NETWORKS + allowed
        return cls(allowed)

    def refusal(self, address: str) -> str | None:
        """Why the gateway does not POST to ``address``, or None if it may."""
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip in CLOUD_METADATA_ADDRESSES:
            return "a cloud metadata address"
        if ip.is_link_local:
            return "a link-local address"
        if ip.is_multicast or ip.is_unspecified:
            return "not a unicast address"
        if is_globally_routable_ip(str(ip)):
            return None
        if any(ip.version == net.version and ip in net for net in self.allowed):
            return None
        kind = "a loopback" if ip.is_loopback else "a private"
        return f"{kind} address (allow it with --webhook-allow)"

    def check(self, url: str) -> CheckedWebhook:
        """The URL, resolved and allowed; ``WebhookRefused`` with the reason otherwise."""
        parts = urlsplit(url)
        if parts.scheme.lower() not in SCHEMES:
            raise WebhookRefused("fal_webhook must be an http or https URL")
        try:
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        except ValueError:
            raise WebhookRefused("fal_webhook has an invalid port") from None
        host = parts.hostname
        if not host:
            raise WebhookRefused("fal_webhook has no host")
        if parts.username or parts.password:
            raise WebhookRefused("fal_webhook must not carry credentials")
        addresses = self.resolver(host, port)
        if not addresses:
            raise WebhookRefused(f"fal_webhook host {host!r} does not resolve")
        for address in addresses:
            reason = self.refusal(address)
            if reason is not None:
                raise WebhookRefused(f"fal_webhook host {host!r} resolves to {address}: {reason}")
        return CheckedWebhook(url, parts, tuple(addresses))


def pinned_request(checked: CheckedWebhook) -> tuple[str, dict[str, str], dict[str, str]]:
    """URL, headers and httpx extensions that reach the first checked address under the
    original name (``Host`` header, TLS server name)."""
    parts = checked.parts
    scheme = parts.scheme.lower()
    ip = checked.addresses[0]
    address = f"[{ip}]" if ":" in ip else ip
    port = parts.port or (443 if scheme == "https" else 80)
    host = parts.hostname or ""
    authority = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        authority = f"{authority}:{parts.port}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    extensions = {"sni_hostname": host} if scheme == "https" else {}
    return f"{scheme}://{address}:{port}{path}", {"host": authority}, extensions
