"""The ACME issuer against a real pebble: accounts, EAB, orders over HTTP-01 and DNS-01, chaos, failures."""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from acme import client as acme_client
from cryptography import x509

from agent.errors import (
    AccountError,
    AcmeError,
    BadNonceExhausted,
    CAUnreachable,
    OrderTimeout,
    Unauthorized,
)
from agent.issuer import (
    AcmeIssuer,
    IssuedCertificate,
    PendingChallenge,
    ari_certificate_id,
    generate_account_key,
    load_account_key,
    parse_retry_after,
)
from agent.keys import build_csr, generate_private_key, key_matches_certificate, split_chain, verify_chain
from store.errors import ValidationError
from store.localservices import ChallTestSrv, Pebble, free_port

pytestmark = pytest.mark.integration

# The HMAC key of pebble's own EAB example config.
EAB_KID = "kid-1"
EAB_HMAC = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"
PEBBLE_TOS = "data:text/plain,Do%20what%20thou%20wilt"


class Http01Server:
    """A test-only HTTP-01 responder: serves ``answers[token]`` at /.well-known/acme-challenge/<token>.

    While ``hold`` is an unset Event, every request waits for it (a CA validation that hangs).
    """

    def __init__(self, port: int) -> None:
        self.answers: dict[str, str] = {}
        self.hold: threading.Event | None = None
        answers = self.answers
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if outer.hold is not None:
                    outer.hold.wait(timeout=30)
                prefix = "/.well-known/acme-challenge/"
                body = answers.get(self.path.removeprefix(prefix)) if self.path.startswith(prefix) else None
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Solver:
    """Publishes HTTP-01 answers on :class:`Http01Server` and DNS-01 TXT records on challtestsrv.

    ``wildcards`` go over dns-01, everything else over http-01. ``corrupt`` publishes a wrong key
    authorization; every call is recorded so the tests can check the contract.
    """

    def __init__(
        self, http01: Http01Server | None, dns: ChallTestSrv | None = None, *, corrupt: bool = False
    ):
        self.http01 = http01
        self.dns = dns
        self.corrupt = corrupt
        self.chosen: list[tuple[str, bool, tuple[str, ...]]] = []
        self.presented: list[list[PendingChallenge]] = []
        self.cleaned: list[list[PendingChallenge]] = []

    def choose(self, identifier: str, wildcard: bool, offered: Sequence[str]) -> str:
        self.chosen.append((identifier, wildcard, tuple(offered)))
        return "dns-01" if wildcard else "http-01"

    def present(self, items: Sequence[PendingChallenge]) -> None:
        self.presented.append(list(items))
        for item in items:
            value = "wrong-" + item.validation if self.corrupt else item.validation
            if item.type == "http-01" and self.http01 is not None:
                self.http01.answers[item.token] = value
            elif item.type == "dns-01" and self.dns is not None:
                self.dns.set_txt(item.validation_domain, value)

    def cleanup(self, items: Sequence[PendingChallenge]) -> None:
        self.cleaned.append(list(items))
        for item in items:
            if item.type == "http-01" and self.http01 is not None:
                self.http01.answers.pop(item.token, None)
            elif item.type == "dns-01" and self.dns is not None:
                self.dns.clear_txt(item.validation_domain)


def make_issuer(server: Pebble, key_pem: bytes | None = None) -> AcmeIssuer:
    key = load_account_key(key_pem or generate_account_key())
    return AcmeIssuer(server.directory_url, key, ca_bundle=server.ca_file)


def registered(server: Pebble) -> AcmeIssuer:
    issuer = make_issuer(server)
    issuer.register("admin@example.com", agree_tos=True)
    return issuer


def order(
    issuer: AcmeIssuer, names: list[str], solver: Solver, key_type: str = "ecdsa-p256"
) -> tuple[bytes, IssuedCertificate]:
    key = generate_private_key(key_type)
    return key, issuer.issue(build_csr(key, names), names, solver, deadline_s=30)


def check_issued(server: Pebble, key: bytes, issued: IssuedCertificate, names: list[str]) -> None:
    assert list(issued.info.names) == names
    assert key_matches_certificate(key, issued.cert_pem)
    chain = split_chain(issued.fullchain_pem)
    assert chain[0] == issued.cert_pem and tuple(chain[1:]) == issued.chain_pems
    verify_chain(chain, server.root_pem().encode())
    assert issued.order_url.startswith("https://127.0.0.1:")


@pytest.fixture(scope="module")
def http01(pebble: Pebble) -> Iterator[Http01Server]:
    """The HTTP-01 responder on the session pebble's validation port."""
    server = Http01Server(pebble.http_port)
    yield server
    server.close()


