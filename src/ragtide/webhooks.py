"""Webhooks that receivers can trust: where a task callback may go, and how it is signed.

**Where.** ``check_callback_url(url, settings)`` accepts a URL or raises
``InvalidCallbackURL`` (HTTP 422, ``invalid_callback_url``) naming the reason:

- the scheme is ``https`` (``http`` too with ``webhooks.allow_http``); no credentials
  (``user:pass@``), no fragment, no whitespace, control characters or backslashes; a port
  is fine (1-65535);
- numeric hosts are read the way the C resolver and browsers read them (``inet_aton``:
  ``2130706433``, ``0x7f000001``, ``0177.0.0.1`` and ``127.1`` all mean ``127.0.0.1``) and
  an ambiguous one (``1.2.3.09``) is refused;
- names that only mean something inside: ``localhost`` and ``*.localhost``, ``*.internal``
  (``metadata.google.internal``), ``*.svc``, ``*.cluster.local``, ``*.local``,
  ``*.localdomain``, ``*.home.arpa`` and single-label names (which the local search domains
  would complete, ``kubernetes`` → ``kubernetes.default.svc.cluster.local``) are refused by
  name, before any lookup;
- other names are resolved once (``loop.getaddrinfo`` as an absolute name, so without the
  search domains; the resolver is injectable) and **every** address must be public: not
  loopback, link-local (``169.254.169.254``), private (RFC 1918, ``fc00::/7``), CGNAT
  (``100.64.0.0/10``), multicast, unspecified, broadcast, reserved or documentation, nor an
  IPv6 form embedding such an IPv4 address (IPv4-mapped ``::ffff:127.0.0.1``, compatible,
  NAT64 ``64:ff9b::/96``, 6to4, Teredo), nor in ``webhooks.deny_cidrs``.

``webhooks.allow_hosts`` lets intended internal receivers through: a name there (or
``*.suffix``) skips the name and address rules, a CIDR or address there admits the
addresses it contains. The scheme and URL rules still apply.

The answer is a ``Target``: the normalised URL, its host and port, and the checked
addresses. ``deliver()`` connects to one of those addresses, never to whatever the name
resolves to later (no DNS rebinding), while sending the original ``Host`` header and, for
https, the original name as SNI and for certificate verification. Redirects are not
followed (a 3xx is a failed delivery), proxies from the environment are not used, and
connections are not kept alive (a connection verified for one name is never reused for
another).

**Signing** follows GitHub and Stripe. Each POST carries::

    Ragtide-Event: task.finished
    Ragtide-Delivery: 5b0c7c5e-…            (a UUID per delivery, to drop duplicates)
    Ragtide-Signature: t=1764121245,v1=6f1c…  (when the tenant has a webhook secret)

where ``v1`` is the hex HMAC-SHA256, keyed with the tenant's secret, of the timestamp, a
dot and the raw body: ``f"{t}.".encode() + body``. A receiver verifies it on the raw
bytes it received, before parsing them::

    from ragtide.webhooks import verify_signature

    if not verify_signature(body, request.headers["Ragtide-Signature"], secret):
        return 400          # forged, altered, or older than five minutes (a replay)

``verify_signature`` compares in constant time, accepts several ``v1`` values (a secret
being rotated) and refuses a timestamp more than ``tolerance_s`` (300 s) away from now.
Without this package: recompute the HMAC above and compare with ``hmac.compare_digest``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import ipaddress
import re
import socket
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from ragtide.errors import ConfigError, InvalidCallbackURL
from ragtide.settings import WebhookSettings

__all__ = [
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "Resolver",
    "Target",
    "check_callback_url",
    "check_settings",
    "deliver",
    "resolve_host",
    "sign",
    "signed_headers",
    "verify_signature",
    "webhook_client",
]

SIGNATURE_HEADER = "Ragtide-Signature"
DELIVERY_HEADER = "Ragtide-Delivery"
EVENT_HEADER = "Ragtide-Event"
TASK_FINISHED = "task.finished"
MAX_URL_CHARS = 2048

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""``(host, port) -> addresses``: how a host name becomes IP addresses."""


