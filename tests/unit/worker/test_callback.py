"""Task callbacks delivered to real HTTP(S) receivers, all on 127.0.0.1.

The receivers are small asyncio servers in the test. A fake resolver gives the made-up
name ``hooks.example.test`` the address 127.0.0.1, which the settings admit through
``allow_hosts``; the reserved ``.test`` domain never resolves anywhere else, so a receiver
that is reached under that name was reached through the pinned address. No traffic leaves
the loopback interface: refused URLs are refused before any connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from prometheus_client import REGISTRY

from ragtide.settings import Settings, WebhookSettings
from ragtide.webhooks import check_callback_url, verify_signature
from ragtide.worker.callback import CallbackSender
from ragtide.worker.consumer import Consumer
from ragtide.worker.execute import Outcome, Verdict

pytestmark = pytest.mark.anyio

HOST = "hooks.example.test"
SECRET = b"whsec-acme"
PAYLOAD = {"task_id": "9f0c" * 8, "kind": "chat", "status": "done", "result": {"answer": "ok"}}
LOOPBACK = WebhookSettings(allow_http=True, allow_hosts=["127.0.0.1"], timeout_s=5)


@dataclass
class Hit:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP/1.1 server on 127.0.0.1 that records each request and answers ``status``."""

    status: int = 204
    extra: dict[str, str] = field(default_factory=dict)
    answer: bool = True  # False: close the connection without answering
    hang: bool = False  # True: never answer
    tls: ssl.SSLContext | None = None
    hits: list[Hit] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)  # SNI seen in handshakes
    port: int = 0

    def __post_init__(self) -> None:
        self._handlers: set[asyncio.Task[Any]] = set()
        self._release = asyncio.Event()
        if self.tls is not None:
            self.tls.sni_callback = self._sni

    def _sni(self, sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        self.server_names.append(name)

    def url(self, path: str = "/hook", host: str = HOST, scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Receiver]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.tls)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            self._release.set()
            server.close()
            await server.wait_closed()
            await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            line, *lines = head.decode("latin-1").split("\r\n")
            method, target, _ = line.split(" ", 2)
            headers = {}
            for header in filter(None, lines):
                name, _, value = header.partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.hits.append(Hit(method, target, headers, body))
            if self.hang:
                await self._release.wait()
            if self.answer:
                extra = "".join(f"{k}: {v}\r\n" for k, v in self.extra.items())
                writer.write(
                    f"HTTP/1.1 {self.status} X\r\nContent-Length: 0\r\n"
                    f"Connection: close\r\n{extra}\r\n".encode()
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()


class Resolver:
    """Gives each call the next answer (the last one repeats); records the names asked."""

    def __init__(self, *answers: Sequence[str]) -> None:
        self.answers = list(answers) or [["127.0.0.1"]]
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls.append(host)
        return self.answers[min(len(self.calls), len(self.answers)) - 1]


def count(outcome: str) -> float:
    return REGISTRY.get_sample_value("ragtide_webhooks_total", {"outcome": outcome}) or 0.0


@contextlib.asynccontextmanager
async def sender(
    settings: WebhookSettings = LOOPBACK, resolver: Resolver | None = None, **kwargs: Any
) -> AsyncIterator[CallbackSender]:
    callbacks = CallbackSender(settings, resolver=resolver or Resolver(), **kwargs)
    try:
        yield callbacks
    finally:
        await callbacks.aclose()


# --- delivered ---------------------------------------------------------------------------


async def test_a_signed_callback_reaches_the_checked_address_under_its_name() -> None:
    resolver = Resolver()
    before = count("delivered")
    async with Receiver().running() as receiver, sender(resolver=resolver) as callbacks:
        ok = await callbacks.send(receiver.url("/hook?tenant=acme"), PAYLOAD, secret=SECRET)

    assert ok and count("delivered") == before + 1
    assert resolver.calls == [HOST]  # resolved once, by us; the connection went to 127.0.0.1
    (hit,) = receiver.hits
    assert (hit.method, hit.target) == ("POST", "/hook?tenant=acme")
    assert hit.headers["host"] == f"{HOST}:{receiver.port}"
    assert orjson.loads(hit.body) == PAYLOAD
    assert hit.headers["content-type"] == "application/json"
    assert hit.headers["ragtide-event"] == "task.finished"
    assert uuid.UUID(hit.headers["ragtide-delivery"])
    assert verify_signature(hit.body, hit.headers["ragtide-signature"], SECRET)
    assert not verify_signature(hit.body, hit.headers["ragtide-signature"], b"another secret")
    assert "authorization" not in hit.headers


async def test_without_a_secret_the_callback_is_not_signed() -> None:
    async with Receiver().running() as receiver, sender() as callbacks:
        assert await callbacks.send(receiver.url(), PAYLOAD, secret=None)
    (hit,) = receiver.hits
    assert "ragtide-signature" not in hit.headers and hit.headers["ragtide-event"]


async def test_each_delivery_has_its_own_id() -> None:
    async with Receiver().running() as receiver, sender() as callbacks:
        for _ in range(2):
            assert await callbacks.send(receiver.url(), PAYLOAD, secret=SECRET)
    first, second = (h.headers["ragtide-delivery"] for h in receiver.hits)
    assert first != second


async def test_an_address_that_refuses_connections_is_skipped_for_the_next() -> None:
    # nothing listens on 127.0.0.2 at the receiver's port: it holds that port on 127.0.0.1
    async with Receiver().running() as receiver:
        settings = WebhookSettings(allow_http=True, allow_hosts=["127.0.0.0/30"])
        async with sender(settings, Resolver(["127.0.0.2", "127.0.0.1"])) as callbacks:
            assert await callbacks.send(receiver.url(), PAYLOAD, secret=None)
    assert len(receiver.hits) == 1


# --- https: SNI and the certificate are the original name's --------------------------------


@dataclass
class Certificates:
    server: ssl.SSLContext
    client: ssl.SSLContext


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA, and a certificate it signed for ``hooks.example.test`` only."""
    now = datetime.datetime.now(datetime.UTC)

    def build(subject: str, issuer: str, key: Any, signer: Any, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )  # fmt: skip
        else:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False
            ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = build("Ragtide test CA", "Ragtide test CA", ca_key, ca_key, ca=True)
    leaf = build(HOST, "Ragtide test CA", key, ca_key, ca=False)
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    client = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    return Certificates(server, client)


async def test_https_sends_the_original_name_as_sni_and_verifies_it(
    certificates: Certificates,
) -> None:
    settings = WebhookSettings(allow_hosts=["127.0.0.1"])
    async with (
        Receiver(tls=certificates.server).running() as receiver,
        sender(settings, verify=certificates.client) as callbacks,
    ):
        assert await callbacks.send(receiver.url(scheme="https"), PAYLOAD, secret=SECRET)
    assert receiver.server_names == [HOST]
    (hit,) = receiver.hits
    assert hit.headers["host"] == f"{HOST}:{receiver.port}"
    assert verify_signature(hit.body, hit.headers["ragtide-signature"], SECRET)


async def test_https_to_a_name_the_certificate_does_not_cover_fails(
    certificates: Certificates,
) -> None:
    settings = WebhookSettings(allow_hosts=["127.0.0.1"])
    before = count("failed")
    async with (
        Receiver(tls=certificates.server).running() as receiver,
        sender(settings, verify=certificates.client) as callbacks,
    ):
        url = receiver.url(scheme="https", host="other.example.test")
        assert not await callbacks.send(url, PAYLOAD, secret=SECRET)
    assert receiver.server_names == ["other.example.test"] and receiver.hits == []
    assert count("failed") == before + 1


# --- not delivered: never raised, counted ----------------------------------------------------


async def test_a_redirect_is_not_followed() -> None:
    before = count("refused")
    async with Receiver().running() as elsewhere:
        redirect = Receiver(status=302, extra={"Location": elsewhere.url("/landing")})
        async with redirect.running() as receiver, sender() as callbacks:
            assert not await callbacks.send(receiver.url(), PAYLOAD, secret=SECRET)
    assert len(receiver.hits) == 1 and elsewhere.hits == []
    assert count("refused") == before + 1


@pytest.mark.parametrize("status", [400, 404, 500, 503])
async def test_an_error_answer_is_a_failed_delivery(status: int) -> None:
    async with Receiver(status=status).running() as receiver, sender() as callbacks:
        assert not await callbacks.send(receiver.url(), PAYLOAD, secret=None)
    assert len(receiver.hits) == 1


async def test_dns_rebinding_after_acceptance_is_refused_at_delivery() -> None:
    resolver = Resolver(["127.0.0.1"], ["10.0.0.7"])  # a private address on the second call
    before = count("rejected_url")
    async with Receiver().running() as receiver:
        accepted = await check_callback_url(receiver.url(), LOOPBACK, resolver=resolver)
        assert accepted.addresses == ("127.0.0.1",)
        async with sender(resolver=resolver) as callbacks:
            assert not await callbacks.send(receiver.url(), PAYLOAD, secret=SECRET)
    assert resolver.calls == [HOST, HOST] and receiver.hits == []
    assert count("rejected_url") == before + 1


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/hook",
        "http://[::ffff:127.0.0.1]:{port}/hook",
        "http://0x7f000001:{port}/hook",
        "http://localhost:{port}/hook",
        "https://u:p@hooks.example.test:{port}/hook",
    ],
)
async def test_a_refused_url_is_never_contacted(url: str) -> None:
    before = count("rejected_url")
    async with Receiver().running() as receiver, sender(WebhookSettings()) as callbacks:
        assert not await callbacks.send(url.format(port=receiver.port), PAYLOAD, secret=None)
    assert receiver.hits == [] and count("rejected_url") == before + 1


async def test_a_receiver_that_hangs_up_or_hangs_is_a_failure() -> None:
    before = count("failed")
    async with Receiver(answer=False).running() as receiver, sender() as callbacks:
        assert not await callbacks.send(receiver.url(), PAYLOAD, secret=None)
    quick = WebhookSettings(allow_http=True, allow_hosts=["127.0.0.1"], timeout_s=1.0)
    async with Receiver(hang=True).running() as receiver, sender(quick) as callbacks:
        assert not await callbacks.send(receiver.url(), PAYLOAD, secret=None)
    assert len(receiver.hits) == 1 and count("failed") == before + 2


# --- the worker: which secret signs a task's callback --------------------------------------


def worker(secret_of: Callable[[str], Awaitable[bytes | None]]) -> Consumer:
    """A consumer that only sends callbacks (no broker, runtime or result store)."""
    settings = Settings(webhooks=LOOPBACK)
    return Consumer(settings, cast(Any, None), cast(Any, None), callback_secret=secret_of)


async def test_the_worker_signs_with_the_secret_of_the_records_tenant() -> None:
    asked: list[str] = []
    secrets = {"acme": SECRET, "default": b"whsec-default"}

    async def secret_of(tenant: str) -> bytes | None:
        asked.append(tenant)
        return secrets.get(tenant)

    consumer = worker(secret_of)
    async with Receiver().running() as receiver:
        url = f"http://127.0.0.1:{receiver.port}/hook"
        for namespace in ("acme/kb", "kb", "globex/kb"):
            record = {**PAYLOAD, "namespace": namespace, "callback_url": url, "fingerprint": "x"}
            await consumer._callback(Outcome(Verdict.ACK, "chat", "done", record=record))
        await consumer._callback(Outcome(Verdict.ACK, "chat", "done", record={**PAYLOAD}))
        await consumer._callbacks.aclose()
    assert asked == ["acme", "default", "globex"]
    acme, default, globex = receiver.hits
    assert verify_signature(acme.body, acme.headers["ragtide-signature"], SECRET)
    assert verify_signature(default.body, default.headers["ragtide-signature"], secrets["default"])
    assert "ragtide-signature" not in globex.headers  # a tenant without a secret
    assert "fingerprint" not in orjson.loads(acme.body)  # the public record only


async def test_the_worker_sends_nothing_when_the_secret_cannot_be_read() -> None:
    async def broken(tenant: str) -> bytes | None:
        raise RuntimeError("tenant store down")

    before = count("failed")
    consumer = worker(broken)
    async with Receiver().running() as receiver:
        record = {**PAYLOAD, "namespace": "acme/kb", "callback_url": receiver.url(host="127.0.0.1")}
        await consumer._callback(Outcome(Verdict.ACK, "chat", "done", record=record))
    assert receiver.hits == [] and count("failed") == before + 1