@pytest.fixture
def own_pebble(pebble_factory: Callable[..., Pebble]) -> Iterator[Callable[..., tuple[Pebble, Http01Server]]]:
    """``own_pebble(**PebbleOptions)`` → a pebble for this test with an HTTP-01 responder on its port."""
    responders: list[Http01Server] = []

    def start(**options: Any) -> tuple[Pebble, Http01Server]:
        server = pebble_factory(**options)
        responders.append(Http01Server(server.http_port))
        return server, responders[-1]

    yield start
    for responder in responders:
        responder.close()


# --- orders --------------------------------------------------------------------------------------


def test_multi_san_order_with_punycode_name_under_default_chaos(pebble: Pebble, http01: Http01Server) -> None:
    """The session pebble keeps its default chaos (5 % bad nonces, 50 % authz reuse) on."""
    issuer = registered(pebble)
    names = ["www.example.com", "xn--bcher-kva.example", "api.example.com"]
    for _ in range(4):  # repeated orders: some authorizations get reused, some nonces get rejected
        solver = Solver(http01)
        key, issued = order(issuer, names, solver)
        check_issued(pebble, key, issued, names)
        assert solver.presented == solver.cleaned
        assert len(solver.presented) <= 1
        assert not http01.answers  # cleanup withdrew every answer
    first = Solver(http01)
    order(issuer, ["first.example.com"], first)  # a name never validated before
    (items,) = first.presented
    (item,) = items
    assert item.identifier == "first.example.com" and not item.wildcard and item.type == "http-01"
    assert item.validation == item.key_authorization
    assert item.key_authorization.startswith(item.token + ".")
    assert item.http_path == f"/.well-known/acme-challenge/{item.token}"


def test_rsa_key_and_wildcard_over_dns01(
    pebble: Pebble, http01: Http01Server, challtestsrv: ChallTestSrv
) -> None:
    issuer = registered(pebble)
    solver = Solver(http01, challtestsrv)
    names = ["*.wild.example.com", "shop.example.com"]
    key, issued = order(issuer, names, solver, key_type="rsa-2048")
    check_issued(pebble, key, issued, names)
    (items,) = solver.presented
    by_name = {item.name: item for item in items}
    wildcard = by_name["*.wild.example.com"]
    assert wildcard.type == "dns-01" and wildcard.wildcard and wildcard.identifier == "wild.example.com"
    assert wildcard.validation_domain == "_acme-challenge.wild.example.com"
    assert wildcard.validation != wildcard.key_authorization  # the TXT value is its SHA-256 digest
    assert ("wild.example.com", True, ("dns-01",)) in solver.chosen  # CAs offer only dns-01 for wildcards
    assert by_name["shop.example.com"].type == "http-01"
    assert solver.cleaned == solver.presented


def test_already_valid_authorizations_need_no_challenge(
    own_pebble: Callable[..., tuple[Pebble, Http01Server]],
) -> None:
    server, http01 = own_pebble(authz_reuse_percent=100, nonce_reject_percent=0)
    issuer = registered(server)
    names = ["reuse.example.com", "again.example.com"]
    first = Solver(http01)
    order(issuer, names, first)
    assert len(first.presented[0]) == 2
    second = Solver(http01)
    key, issued = order(issuer, names, second)
    check_issued(server, key, issued, names)
    assert second.presented == [] and second.cleaned == [] and second.chosen == []


def test_orders_in_parallel_threads_share_one_issuer(pebble: Pebble, http01: Http01Server) -> None:
    issuer = registered(pebble)
    failures: list[AcmeError] = []
    issued: list[IssuedCertificate] = []

    def run(index: int) -> None:
        try:
            for round_ in range(2):
                issued.append(order(issuer, [f"t{index}r{round_}.example.com"], Solver(http01))[1])
        except AcmeError as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    assert len(issued) == 6


def test_validation_that_never_finishes_is_an_order_timeout(pebble: Pebble, http01: Http01Server) -> None:
    issuer = registered(pebble)
    solver = Solver(http01)
    http01.hold = threading.Event()
    try:
        with pytest.raises(
            OrderTimeout, match=r"did not validate slow\.example\.com over http-01 in time"
        ) as caught:
            key = generate_private_key("ecdsa-p256")
            issuer.issue(build_csr(key, ["slow.example.com"]), ["slow.example.com"], solver, deadline_s=0.5)
    finally:
        http01.hold.set()
        http01.hold = None
    assert "/my-order/" in caught.value.url
    assert solver.cleaned == solver.presented