@dataclass(frozen=True, slots=True)
class Target:
    """A callback URL that passed ``check_callback_url``, with the addresses it checked."""

    url: str  # normalised: numeric hosts canonical, IDNA names in ASCII
    host: str  # the name (or canonical address) for the Host header and SNI
    port: int
    addresses: tuple[str, ...]  # checked, in the resolver's order; deliveries go here

    @property
    def scheme(self) -> str:
        return self.url.split(":", 1)[0]

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    def url_for(self, address: str) -> str:
        """The URL with its host replaced by ``address`` (one of ``addresses``)."""
        rest = urlsplit(self.url)
        path = rest.path or "/"
        query = f"?{rest.query}" if rest.query else ""
        literal = f"[{address}]" if ":" in address else address
        return f"{self.scheme}://{literal}:{self.port}{path}{query}"


# --- the URL ---------------------------------------------------------------------------

_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")
_DENIED_NAMES = frozenset({"localhost", "metadata.google.internal"})
_DENIED_SUFFIXES = (
    ".localhost",
    ".internal",
    ".svc",
    ".cluster.local",
    ".local",
    ".localdomain",
    ".home.arpa",
)


async def check_callback_url(
    url: str, settings: WebhookSettings, *, resolver: Resolver | None = None
) -> Target:
    """``url`` as a ``Target`` whose every address may be called, or ``InvalidCallbackURL``.

    ``resolver`` defaults to ``resolve_host`` (``loop.getaddrinfo``); the lookup is bounded
    by ``settings.timeout_s``.
    """
    policy = _policy(tuple(settings.allow_hosts), tuple(settings.deny_cidrs))
    parts = _parse(url, settings.allow_http)
    host = parts.host
    literal = _ip_literal(host)
    if literal is not None:
        _check_address(literal, policy, parts.given, resolved=False)
        addresses: tuple[str, ...] = (host,)
    else:
        name_allowed = policy.allows_name(host)
        if not name_allowed:
            _check_name(host)
        addresses = await _resolve(host, parts.port, resolver or resolve_host, settings.timeout_s)
        if not name_allowed:
            for address in addresses:
                _check_address(ipaddress.ip_address(address), policy, parts.given, resolved=True)
    shown = f"[{host}]" if ":" in host else host
    netloc = f"{shown}:{parts.port}" if parts.explicit_port else shown
    query = f"?{parts.query}" if parts.query else ""
    normalised = f"{parts.scheme}://{netloc}{parts.path or '/'}{query}"
    return Target(url=normalised, host=host, port=parts.port, addresses=addresses)


def check_settings(settings: WebhookSettings) -> None:
    """``ConfigError`` unless every ``deny_cidrs`` entry is a network (call at start-up)."""
    _policy(tuple(settings.allow_hosts), tuple(settings.deny_cidrs))


@dataclass(frozen=True, slots=True)
class _Parts:
    scheme: str
    given: str  # the host as the URL spells it (lower case), for messages
    host: str  # canonical: an IP address, or an ASCII lower-case name without a final dot
    port: int
    explicit_port: bool
    path: str
    query: str


