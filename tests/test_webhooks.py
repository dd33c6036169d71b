"""The body ``?fal_webhook=`` receivers get."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
from collections.abc import Callable

import httpx
import pytest

from minifal.fleet.jobs import Job
from minifal.fleet.webhook_policy import (
    WebhookPolicy,
    WebhookRefused,
    parse_allow_list,
    pinned_request,
)
from minifal.fleet.webhooks import deliver_webhook, webhook_payload

pytestmark = pytest.mark.unit

# -- webhook_payload -------------------------------------------------------------------------------


def completed_job(status: int, body: bytes) -> Job:
    async def make() -> Job:
        job = Job("/", b"{}", {})
        job.complete(status, body)
        return job

    return asyncio.run(make())


def test_webhook_payload_ok() -> None:
    job = completed_job(200, json.dumps({"images": [1, 2]}).encode())
    assert webhook_payload(job) == {
        "request_id": job.id,
        "gateway_request_id": job.id,
        "status": "OK",
        "payload": {"images": [1, 2]},
    }


def test_webhook_payload_error_keeps_the_detail() -> None:
    detail = [{"loc": ["body", "prompt"], "msg": "required", "type": "missing"}]
    job = completed_job(422, json.dumps({"detail": detail}).encode())
    body = webhook_payload(job)
    assert body["status"] == "ERROR"
    assert body["request_id"] == job.id
    assert body["payload"] == {"detail": detail}
    assert body["error"] == "Invalid status code: 422"
    assert body["payload_error"] == detail


@pytest.mark.parametrize("raw", [b"", b"not json"])
def test_webhook_payload_of_a_body_that_is_not_json(raw: bytes) -> None:
    body = webhook_payload(completed_job(500, raw))
    assert body["status"] == "ERROR" and body["payload"] is None
    assert body["payload_error"] is None


# -- which URLs a webhook may go to (SSRF) ---------------------------------------------------------


def resolving(table: dict[str, list[str]]) -> Callable[[str, int], list[str]]:
    """A resolver from a table (no DNS in these tests)."""

    def resolve(host: str, port: int) -> list[str]:
        with contextlib.suppress(ValueError):
            return [str(ipaddress.ip_address(host))]  # a literal address is its own answer
        if host not in table:
            raise WebhookRefused(f"fal_webhook host {host!r} does not resolve")
        return table[host]

    return resolve


NAMES = {
    "public.example": ["93.184.216.34"],
    "metadata.google.internal": ["169.254.169.254"],
    "mixed.example": ["93.184.216.34", "10.1.2.3"],
    "lan.example": ["192.168.1.20"],
    "v6lan.example": ["fd12::1"],
    "localhost": ["127.0.0.1", "::1"],
    "mapped.example": ["::ffff:169.254.169.254"],
}


def policy(listen_host: str = "0.0.0.0", allow: tuple[str, ...] = ()) -> WebhookPolicy:
    made = WebhookPolicy.for_gateway(listen_host, allow)
    return WebhookPolicy(made.allowed, resolving(NAMES))


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://[fe80::1]/hook",
        "http://[fd00:ec2::254]/",
        "http://100.100.100.200/",
        "http://mapped.example/",
        "http://224.0.0.1/",
        "http://0.0.0.0/",
    ],
)
def test_link_local_and_metadata_are_refused_even_when_allowed(url: str) -> None:
    everything = ("loopback", "private", "0.0.0.0/0", "::/0")
    with pytest.raises(WebhookRefused):
        policy("127.0.0.1", everything).check(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.5/hook",
        "http://172.20.1.1/hook",
        "http://lan.example/hook",
        "http://v6lan.example/hook",
        "http://100.64.0.1/hook",
        "http://mixed.example/hook",  # every address counts, not only the first
    ],
)
def test_private_addresses_are_refused_unless_allowed(url: str) -> None:
    with pytest.raises(WebhookRefused, match="--webhook-allow"):
        policy("127.0.0.1").check(url)
    assert policy("127.0.0.1", ("private",)).check(url).url == url


def test_an_allowed_network_allows_only_itself() -> None:
    allowed = policy("0.0.0.0", ("192.168.1.0/24",))
    assert allowed.check("http://lan.example/hook").addresses == ("192.168.1.20",)
    with pytest.raises(WebhookRefused):
        allowed.check("http://10.0.0.5/hook")


def test_loopback_is_allowed_only_when_the_gateway_listens_on_loopback() -> None:
    for url in ("http://127.0.0.1:9000/hook", "http://localhost:9000/hook", "http://[::1]/h"):
        assert policy("127.0.0.1").check(url)
        assert policy("localhost").check(url)
        with pytest.raises(WebhookRefused, match="loopback"):
            policy("0.0.0.0").check(url)
        assert policy("0.0.0.0", ("loopback",)).check(url)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://public.example/",
        "file:///etc/passwd",
        "http:///nohost",
        "http://user:secret@public.example/",
        "http://nowhere.example/",
        "http://public.example:99999/",
    ],
)
def test_urls_that_are_not_plain_http_to_a_name_are_refused(url: str) -> None:
    with pytest.raises(WebhookRefused):
        policy().check(url)


def test_public_addresses_pass() -> None:
    checked = policy().check("https://public.example/hooks?x=1")
    assert checked.addresses == ("93.184.216.34",)
    url, headers, extensions = pinned_request(checked)
    assert url == "https://93.184.216.34:443/hooks?x=1"
    assert headers == {"host": "public.example"}
    assert extensions == {"sni_hostname": "public.example"}


def test_a_bad_allow_list_entry_is_refused() -> None:
    with pytest.raises(ValueError, match="webhook-allow"):
        parse_allow_list(["intranet"])


def deliver(job: Job, handler: Callable[[httpx.Request], httpx.Response]) -> bool:
    async def go() -> bool:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await deliver_webhook(client, job, attempts=1)

    return asyncio.run(go())


def hooked_job(url: str, webhook_policy: WebhookPolicy) -> Job:
    job = completed_job(200, b'{"ok": true}')
    job.webhook_url = url
    job.webhook_policy = webhook_policy
    return job


def test_delivery_checks_the_name_again_and_connects_to_the_checked_address() -> None:
    """A name that resolved to an allowed address at submit and to the metadata service at
    delivery (DNS rebinding) gets nothing."""
    answers = {"rebind.example": ["93.184.216.34"]}
    rebinding = WebhookPolicy((), resolving(answers))
    job = hooked_job("http://rebind.example/hook", rebinding)
    rebinding.check(job.webhook_url or "")
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    assert deliver(job, handler)
    assert str(sent[0].url) == "http://93.184.216.34/hook"
    assert sent[0].headers["host"] == "rebind.example"

    answers["rebind.example"] = ["169.254.169.254"]
    sent.clear()
    assert not deliver(job, handler)
    assert sent == []


def test_delivery_does_not_follow_redirects() -> None:
    job = hooked_job("http://public.example/hook", policy())
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(307, headers={"location": "http://169.254.169.254/"})

    assert not deliver(job, handler)
    assert [str(request.url) for request in sent] == ["http://93.184.216.34/hook"]