def test_bad_nonce_storm_never_fails_an_order(own_pebble: Callable[..., tuple[Pebble, Http01Server]]) -> None:
    """At 30 % rejected nonces the acme library's single retry alone would fail most orders."""
    server, http01 = own_pebble(nonce_reject_percent=30)
    issuer = registered(server)
    for index in range(3):
        names = [f"n{index}.example.com", f"m{index}.example.com"]
        key, issued = order(issuer, names, Solver(http01))
        check_issued(server, key, issued, names)


def test_nothing_but_bad_nonces_is_bad_nonce_exhausted(pebble_factory: Callable[..., Pebble]) -> None:
    server = pebble_factory(nonce_reject_percent=100)
    with pytest.raises(BadNonceExhausted, match="nonces in a row while registering"):
        make_issuer(server).register(None, agree_tos=True)


def test_wrong_key_authorization_is_unauthorized_with_the_cas_detail(
    pebble: Pebble, http01: Http01Server
) -> None:
    issuer = registered(pebble)  # a fresh account: nothing to reuse
    solver = Solver(http01, corrupt=True)
    with pytest.raises(Unauthorized) as caught:
        order(issuer, ["bad.example.com"], solver)
    message = str(caught.value)
    assert message.startswith("the CA could not validate bad.example.com over http-01: ")
    assert "wrong-" in message  # pebble says what it fetched
    assert "\n" not in message
    assert caught.value.identifier == "bad.example.com"
    assert caught.value.problem_type == "urn:ietf:params:acme:error:unauthorized"
    assert solver.cleaned == solver.presented and not http01.answers


def test_unreachable_http01_names_what_the_ca_fetched(pebble_factory: Callable[..., Pebble]) -> None:
    server = pebble_factory(nonce_reject_percent=0)  # nothing listens on its validation port
    solver = Solver(None)
    with pytest.raises(Unauthorized) as caught:
        order(registered(server), ["www.example.com"], solver)
    message = str(caught.value)
    assert "could not validate www.example.com over http-01" in message
    assert f"http://www.example.com:{server.http_port}/.well-known/acme-challenge/" in message
    assert "refused" in message.lower()
    assert len(solver.cleaned) == 1


class BrokenPresent(Solver):
    def present(self, items: Sequence[PendingChallenge]) -> None:
        super().present(items)
        raise RuntimeError("DNS provider down")


class BrokenCleanup(Solver):
    def cleanup(self, items: Sequence[PendingChallenge]) -> None:
        super().cleanup(items)
        raise RuntimeError("DNS provider down")


def test_solver_failures(pebble: Pebble, http01: Http01Server) -> None:
    issuer = registered(pebble)
    failing = BrokenPresent(http01)
    with pytest.raises(RuntimeError, match="DNS provider down"):
        order(issuer, ["present.example.com"], failing)
    assert failing.cleaned == failing.presented  # cleanup runs after a failed present
    # A failed cleanup is logged, not raised: the certificate is already issued and must not be lost.
    key, issued = order(issuer, ["cleanup.example.com"], BrokenCleanup(http01))
    check_issued(pebble, key, issued, ["cleanup.example.com"])


def test_csr_names_must_match_the_order(pebble: Pebble, http01: Http01Server) -> None:
    key = generate_private_key("ecdsa-p256")
    with pytest.raises(ValidationError, match="differ"):
        registered(pebble).issue(build_csr(key, ["a.example.com"]), ["b.example.com"], Solver(http01))


def test_profile_on_a_ca_without_profiles_is_a_clear_error(pebble: Pebble, http01: Http01Server) -> None:
    key = generate_private_key("ecdsa-p256")
    solver = Solver(http01)
    with pytest.raises(AcmeError, match=r"does not offer certificate profiles .*'shortlived'"):
        registered(pebble).issue(
            build_csr(key, ["p.example.com"]), ["p.example.com"], solver, profile="shortlived"
        )
    assert solver.presented == []


# --- accounts ------------------------------------------------------------------------------------


def test_register_is_idempotent_and_lookup_finds_the_account(pebble: Pebble) -> None:
    key_pem = generate_account_key()
    first = make_issuer(pebble, key_pem).register("admin@example.com", agree_tos=True)
    assert first.status == "valid" and first.contact == ("mailto:admin@example.com",)
    again = make_issuer(pebble, key_pem).register("admin@example.com", agree_tos=True)
    assert again.uri == first.uri
    assert make_issuer(pebble, key_pem).account().uri == first.uri


def test_terms_of_service_must_be_agreed(pebble: Pebble) -> None:
    issuer = make_issuer(pebble)
    assert issuer.terms_of_service == PEBBLE_TOS
    with pytest.raises(AccountError, match="terms of service") as caught:
        issuer.register("admin@example.com", agree_tos=False)
    assert PEBBLE_TOS in str(caught.value)