def _parse(url: str, allow_http: bool) -> _Parts:
    """The parts of ``url``, or ``InvalidCallbackURL`` if its form is not acceptable."""
    if len(url) > MAX_URL_CHARS:
        raise InvalidCallbackURL(f"callback_url is longer than {MAX_URL_CHARS} characters")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F or c == "\\" for c in url):
        raise InvalidCallbackURL("callback_url contains whitespace, control characters or '\\'")
    if "#" in url:
        raise InvalidCallbackURL("callback_url must not have a fragment ('#…')")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise InvalidCallbackURL("callback_url is not a valid URL") from None
    scheme = parts.scheme.lower()
    allowed = ("https", "http") if allow_http else ("https",)
    if scheme not in allowed:
        raise InvalidCallbackURL(f"callback_url must use {' or '.join(allowed)}, not {scheme!r}")
    netloc = parts.netloc
    if "@" in netloc:
        raise InvalidCallbackURL("callback_url must not contain credentials ('user:pass@')")
    if netloc.startswith("["):
        host, _, rest = netloc[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise InvalidCallbackURL("callback_url is not a valid URL")
        port_text = rest[1:] if rest else ""
    else:
        host, _, port_text = netloc.partition(":")
    if not host:
        raise InvalidCallbackURL("callback_url has no host")
    if port_text and not (port_text.isascii() and port_text.isdigit()):
        raise InvalidCallbackURL(f"callback_url has an invalid port {port_text!r}")
    port = int(port_text) if port_text else (443 if scheme == "https" else 80)
    if not 1 <= port <= 65535:
        raise InvalidCallbackURL(f"callback_url has an invalid port {port_text!r}")
    canonical = _host(host, bracketed=netloc.startswith("["))
    return _Parts(scheme, host.lower(), canonical, port, bool(port_text), parts.path, parts.query)


def _host(text: str, bracketed: bool) -> str:
    """The host in canonical form: an IP address, or an ASCII (IDNA) lower-case name."""
    if bracketed:
        if "%" in text:
            raise InvalidCallbackURL("callback_url must not name an IPv6 zone ('%…')")
        try:
            return str(ipaddress.IPv6Address(text))
        except ValueError:
            raise InvalidCallbackURL(f"callback_url has an invalid IPv6 host {text!r}") from None
    if "%" in text:
        raise InvalidCallbackURL("callback_url must not percent-encode its host")
    name = text.lower()
    if not name.isascii():
        try:
            name = httpx.URL(scheme="https", host=name).raw_host.decode("ascii")
        except (httpx.InvalidURL, UnicodeError):
            raise InvalidCallbackURL(f"callback_url has an invalid host {text!r}") from None
    name = name.removesuffix(".")
    labels = name.split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):  # an IPv4 address, in whatever spelling
        address = _inet_aton(labels)
        if address is None:
            raise InvalidCallbackURL(f"callback_url has an ambiguous numeric host {text!r}")
        return str(address)
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise InvalidCallbackURL(f"callback_url has an invalid host name {text!r}")
    return name


def _inet_aton(parts: list[str]) -> ipaddress.IPv4Address | None:
    """An IPv4 address read like ``inet_aton`` and the WHATWG URL parser; None if invalid.

    One to four parts, each decimal, octal (leading ``0``) or hex (``0x``); the last fills
    the remaining bytes: ``127.1`` is ``127.0.0.1``, ``2130706433`` too.
    """
    if not 1 <= len(parts) <= 4:
        return None
    numbers = []
    for part in parts:
        if part.startswith("0x"):
            digits, base = part[2:], 16
        elif len(part) > 1 and part.startswith("0"):
            digits, base = part[1:], 8
        else:
            digits, base = part, 10
        try:
            numbers.append(int(digits, base) if digits.isalnum() and digits.isascii() else -1)
        except ValueError:
            return None
    *head, last = numbers
    if any(not 0 <= n <= 255 for n in head) or not 0 <= last < 256 ** (4 - len(head)):
        return None
    value = last
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _check_name(host: str) -> None:
    if host in _DENIED_NAMES or host.endswith(_DENIED_SUFFIXES):
        raise InvalidCallbackURL(f"callback_url host {host!r} is an internal name")
    if "." not in host:
        raise InvalidCallbackURL(
            f"callback_url host {host!r} is a single-label name; use a fully qualified name"
        )


# --- addresses -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Policy:
    allow_names: frozenset[str]
    allow_suffixes: tuple[str, ...]
    allow_networks: tuple[IPNetwork, ...]
    deny_networks: tuple[IPNetwork, ...]

    def allows_name(self, host: str) -> bool:
        return host in self.allow_names or host.endswith(self.allow_suffixes)

    def allows_address(self, address: IPAddress) -> bool:
        return any(address in network for network in self.allow_networks)


@functools.lru_cache(maxsize=32)
def _policy(allow_hosts: tuple[str, ...], deny_cidrs: tuple[str, ...]) -> _Policy:
    names, suffixes, networks = set(), [], []
    for entry in allow_hosts:
        entry = entry.strip().lower().removesuffix(".")
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            continue
        except ValueError:
            pass
        if entry.startswith("*."):
            suffixes.append(entry[1:])
        elif entry:
            names.add(entry)
    try:
        denied = tuple(ipaddress.ip_network(c.strip(), strict=False) for c in deny_cidrs)
    except ValueError as exc:
        raise ConfigError(f"webhooks.deny_cidrs: {exc}") from exc
    return _Policy(frozenset(names), tuple(suffixes), tuple(networks), denied)


