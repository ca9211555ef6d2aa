"""``ragtide.webhooks``: which callback URLs are refused, and the signature receivers check.

Nothing here opens a connection: host names go through a fake resolver (``Resolver``),
which also records whether a refusal came before any lookup.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import socket
import time
from collections.abc import Mapping, Sequence

import pytest

from ragtide.errors import ConfigError, InvalidCallbackURL, InvalidRequest
from ragtide.settings import WebhookSettings
from ragtide.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    Target,
    check_callback_url,
    check_settings,
    resolve_host,
    sign,
    signed_headers,
    verify_signature,
)

pytestmark = pytest.mark.anyio

PUBLIC = "93.184.215.14"  # documentation only: nothing here connects anywhere


class Resolver:
    """Answers from a table (a public address for any other name) and records the calls."""

    def __init__(self, table: Mapping[str, Sequence[str]] | None = None) -> None:
        self.table = dict(table or {})
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls.append((host, port))
        return self.table.get(host, [PUBLIC])


async def refused(url: str, settings: WebhookSettings | None = None, **table: list[str]) -> str:
    """The message ``check_callback_url`` refuses ``url`` with."""
    resolver = Resolver({k.replace("_", "."): v for k, v in table.items()})
    with pytest.raises(InvalidCallbackURL) as caught:
        await check_callback_url(url, settings or WebhookSettings(), resolver=resolver)
    return caught.value.message


async def accepted(url: str, settings: WebhookSettings, resolver: Resolver | None = None) -> Target:
    return await check_callback_url(url, settings, resolver=resolver or Resolver())


# --- what an attacker tried ----------------------------------------------------------------

BYPASSES = [
    # loopback in all its spellings, and the services on it (Redis, the API)
    "localhost",
    "LOCALHOST.",
    "app.localhost",
    "127.0.0.1",
    "127.0.0.1:6379",
    "127.0.0.1:8000",
    "127.0.0.1.",
    "127.255.255.254",
    "[::1]",
    "[0:0:0:0:0:0:0:1]",
    "0x7f000001",
    "0X7F000001",
    "2130706433",
    "127.1",
    "0177.0.0.1",
    "0177.1",
    "0x7f.0.0.1",
    "0x7f.1",
    "017700000001",
    # IPv6 forms embedding IPv4
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[::127.0.0.1]",
    "[::ffff:169.254.169.254]",
    "[::ffff:10.0.0.1]",
    "[64:ff9b::7f00:1]",
    "[64:ff9b::a9fe:a9fe]",
    "[2002:7f00:1::]",
    "[2002:a00:1::]",
    "[2001:0:4136:e378:8000:63bf:80ff:fffe]",  # Teredo, client 127.0.0.1
    # unspecified, broadcast, multicast, reserved
    "0.0.0.0",
    "0",
    "[::]",
    "255.255.255.255",
    "224.0.0.1",
    "[ff02::1]",
    "240.0.0.1",
    "192.0.2.1",
    # link-local and the cloud metadata service
    "169.254.169.254",
    "0xa9fea9fe",
    "2852039166",
    "[fe80::1]",
    "metadata.google.internal",
    "metadata.google.internal.",
    "instance-data.ec2.internal",
    # private ranges, CGNAT
    "10.0.0.1",
    "012.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "100.64.0.1",
    "[fc00::1]",
    "[fd12:3456::1]",
    # cluster names
    "kubernetes",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
    "redis.cache.svc.cluster.local",
    "printer.local",
    # the cluster's service range (webhooks.deny_cidrs)
    "10.96.0.1",
]


@pytest.mark.parametrize("host", BYPASSES)
async def test_internal_targets_are_refused_in_every_spelling(host: str) -> None:
    resolver = Resolver()
    settings = WebhookSettings(allow_http=True)
    for scheme in ("https", "http"):
        with pytest.raises(InvalidCallbackURL) as caught:
            await check_callback_url(f"{scheme}://{host}/hook", settings, resolver=resolver)
        assert caught.value.code == "invalid_callback_url"
        assert isinstance(caught.value, InvalidRequest)  # 422
        assert caught.value.message.startswith("callback_url host ")
    assert resolver.calls == []  # refused by name or by address, before any lookup


@pytest.mark.parametrize(
    "spelling", ["0x7f000001", "2130706433", "127.1", "0177.0.0.1", "0x7f.1", "0xa9fea9fe", "012.1"]
)
async def test_numeric_hosts_are_read_like_inet_aton(spelling: str) -> None:
    meant = str(ipaddress.IPv4Address(socket.inet_aton(spelling)))
    message = await refused(f"https://{spelling}/")
    assert f"{spelling!r} means {meant}," in message


async def test_a_numeric_spelling_of_a_public_address_is_normalised() -> None:
    target = await accepted("https://0x5db8d70e:8443/hook", WebhookSettings())
    assert target == Target(
        url=f"https://{PUBLIC}:8443/hook", host=PUBLIC, port=8443, addresses=(PUBLIC,)
    )


@pytest.mark.parametrize("host", ["1.2.3.09", "08.1", "0x", "1.2.3.4.5", "4294967296", "1a.2.3.4"])
async def test_ambiguous_numeric_hosts_are_refused(host: str) -> None:
    assert "numeric host" in await refused(f"https://{host}/")


async def test_the_reason_is_named() -> None:
    assert await refused("https://[::1]/") == "callback_url host '::1' is a loopback address"
    assert "link-local" in await refused("https://169.254.169.254/latest/meta-data")
    assert "carrier-grade NAT" in await refused("https://100.64.0.1/")
    assert "internal name" in await refused("https://metadata.google.internal/")
    assert "single-label" in await refused("https://kubernetes/")
    message = await refused("https://[::ffff:127.0.0.1]/")
    assert message.endswith("an IPv4-mapped address embedding 127.0.0.1, a loopback address")


# --- names resolved to internal addresses -------------------------------------------------


@pytest.mark.parametrize(
    "addresses",
    [
        ["127.0.0.1"],
        ["10.1.2.3"],
        ["169.254.169.254"],
        ["::ffff:169.254.169.254"],
        ["fd00::1"],
        ["fe80::1%2"],
        ["10.96.0.10"],
    ],
)
async def test_a_name_resolving_inside_is_refused(addresses: list[str]) -> None:
    message = await refused("https://rebind.example.com/", rebind_example_com=addresses)
    shown = ipaddress.ip_address(addresses[0])
    assert message.startswith(f"callback_url host 'rebind.example.com' resolves to {shown}, ")


@pytest.mark.parametrize(
    "addresses", [[PUBLIC, "10.0.0.1"], ["::1", PUBLIC], [PUBLIC, "2001:db8::1", "8.8.8.8"]]
)
async def test_every_resolved_address_is_checked(addresses: list[str]) -> None:
    assert "resolves to" in await refused("https://mixed.example.com/", mixed_example_com=addresses)


async def test_the_resolver_is_asked_once_and_its_addresses_kept() -> None:
    resolver = Resolver({"hooks.example.com": [PUBLIC, "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]})
    target = await accepted("https://Hooks.Example.COM.:8443/a/b?c=1", WebhookSettings(), resolver)
    assert resolver.calls == [("hooks.example.com", 8443)]
    assert target.url == "https://hooks.example.com:8443/a/b?c=1"
    assert (target.host, target.port) == ("hooks.example.com", 8443)
    assert target.addresses == (PUBLIC, "2606:2800:21f:cb07:6820:80da:af6b:8b2c")
    assert target.host_header == "hooks.example.com:8443"
    assert target.url_for(PUBLIC) == f"https://{PUBLIC}:8443/a/b?c=1"
    assert target.url_for("2606:2800::1") == "https://[2606:2800::1]:8443/a/b?c=1"


async def test_an_international_name_is_resolved_in_ascii() -> None:
    resolver = Resolver()
    target = await accepted("https://münchen.example/hook", WebhookSettings(), resolver)
    assert target.host == "xn--mnchen-3ya.example" and resolver.calls[0][0] == target.host
    assert target.host_header == "xn--mnchen-3ya.example"


async def test_names_that_do_not_resolve_are_refused() -> None:
    class Failing(Resolver):
        async def __call__(self, host: str, port: int) -> Sequence[str]:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(InvalidCallbackURL, match="does not resolve"):
        await check_callback_url("https://nx.example.com/", WebhookSettings(), resolver=Failing())
    assert "has no address" in await refused("https://empty.example.com/", empty_example_com=[])
    assert "not an address" in await refused("https://odd.example.com/", odd_example_com=["x"])


async def test_a_lookup_that_hangs_is_bounded() -> None:
    never = asyncio.Event()

    async def hanging(host: str, port: int) -> Sequence[str]:
        await never.wait()
        return [PUBLIC]

    with pytest.raises(InvalidCallbackURL, match="did not resolve within"):
        await check_callback_url(
            "https://slow.example.com/", WebhookSettings(timeout_s=0.01), resolver=hanging
        )


async def test_the_default_resolver_reads_numeric_answers_without_the_network() -> None:
    assert await resolve_host("127.0.0.1", 443) == ["127.0.0.1"]


# --- the form of the URL ------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://user:pass@hooks.example.com/",
        "https://user@hooks.example.com/",
        "https://:@hooks.example.com/",
        "https://@hooks.example.com/",
        "https://hooks.example.com@127.0.0.1/",
    ],
)
async def test_credentials_in_the_url_are_refused(url: str) -> None:
    assert "credentials" in await refused(url)


async def test_http_only_when_allowed() -> None:
    assert "must use https, not 'http'" in await refused("http://hooks.example.com/")
    target = await accepted("http://hooks.example.com/", WebhookSettings(allow_http=True))
    assert (target.url, target.port, target.host_header) == (
        "http://hooks.example.com/",
        80,
        "hooks.example.com",
    )


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example.com/",
        "file:///etc/passwd",
        "gopher://hooks.example.com:6379/_SET",
        "hooks.example.com/hook",
        "//hooks.example.com/hook",
    ],
)
async def test_other_schemes_are_refused(url: str) -> None:
    assert "must use https or http" in await refused(url, WebhookSettings(allow_http=True))


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://hooks.example.com/#frag", "fragment"),
        ("https://hooks.example.com/#", "fragment"),
        ("https://evil.example\\@hooks.example.com/", "'\\'"),
        ("https://hooks.example.com/a b", "whitespace"),
        ("https://hooks.example.com\t/", "whitespace"),
        ("https://%6c%6fcalhost/", "percent-encode"),
        ("https://[fe80::1%25eth0]/", "zone"),
        ("https://[127.0.0.1]/", "not a valid URL"),
        ("https://[::1]x/", "not a valid URL"),
        ("https://hooks.example.com:0/", "invalid port"),
        ("https://hooks.example.com:65536/", "invalid port"),
        ("https://hooks.example.com:x/", "invalid port"),
        ("https:///hook", "no host"),
        ("https://hooks..example.com/", "invalid host name"),
        ("https://-hooks.example.com/", "invalid host name"),
        ("https://hooks.example.com/" + "a" * 2048, "longer than"),
    ],
)
async def test_malformed_urls_are_refused(url: str, reason: str) -> None:
    assert reason in await refused(url)


async def test_a_port_is_allowed() -> None:
    target = await accepted("https://hooks.example.com:6379/", WebhookSettings())
    assert target.port == 6379 and target.host_header == "hooks.example.com:6379"


# --- settings ------------------------------------------------------------------------------


async def test_allow_hosts_admits_an_intended_loopback_receiver() -> None:
    settings = WebhookSettings(allow_http=True, allow_hosts=["127.0.0.1"])
    target = await accepted("http://127.0.0.1:8080/hook", settings)
    assert target.addresses == ("127.0.0.1",)
    resolver = Resolver({"hooks.example.test": ["127.0.0.1"]})
    target = await accepted("http://hooks.example.test:8080/hook", settings, resolver)
    assert (target.host, target.addresses) == ("hooks.example.test", ("127.0.0.1",))
    # only what it names: other loopback addresses and spellings stay refused
    assert "loopback" in await refused("http://127.0.0.2/", settings)
    assert "loopback" in await refused("http://[::1]/", settings)
    assert "mapped" in await refused("http://[::ffff:127.0.0.1]/", settings)
    assert "resolves to 127.0.0.2" in await refused(
        "http://hooks.example.test/", settings, hooks_example_test=["127.0.0.1", "127.0.0.2"]
    )
    # nor does it relax the form of the URL
    assert "credentials" in await refused("http://u:p@127.0.0.1/", settings)
    assert "must use https" in await refused(
        "http://127.0.0.1/", WebhookSettings(allow_hosts=["127.0.0.1"])
    )


async def test_allow_hosts_by_name_and_by_range() -> None:
    settings = WebhookSettings(
        allow_hosts=["hooks.svc.cluster.local", "*.corp.internal", "10.20.0.0/16", "fd00::/8"]
    )
    resolver = Resolver(
        {
            "hooks.svc.cluster.local": ["10.96.4.2"],
            "a.corp.internal": ["10.3.0.1"],
            "ranged.example.com": ["10.20.1.1", "fd00::5"],
        }
    )
    for url in (
        "https://hooks.svc.cluster.local/",
        "https://a.corp.internal/",
        "https://ranged.example.com/",
        "https://10.20.3.4/",
    ):
        await accepted(url, settings, resolver)
    assert "internal name" in await refused("https://corp.internal/", settings)
    assert "internal name" in await refused("https://other.svc.cluster.local/", settings)
    assert "private" in await refused(
        "https://ranged.example.com/", settings, ranged_example_com=["10.20.1.1", "10.21.0.1"]
    )


async def test_deny_cidrs_are_honoured() -> None:
    settings = WebhookSettings(deny_cidrs=["93.184.0.0/16", "2606:2800::/32"])
    assert "in a denied range (93.184.0.0/16)" in await refused("https://example.com/", settings)
    assert "denied range" in await refused(f"https://{PUBLIC}/", settings)
    assert "denied range" in await refused(
        "https://v6.example.com/", settings, v6_example_com=["2606:2800::1"]
    )
    assert "denied range (10.96.0.0/12)" in await refused("https://10.100.0.1/")  # the default


def test_a_deny_cidr_that_is_not_a_network_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="deny_cidrs"):
        check_settings(WebhookSettings(deny_cidrs=["10.96.0.0/12", "not-a-network"]))
    check_settings(WebhookSettings())


# --- signatures ----------------------------------------------------------------------------

BODY = b'{"task_id":"9f0c","status":"done"}'
SECRET = b"whsec-tenant-acme"


def test_the_signature_is_an_hmac_of_the_timestamp_and_body() -> None:
    expected = hmac.new(SECRET, b"1764121245." + BODY, hashlib.sha256).hexdigest()
    assert sign(BODY, SECRET, 1764121245) == f"t=1764121245,v1={expected}"


def test_sign_and_verify_round_trip() -> None:
    header = sign(BODY, SECRET, 1_000_000)
    assert verify_signature(BODY, header, SECRET, now=1_000_000)
    assert verify_signature(BODY, header, SECRET, now=1_000_300)
    assert verify_signature(BODY, header, SECRET, now=999_700)
    assert verify_signature(BODY, sign(BODY, SECRET, int(time.time())), SECRET)


@pytest.mark.parametrize(
    ("body", "secret", "now"),
    [
        (BODY + b" ", SECRET, 1_000_000),  # a changed body
        (BODY.replace(b"done", b"fail"), SECRET, 1_000_000),
        (BODY, b"another tenant's secret", 1_000_000),
        (BODY, SECRET, 1_000_301),  # too old: a replay
        (BODY, SECRET, 999_699),  # from the future
    ],
)
def test_tampering_and_expiry_are_rejected(body: bytes, secret: bytes, now: float) -> None:
    assert not verify_signature(body, sign(BODY, SECRET, 1_000_000), secret, now=now)


def test_tolerance_is_the_receivers_choice() -> None:
    header = sign(BODY, SECRET, 1_000_000)
    assert not verify_signature(BODY, header, SECRET, now=1_000_061, tolerance_s=60)
    assert verify_signature(BODY, header, SECRET, now=1_003_600, tolerance_s=3600)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        "t=1000000",
        "v1=" + "0" * 64,
        "t=abc,v1=" + "0" * 64,
        "t=-1000000,v1=00",
        "t=1000000,v1=",
        "t=1000000,v1=é",
        "t=1000000,t=1000000,v1=00",
    ],
)
def test_malformed_signature_headers_are_rejected(header: str) -> None:
    assert not verify_signature(BODY, header, SECRET, now=1_000_000)


def test_a_header_forged_with_another_timestamp_is_rejected() -> None:
    genuine = sign(BODY, SECRET, 1_000_000)
    forged = genuine.replace("t=1000000", "t=1000200")
    assert not verify_signature(BODY, forged, SECRET, now=1_000_200)


def test_several_signatures_while_a_secret_rotates() -> None:
    new = sign(BODY, b"new secret", 1_000_000).split(",")[1]
    header = f"{sign(BODY, SECRET, 1_000_000)},{new}"
    assert verify_signature(BODY, header, SECRET, now=1_000_000)
    assert verify_signature(BODY, header, b"new secret", now=1_000_000)
    assert not verify_signature(BODY, header, b"neither", now=1_000_000)


def test_delivery_headers() -> None:
    signed = signed_headers(BODY, SECRET, delivery_id="d-1", timestamp=1_000_000)
    assert signed[EVENT_HEADER] == "task.finished" and signed[DELIVERY_HEADER] == "d-1"
    assert signed[SIGNATURE_HEADER] == sign(BODY, SECRET, 1_000_000)
    assert signed["Content-Type"] == "application/json"
    unsigned = signed_headers(BODY, None)
    assert SIGNATURE_HEADER not in unsigned
    assert len(unsigned[DELIVERY_HEADER]) == 36  # a UUID, new for each delivery
    assert unsigned[DELIVERY_HEADER] != signed_headers(BODY, None)[DELIVERY_HEADER]