def test_unregistered_key_is_an_account_error(pebble: Pebble, http01: Http01Server) -> None:
    issuer = make_issuer(pebble)
    with pytest.raises(AccountError, match="no account for this account key: register it first"):
        issuer.account()
    key = generate_private_key("ecdsa-p256")
    with pytest.raises(AccountError):
        issuer.issue(build_csr(key, ["x.example.com"]), ["x.example.com"], Solver(http01))


def test_external_account_binding(own_pebble: Callable[..., tuple[Pebble, Http01Server]]) -> None:
    server, http01 = own_pebble(eab_keys={EAB_KID: EAB_HMAC})
    issuer = make_issuer(server)
    with pytest.raises(AccountError, match="requires External Account Binding"):
        issuer.register("admin@example.com", agree_tos=True)
    wrong = "A" * len(EAB_HMAC)
    with pytest.raises(AccountError) as caught:
        issuer.register("admin@example.com", agree_tos=True, eab=(EAB_KID, wrong))
    assert wrong not in str(caught.value)
    account = issuer.register("admin@example.com", agree_tos=True, eab=(EAB_KID, EAB_HMAC))
    assert account.status == "valid"
    # Registering again needs no EAB: the existing account is found from its key.
    assert issuer.register("admin@example.com", agree_tos=True).uri == account.uri
    key, issued = order(issuer, ["eab.example.com"], Solver(http01))
    check_issued(server, key, issued, ["eab.example.com"])


def test_account_key_rollover(pebble: Pebble, http01: Http01Server) -> None:
    old_pem, new_pem = generate_account_key(), generate_account_key()
    issuer = make_issuer(pebble, old_pem)
    account = issuer.register(None, agree_tos=True)
    issuer.rollover_account_key(load_account_key(new_pem))
    key, issued = order(issuer, ["rolled.example.com"], Solver(http01))
    check_issued(pebble, key, issued, ["rolled.example.com"])
    assert make_issuer(pebble, new_pem).account().uri == account.uri
    with pytest.raises(AccountError):
        make_issuer(pebble, old_pem).account()


# --- after issuance ------------------------------------------------------------------------------


def test_revoke(pebble: Pebble, http01: Http01Server) -> None:
    issuer = registered(pebble)
    _, issued = order(issuer, ["revoke.example.com"], Solver(http01))
    issuer.revoke(issued.cert_pem, 1)
    status = httpx.get(
        f"{pebble.management_url}/cert-status-by-serial/{issued.info.serial_hex}",
        verify=ssl.create_default_context(cafile=str(pebble.ca_file)),
    ).json()
    assert status["Status"] == "Revoked"
    assert status["Reason"] == 1
    issuer.revoke(issued.cert_pem, 1)  # already revoked: a retried request succeeds
    with pytest.raises(ValidationError, match="reason 7"):
        issuer.revoke(issued.cert_pem, 7)


def test_renewal_info_is_none_without_ari(pebble: Pebble, http01: Http01Server) -> None:
    issuer = registered(pebble)
    _, issued = order(issuer, ["ari.example.com"], Solver(http01))
    assert issuer.renewal_info(issued.cert_pem) is None  # pebble 2.4 has no renewalInfo
    # pebble cannot exercise the ARI request itself; at least its certificate id must be the one
    # the acme library (which follows RFC 9773) computes.
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    assert ari_certificate_id(cert) == acme_client._renewal_info_path_component(cert)


def test_parse_retry_after() -> None:
    now = datetime.now(UTC)
    in_two_minutes = parse_retry_after("120")
    assert in_two_minutes is not None
    assert timedelta(seconds=119) <= in_two_minutes - now <= timedelta(seconds=122)
    assert parse_retry_after("Wed, 21 Oct 2026 07:28:00 GMT") == datetime(2026, 10, 21, 7, 28, tzinfo=UTC)
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_unreachable_ca() -> None:
    url = f"https://127.0.0.1:{free_port()}/dir"
    issuer = AcmeIssuer(url, load_account_key(generate_account_key()))
    with pytest.raises(CAUnreachable) as caught:
        issuer.register("admin@example.com", agree_tos=True)
    assert url in str(caught.value)
    assert "refused" in str(caught.value).lower()


def test_untrusted_ca_certificate_is_unreachable_with_a_hint(pebble: Pebble) -> None:
    issuer = AcmeIssuer(pebble.directory_url, load_account_key(generate_account_key()))  # system trust
    with pytest.raises(CAUnreachable, match="check the CA bundle"):
        issuer.account()