def _v4(*cidrs: str) -> tuple[ipaddress.IPv4Network, ...]:
    return tuple(ipaddress.IPv4Network(c) for c in cidrs)


def _v6(*cidrs: str) -> tuple[ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.IPv6Network(c) for c in cidrs)


_DENIED_V4: tuple[tuple[str, tuple[ipaddress.IPv4Network, ...]], ...] = (
    ("the broadcast address", _v4("255.255.255.255/32")),
    ("an unspecified ('this network') address", _v4("0.0.0.0/8")),
    ("a loopback address", _v4("127.0.0.0/8")),
    ("a link-local address (cloud metadata lives here)", _v4("169.254.0.0/16")),
    ("a private address", _v4("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")),
    ("a carrier-grade NAT address", _v4("100.64.0.0/10")),
    ("a multicast address", _v4("224.0.0.0/4")),
    (
        "a reserved address",
        _v4(
            "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "198.18.0.0/15",
            "198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4",
        ),
    ),
)  # fmt: skip
_DENIED_V6: tuple[tuple[str, tuple[ipaddress.IPv6Network, ...]], ...] = (
    ("an unspecified address", _v6("::/128")),
    ("a loopback address", _v6("::1/128")),
    ("a link-local address", _v6("fe80::/10")),
    ("a private address", _v6("fc00::/7", "fec0::/10")),
    ("a multicast address", _v6("ff00::/8")),
    (
        "a reserved address",
        _v6("::ffff:0:0:0/96", "64:ff9b:1::/48", "100::/64", "2001:db8::/32", "2001:10::/28"),
    ),
)
_COMPAT = ipaddress.IPv6Network("::/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _refusal(address: IPAddress, policy: _Policy, *, allow: bool = True) -> str | None:
    """Why ``address`` may not be called, or None (``allow``: honour ``allow_hosts``)."""
    if allow and policy.allows_address(address):
        return None
    for network in policy.deny_networks:
        if address in network:
            return f"in a denied range ({network})"
    if isinstance(address, ipaddress.IPv4Address):
        for reason, networks in _DENIED_V4:
            if any(address in n for n in networks):
                return reason
    else:
        if address.scope_id:
            return "an address with a zone"
        for reason, networks6 in _DENIED_V6:
            if any(address in n for n in networks6):
                return reason
        for form, embedded in _embedded_v4(address):
            inner = _refusal(embedded, policy, allow=False)  # allow_hosts names no such form
            if inner is not None:
                return f"{form} embedding {embedded}, {inner}"
    if not address.is_global:
        return "not a public address"
    return None


def _embedded_v4(address: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """IPv4 addresses that traffic to ``address`` may end up at."""
    found = []
    if address.ipv4_mapped is not None:
        found.append(("an IPv4-mapped address", address.ipv4_mapped))
    if address in _COMPAT:
        found.append(("an IPv4-compatible address", ipaddress.IPv4Address(int(address))))
    if address in _NAT64:
        found.append(("a NAT64 address", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)))
    if address.sixtofour is not None:
        found.append(("a 6to4 address", address.sixtofour))
    if address.teredo is not None:
        server, client = address.teredo
        found += [("a Teredo address", server), ("a Teredo address", client)]
    return found


def _check_address(address: IPAddress, policy: _Policy, host: str, *, resolved: bool) -> None:
    """Refuse ``address`` (``host`` as the URL spells it) unless it may be called."""
    reason = _refusal(address, policy)
    if reason is None:
        return
    if resolved:
        raise InvalidCallbackURL(f"callback_url host {host!r} resolves to {address}, {reason}")
    if host != str(address):
        raise InvalidCallbackURL(f"callback_url host {host!r} means {address}, {reason}")
    raise InvalidCallbackURL(f"callback_url host {host!r} is {reason}")


# --- resolution ------------------------------------------------------------------------


async def resolve_host(host: str, port: int) -> list[str]:
    """The addresses of ``host`` from ``loop.getaddrinfo`` (a thread, never the loop).

    A dotted name is looked up as an absolute name (a trailing dot), so the local search
    domains cannot turn ``kubernetes.default`` into a cluster service.
    """
    query = f"{host}." if "." in host and _ip_literal(host) is None else host
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(query, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


async def _resolve(host: str, port: int, resolver: Resolver, timeout_s: float) -> tuple[str, ...]:
    try:
        async with asyncio.timeout(timeout_s):
            found = await resolver(host, port)
    except TimeoutError:
        raise InvalidCallbackURL(
            f"callback_url host {host!r} did not resolve within {timeout_s:g}s"
        ) from None
    except OSError:
        raise InvalidCallbackURL(f"callback_url host {host!r} does not resolve") from None
    addresses: dict[str, None] = {}
    for text in found:
        try:
            addresses[str(ipaddress.ip_address(text))] = None
        except ValueError:
            raise InvalidCallbackURL(
                f"callback_url host {host!r} resolved to something not an address"
            ) from None
    if not addresses:
        raise InvalidCallbackURL(f"callback_url host {host!r} has no address")
    return tuple(addresses)


# --- signing ---------------------------------------------------------------------------


def sign(body: bytes, secret: bytes, timestamp: int) -> str:
    """The ``Ragtide-Signature`` value: ``t=<timestamp>,v1=<hex HMAC-SHA256>``."""
    return f"t={timestamp},v1={_mac(body, secret, timestamp)}"


def _mac(body: bytes, secret: bytes, timestamp: int) -> str:
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def verify_signature(
    body: bytes,
    header: str,
    secret: bytes,
    *,
    tolerance_s: float = 300,
    now: float | None = None,
) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` within ``tolerance_s`` of ``now``."""
    timestamp: int | None = None
    signatures: list[bytes] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            if timestamp is not None or not (value.isascii() and value.isdigit()):
                return False
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value.encode())
    if timestamp is None or not signatures:
        return False
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = _mac(body, secret, timestamp).encode()
    matches = [hmac.compare_digest(expected, candidate) for candidate in signatures]
    return any(matches)


def signed_headers(
    body: bytes,
    secret: bytes | None,
    *,
    event: str = TASK_FINISHED,
    delivery_id: str | None = None,
    timestamp: int | None = None,
) -> dict[str, str]:
    """The headers of one delivery of ``body``; signed when there is a ``secret``."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Ragtide-Webhook/1",
        EVENT_HEADER: event,
        DELIVERY_HEADER: delivery_id or str(uuid.uuid4()),
    }
    if secret is not None:
        when = int(time.time()) if timestamp is None else timestamp
        headers[SIGNATURE_HEADER] = sign(body, secret, when)
    return headers


# --- delivery --------------------------------------------------------------------------


def webhook_client(timeout_s: float, *, verify: ssl.SSLContext | bool = True) -> httpx.AsyncClient:
    """A client for ``deliver``: no redirects, no proxies or netrc, no kept-alive connections."""
    return httpx.AsyncClient(
        timeout=timeout_s,
        follow_redirects=False,
        trust_env=False,
        verify=verify,
        limits=httpx.Limits(max_keepalive_connections=0),
    )


async def deliver(
    client: httpx.AsyncClient, target: Target, body: bytes, headers: dict[str, str]
) -> int:
    """POST ``body`` to the first of ``target.addresses`` that connects; its status code.

    The request goes to the checked address itself; the ``Host`` header, SNI and the
    certificate check use ``target.host``. The response body is not read. Raises
    ``httpx.HTTPError`` when no address could be reached or the exchange failed.
    """
    extensions = {}
    if target.scheme == "https" and _ip_literal(target.host) is None:
        extensions["sni_hostname"] = target.host
    failure: httpx.HTTPError | None = None
    for address in target.addresses:
        request = client.build_request(
            "POST",
            target.url_for(address),
            content=body,
            headers={**headers, "Host": target.host_header},
            extensions=extensions,
        )
        try:
            response = await client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # nothing sent: next address
            failure = exc
            continue
        await response.aclose()
        return response.status_code
    raise failure or httpx.ConnectError(f"{target.host} has no address to connect to")
