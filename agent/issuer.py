"""The ACME issuer: one account at one CA; CSR in, certificate chain out (RFC 8555 through certbot's acme).

:class:`AcmeIssuer` wraps :class:`acme.client.ClientV2` and owns the protocol: account registration
(terms of service, External Account Binding), orders with every authorization's challenges handed to a
:class:`ChallengeSolver` in one batch, polling with a deadline, finalization, revocation, ACME Renewal
Information (RFC 9773) and account key rollover. What to order and when is the certmgr's business; how
challenges are published (CouchDB challenge documents, DNS TXT records) is the solver's.

Every failure leaves as an :class:`agent.errors.AcmeError` subclass whose message is one line an admin
can act on. The CA's random ``badNonce`` rejections are retried here so they never fail an order.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from functools import partial
from importlib import metadata
from os import PathLike
from typing import Any, Protocol, TypeVar, cast

import requests
from acme import challenges, messages
from acme import errors as acme_errors
from acme import jws as acme_jws
from acme.client import ClientNetwork, ClientV2
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy.errors import DeserializationError
from josepy.jwa import ES256, ES384, RS256, JWASignature
from josepy.jwk import JWK, JWKEC, JWKRSA

from agent.errors import (
    AccountError,
    AcmeError,
    BadNonceExhausted,
    CAUnreachable,
    CertificateError,
    OrderTimeout,
    RateLimited,
    RejectedIdentifier,
    Unauthorized,
)
from agent.keys import (
    CertInfo,
    certificate_info,
    csr_names,
    csr_public_key_matches,
    load_certificate,
    split_chain,
)
from store.errors import ValidationError
from store.names import RevocationReason

logger = logging.getLogger(__name__)


def _version() -> str:
    # The installed distribution's version: importing agent.__version__ breaks when the editable
    # install maps ``agent`` as a namespace package.
    try:
        return metadata.version("certstore")
    except metadata.PackageNotFoundError:
        return "0+unknown"


USER_AGENT = f"certstore/{_version()}"
HTTP_01 = "http-01"
DNS_01 = "dns-01"
SUPPORTED_CHALLENGES = (HTTP_01, DNS_01)
REVOCATION_REASONS = frozenset(reason.code for reason in RevocationReason)

# How often one ACME request is tried when the CA answers badNonce. The acme library already retries
# once inside each attempt, so 5 attempts survive ten bad nonces in a row.
DEFAULT_ATTEMPTS = 5
# Polling: start fast (pebble validates in milliseconds), back off to a gentle pace for real CAs.
POLL_FIRST = 0.1
POLL_MAX = 3.0
POLL_FACTOR = 1.6
# A CA's Retry-After while polling is honoured, but never beyond this (the order deadline rules).
POLL_RETRY_AFTER_CAP = 30.0
# RFC 9773 section 4.3.3: ask again after six hours when the CA gives no Retry-After.
ARI_DEFAULT_RETRY = timedelta(hours=6)

_ERROR_PREFIX = "urn:ietf:params:acme:error:"
_RATE_LIMITED = {"rateLimited"}
_REJECTED = {"rejectedIdentifier", "unsupportedIdentifier", "caa"}
_UNAUTHORIZED = {"unauthorized", "incorrectResponse", "connection", "dns", "tls"}
_ACCOUNT = {
    "accountDoesNotExist",
    "externalAccountRequired",
    "userActionRequired",
    "invalidContact",
    "unsupportedContact",
    "agreementRequired",
}
_SERVER = {"serverInternal"}

_T = TypeVar("_T")


# --- the solver contract -------------------------------------------------------------------------


@dataclass(frozen=True)
class PendingChallenge:
    """One challenge the CA waits for, as the solver must publish it.

    ``identifier`` is the A-label host name without ``*.``; ``wildcard`` tells whether it was asked
    for as ``*.identifier``. ``type`` is ``http-01`` or ``dns-01``. ``token`` is the CA's base64url
    token, ``key_authorization`` ``token.thumbprint``. ``validation`` is what must be published: for
    http-01 the body served at :attr:`http_path` (the key authorization itself), for dns-01 the TXT
    value. ``validation_domain`` is the name the CA queries: ``_acme-challenge.<identifier>`` for
    dns-01, the host name itself for http-01.
    """

    identifier: str
    wildcard: bool
    type: str
    token: str
    key_authorization: str
    validation: str
    validation_domain: str

    @property
    def http_path(self) -> str:
        """The URL path the CA fetches for http-01."""
        return f"/.well-known/acme-challenge/{self.token}"

    @property
    def name(self) -> str:
        """The name as it appears in the certificate (``*.`` prefixed for a wildcard)."""
        return f"*.{self.identifier}" if self.wildcard else self.identifier


class ChallengeSolver(Protocol):
    """Publishes challenge answers for an order; implemented by the certmgr's HTTP-01 and DNS-01 publishers.

    Per order, :meth:`choose` is called once per pending authorization, then :meth:`present` once with
    every challenge, then (always, even on failure) :meth:`cleanup` once with the same list. Neither
    ``present`` nor ``cleanup`` is called when every authorization was already valid. Exceptions from
    ``choose`` and ``present`` propagate unchanged; one from ``cleanup`` is logged, never raised, so
    that a certificate already issued is not lost.
    """

    def choose(self, identifier: str, wildcard: bool, offered: Sequence[str]) -> str:
        """The challenge type to use for ``identifier``: one of ``offered`` (``http-01``/``dns-01``)."""
        ...

    def present(self, items: Sequence[PendingChallenge]) -> None:
        """Publish every challenge and return once the CA can see all of them (propagation included)."""
        ...

    def cleanup(self, items: Sequence[PendingChallenge]) -> None:
        """Withdraw what :meth:`present` published (also after a partial or failed ``present``)."""
        ...


# --- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccountInfo:
    """An ACME account: its URL (the ``kid``), status (``valid``, ``deactivated``, ``revoked``), contacts."""

    uri: str
    status: str
    contact: tuple[str, ...] = ()


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate the CA issued.

    ``fullchain_pem`` is the CA's default chain as served (leaf first); ``cert_pem`` the leaf alone;
    ``chain_pems`` the intermediates (leaf excluded, in order); ``order_url`` the ACME order; ``info``
    the leaf's serial, validity, names and fingerprint.
    """

    fullchain_pem: bytes
    cert_pem: bytes
    chain_pems: tuple[bytes, ...]
    order_url: str
    info: CertInfo


@dataclass(frozen=True)
class RenewalWindow:
    """The CA's suggested renewal window (ARI), aware UTC; ask again at ``retry_after``."""

    start: datetime
    end: datetime
    retry_after: datetime
    explanation_url: str | None = None


# --- account keys --------------------------------------------------------------------------------


def generate_account_key() -> bytes:
    """A new ACME account key (ECDSA P-256, used with ES256) as unencrypted PKCS#8 PEM bytes."""
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_account_key(pem: bytes) -> JWK:
    """An account key from PEM: ECDSA P-256/P-384 or RSA of at least 2048 bits, as a josepy JWK."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValidationError(
            f"the ACME account key is not an unencrypted PEM private key ({type(exc).__name__})",
            field="account_key",
        ) from None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in ("secp256r1", "secp384r1"):
        return JWKEC(key=key)
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048:
        return JWKRSA(key=key)
    raise ValidationError(
        "the ACME account key must be ECDSA P-256/P-384 or RSA with at least 2048 bits",
        field="account_key",
    )


def signature_algorithm(key: JWK) -> JWASignature:
    """The JWS algorithm for an account key: ES256/ES384 for ECDSA, RS256 for RSA."""
    if isinstance(key, JWKEC):
        curve = cast(ec.EllipticCurvePrivateKey, key.key).curve.name
        return ES384 if curve == "secp384r1" else ES256
    return RS256


# --- the issuer ----------------------------------------------------------------------------------


class AcmeIssuer:
    """One ACME account at one CA.

    ``ca_bundle`` is a PEM file that verifies the CA's HTTPS certificate (pebble's); None trusts the
    system store. ``account_uri``, when known (the certmgr keeps it on ``account:<name>:state``), saves
    a lookup; otherwise the account is found from the key on first use. Nothing touches the network
    until the first call.

    Safe to share between threads running different orders: ACME requests are serialised on one lock
    (the acme library's nonce pool is not thread-safe) while sleeps and the solver run outside it.
    """

    def __init__(
        self,
        directory_url: str,
        account_key: JWK,
        *,
        ca_bundle: str | PathLike[str] | None = None,
        account_uri: str | None = None,
        user_agent: str = USER_AGENT,
        network_timeout: int = 30,
        attempts: int = DEFAULT_ATTEMPTS,
    ) -> None:
        self.directory_url = directory_url
        self._key = account_key
        # requests' ``verify`` takes a CA bundle path as well as a bool; acme types it as bool only.
        verify = cast(bool, str(ca_bundle)) if ca_bundle is not None else True
        self._net = ClientNetwork(
            account_key,
            alg=signature_algorithm(account_key),
            verify_ssl=verify,
            user_agent=user_agent,
            timeout=network_timeout,
        )
        self._net.session.hooks["response"].append(self._remember_response)
        if account_uri is not None:
            self._net.account = messages.RegistrationResource(uri=account_uri, body=messages.Registration())
        self._attempts = max(1, attempts)
        self._lock = threading.RLock()
        self._client: ClientV2 | None = None
        self._last_response: requests.Response | None = None

    # --- plumbing --------------------------------------------------------------------------------

    def _remember_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        # Problem documents reach us as exceptions without headers; Retry-After and the status are
        # read from the response remembered here (under the request lock).
        self._last_response = response

    def _acme(self) -> ClientV2:
        """The acme client, fetching the directory on first use."""
        with self._lock:
            if self._client is None:
                directory = self._step(
                    "fetching the ACME directory",
                    lambda: ClientV2.get_directory(self.directory_url, self._net),
                )
                self._client = ClientV2(directory, self._net)
            return self._client

    def _step(self, what: str, call: Callable[[], _T]) -> _T:
        """Run one ACME exchange, retrying badNonce, and turn every failure into an AcmeError."""
        for attempt in range(1, self._attempts + 1):
            with self._lock:
                self._last_response = None
                try:
                    return call()
                except messages.Error as problem:
                    if problem.code == "badNonce" and attempt < self._attempts:
                        logger.debug("badNonce while %s; retrying (attempt %d)", what, attempt + 1)
                        continue
                    raise self._problem_error(problem, what) from problem
                except requests.exceptions.SSLError as exc:
                    raise CAUnreachable(
                        f"cannot verify the TLS certificate of the ACME CA at {self.directory_url} "
                        f"while {what} (check the CA bundle): {_network_reason(exc)}",
                        url=self.directory_url,
                    ) from exc
                except requests.RequestException as exc:
                    raise CAUnreachable(
                        f"cannot reach the ACME CA at {self.directory_url} while {what}: "
                        f"{_network_reason(exc)}",
                        url=self.directory_url,
                    ) from exc
                except acme_errors.ClientError as exc:
                    raise self._client_error(exc, what) from exc
                except (acme_errors.Error, DeserializationError, ValueError) as exc:
                    # A reply the acme library cannot read (bad JSON, missing fields).
                    raise AcmeError(
                        f"unreadable answer from the ACME CA at {self.directory_url} while {what}: "
                        f"{_one_line(exc)}",
                        url=self.directory_url,
                    ) from exc
        raise AssertionError("unreachable")  # the loop returns or raises

    def _problem_error(self, problem: messages.Error, what: str) -> AcmeError:
        code = problem.code or ""
        status = self._last_response.status_code if self._last_response is not None else 0
        identifier = problem.identifier.value if problem.identifier is not None else None
        if identifier is None and problem.subproblems:
            first = problem.subproblems[0].identifier
            identifier = first.value if first is not None else None
        cls: type[AcmeError] = AcmeError
        if code in _RATE_LIMITED:
            cls = RateLimited
        elif code in _REJECTED:
            cls = RejectedIdentifier
        elif code in _ACCOUNT:
            cls = AccountError
        elif code in _UNAUTHORIZED:
            cls = Unauthorized
        elif code == "badNonce":
            cls = BadNonceExhausted
        elif code in _SERVER or status >= 500:
            cls = CAUnreachable
        if cls is BadNonceExhausted:
            message = (
                f"the ACME CA at {self.directory_url} rejected {self._attempts * 2} nonces in a row "
                f"while {what}"
            )
        else:
            message = f"the ACME CA refused {what}: {describe_problem(problem)}"
        return cls(
            message,
            problem_type=str(problem.typ) if problem.typ != "about:blank" else None,
            identifier=identifier,
            retry_after=self._retry_after(),
            url=self.directory_url,
        )

    def _client_error(self, exc: acme_errors.ClientError, what: str) -> AcmeError:
        response = self._last_response
        status = response.status_code if response is not None else 0
        if status >= 500 or status == 0:
            return CAUnreachable(
                f"the ACME CA at {self.directory_url} failed while {what}"
                + (f" (HTTP {status})" if status else f": {_one_line(exc)}"),
                retry_after=self._retry_after(),
                url=self.directory_url,
            )
        return AcmeError(
            f"unexpected answer from the ACME CA at {self.directory_url} while {what} "
            f"(HTTP {status}): {_one_line(exc)}",
            url=self.directory_url,
        )

    def _retry_after(self) -> datetime | None:
        response = self._last_response
        if response is None:
            return None
        return parse_retry_after(response.headers.get("Retry-After"))

    def _post_as_get(self, url: str) -> requests.Response:
        return self._net.post(url, None, new_nonce_url=self._acme().directory["newNonce"])

    # --- accounts --------------------------------------------------------------------------------

    @property
    def account_uri(self) -> str | None:
        """The account URL once known (after :meth:`register`, :meth:`account` or any order)."""
        account = self._net.account
        return None if account is None else str(account.uri)

    @property
    def terms_of_service(self) -> str | None:
        """The CA's terms-of-service URL from its directory, if it has one."""
        meta = self._acme().directory.meta
        return cast(str | None, meta.terms_of_service)

    def register(
        self,
        contact_email: str | None,
        agree_tos: bool,
        eab: tuple[str, str] | None = None,
    ) -> AccountInfo:
        """Create the account for this key, or return it as it is (contact unchanged) if it exists.

        ``eab`` is (key id, base64url HMAC key) when the CA requires External Account Binding; an
        existing account is found without it (CAs often accept an EAB key only once). Refuses to
        register without ``agree_tos`` when the CA publishes terms of service.
        """
        client = self._acme()
        tos = self.terms_of_service
        if tos and not agree_tos:
            raise AccountError(
                f"the ACME CA at {self.directory_url} requires agreeing to its terms of service ({tos}): "
                "read them and set the account's ToS agreement",
                url=self.directory_url,
            )
        if eab is None and client.external_account_required():
            with contextlib.suppress(AccountError):
                return self.account()
            raise AccountError(
                f"the ACME CA at {self.directory_url} requires External Account Binding: "
                "set the EAB key id and HMAC key on the account",
                problem_type=_ERROR_PREFIX + "externalAccountRequired",
                url=self.directory_url,
            )
        binding = None
        if eab is not None:
            kid, hmac_key = eab
            try:
                binding = messages.ExternalAccountBinding.from_data(
                    account_public_key=self._key.public_key(),
                    kid=kid,
                    hmac_key=hmac_key,
                    directory=client.directory,
                )
            except (ValueError, TypeError, DeserializationError):
                raise ValidationError(
                    f"the EAB HMAC key for key id {kid!r} is not valid base64url", field="eab_hmac_key"
                ) from None
        registration = messages.NewRegistration.from_data(
            email=contact_email,
            terms_of_service_agreed=True if tos else None,
            external_account_binding=binding,
        )

        def create() -> messages.RegistrationResource | None:
            self._net.account = None
            try:
                return client.new_account(registration)
            except acme_errors.ConflictError:
                return None  # the key already has an account: look it up below

        try:
            regr = self._step("registering an ACME account", create)
        except (Unauthorized, AccountError) as exc:
            # At registration "unauthorized" means the account itself is refused (e.g. a wrong EAB MAC).
            hint = " (check the EAB key id and HMAC key)" if eab is not None else ""
            raise AccountError(
                str(exc) + hint, problem_type=exc.problem_type, url=self.directory_url
            ) from exc
        if regr is None:
            return self.account()
        info = _account_info(regr)
        logger.info("registered ACME account %s at %s", info.uri, self.directory_url)
        return info

    def account(self) -> AccountInfo:
        """Look up the account of this key (``onlyReturnExisting``); AccountError if there is none."""
        client = self._acme()
        query = messages.NewRegistration(only_return_existing=True)

        def lookup() -> messages.RegistrationResource:
            self._net.account = None
            response = client.net.post(
                client.directory["newAccount"], query, new_nonce_url=client.directory["newNonce"]
            )
            regr = messages.RegistrationResource(
                body=messages.Registration.from_json(response.json()),
                uri=response.headers["Location"],
            )
            self._net.account = regr
            return regr

        try:
            info = _account_info(self._step("looking up the ACME account", lookup))
        except AccountError as exc:
            if exc.problem_type != _ERROR_PREFIX + "accountDoesNotExist":
                raise
            raise AccountError(
                f"the ACME CA at {self.directory_url} has no account for this account key: register it first",
                problem_type=exc.problem_type,
                url=self.directory_url,
            ) from exc
        if info.status != "valid":
            raise AccountError(
                f"the ACME account {info.uri} is {info.status}: register a new account key",
                url=self.directory_url,
            )
        return info

    def _require_account(self) -> None:
        if self._net.account is None:
            self.account()

    def rollover_account_key(self, new_key: JWK) -> None:
        """Replace the account's key with ``new_key`` (RFC 8555 section 7.3.5); later calls use it."""
        client = self._acme()
        self._require_account()
        account_uri = self.account_uri
        try:
            url = client.directory["keyChange"]
        except KeyError:
            raise AcmeError(
                f"the ACME CA at {self.directory_url} does not support account key rollover",
                url=self.directory_url,
            ) from None
        payload = json.dumps({"account": account_uri, "oldKey": self._key.public_key().to_partial_json()})
        # The inner JWS proves possession of the new key; the outer one (signed by the old key with
        # the account's kid) is what ClientNetwork.post sends.
        inner = acme_jws.JWS.sign(
            payload.encode(), key=new_key, alg=signature_algorithm(new_key), nonce=None, url=url
        )

        def change() -> None:
            try:
                client.net.post(url, inner, new_nonce_url=client.directory["newNonce"])
            except acme_errors.ConflictError:
                raise AccountError(
                    "the new account key already belongs to another ACME account", url=self.directory_url
                ) from None

        self._step("rolling over the account key", change)
        with self._lock:
            self._key = new_key
            self._net.key = new_key
            self._net.alg = signature_algorithm(new_key)
        logger.info("rolled over the key of ACME account %s", account_uri)

    # --- orders ----------------------------------------------------------------------------------

    def issue(
        self,
        csr_pem: bytes,
        names: Sequence[str],
        solver: ChallengeSolver,
        *,
        profile: str | None = None,
        deadline_s: float = 300.0,
    ) -> IssuedCertificate:
        """Order a certificate for ``csr_pem`` (whose SANs must be exactly ``names``) and return it.

        ``profile`` selects a CA certificate profile (draft-aaron-acme-profiles); asking for one the
        CA does not advertise fails before ordering. ``deadline_s`` bounds the wait for validation and
        issuance after the solver has presented the challenges.
        """
        client = self._acme()
        in_csr = sorted(set(csr_names(csr_pem)))
        if in_csr != sorted(set(names)):
            raise ValidationError(
                f"the CSR's names {in_csr} differ from the order's {sorted(set(names))}",
                field="names",
            )
        if profile is not None:
            self._check_profile(profile)
        self._require_account()
        label = ", ".join(names)
        orderr = self._step(
            f"ordering a certificate for {label}", lambda: client.new_order(csr_pem, profile=profile)
        )
        order_url = str(orderr.uri)
        if orderr.body.status == messages.STATUS_INVALID:
            raise self._order_failed(orderr.body, order_url, label)
        pending = [self._prepare(authzr, solver) for authzr in orderr.authorizations]
        work = [entry for entry in pending if entry is not None]
        items = [item for item, _, _ in work]
        logger.info(
            "order %s for %s: %d challenge(s) to answer, %d authorization(s) already valid",
            order_url,
            label,
            len(work),
            len(pending) - len(work),
        )
        if work:
            try:
                solver.present(items)
                deadline = time.monotonic() + deadline_s
                for item, challb, _authzr in work:
                    response = challb.response(self._key)
                    self._step(
                        f"answering the {item.type} challenge for {item.name}",
                        partial(client.answer_challenge, challb, response),
                    )
                for item, _, authzr in work:
                    self._wait_for_authorization(item, authzr, deadline, order_url)
            finally:
                try:
                    solver.cleanup(items)
                except Exception as exc:  # noqa: BLE001 - a failed cleanup must not lose the certificate
                    logger.warning("cleaning up the challenges of order %s failed: %s", order_url, exc)
        else:
            deadline = time.monotonic() + deadline_s
        fullchain = self._finalize(orderr, deadline, label)
        return self._issued(fullchain, csr_pem, order_url)

    def _check_profile(self, profile: str) -> None:
        profiles = cast(dict[str, str] | None, self._acme().directory.meta.profiles)
        if not profiles:
            raise AcmeError(
                f"the ACME CA at {self.directory_url} does not offer certificate profiles "
                f"(asked for {profile!r}): remove the profile from the request",
                url=self.directory_url,
            )
        if profile not in profiles:
            raise AcmeError(
                f"the ACME CA at {self.directory_url} has no profile {profile!r}; "
                f"it offers {', '.join(sorted(profiles))}",
                url=self.directory_url,
            )

    def _prepare(
        self, authzr: messages.AuthorizationResource, solver: ChallengeSolver
    ) -> tuple[PendingChallenge, messages.ChallengeBody, messages.AuthorizationResource] | None:
        """The challenge to answer for one authorization, or None when the CA already holds it valid."""
        body = authzr.body
        identifier = str(body.identifier.value)
        wildcard = bool(body.wildcard)
        shown = f"*.{identifier}" if wildcard else identifier
        if body.status == messages.STATUS_VALID:
            return None
        if body.status != messages.STATUS_PENDING:
            raise Unauthorized(
                f"the ACME CA holds the authorization for {shown} as {body.status.name}",
                identifier=shown,
                url=str(authzr.uri),
            )
        by_type = {_challenge_type(challb): challb for challb in body.challenges}
        offered = [typ for typ in SUPPORTED_CHALLENGES if typ in by_type]
        if not offered:
            raise RejectedIdentifier(
                f"the ACME CA offers no http-01 or dns-01 challenge for {shown} "
                f"(it offers {', '.join(sorted(by_type)) or 'nothing'})",
                identifier=shown,
                url=str(authzr.uri),
            )
        chosen = solver.choose(identifier, wildcard, offered)
        if chosen not in offered:
            raise AcmeError(
                f"cannot validate {shown} over {chosen}: the CA offers {', '.join(offered)} for it",
                identifier=shown,
                url=str(authzr.uri),
            )
        challb = by_type[chosen]
        chall = cast(challenges.KeyAuthorizationChallenge, challb.chall)
        key_authorization = chall.key_authorization(self._key)
        if isinstance(chall, challenges.DNS01):
            validation = str(chall.validation(self._key))
            validation_domain = chall.validation_domain_name(identifier)
        else:
            validation = key_authorization
            validation_domain = identifier
        item = PendingChallenge(
            identifier=identifier,
            wildcard=wildcard,
            type=chosen,
            token=str(chall.encode("token")),
            key_authorization=key_authorization,
            validation=validation,
            validation_domain=validation_domain,
        )
        return item, challb, authzr

    def _wait_for_authorization(
        self,
        item: PendingChallenge,
        authzr: messages.AuthorizationResource,
        deadline: float,
        order_url: str,
    ) -> None:
        client = self._acme()
        for pause in _poll_pauses(deadline):
            authzr, response = self._step(
                f"checking the authorization for {item.name}", partial(client.poll, authzr)
            )
            status = authzr.body.status
            if status == messages.STATUS_VALID:
                return
            if status not in (messages.STATUS_PENDING, messages.STATUS_PROCESSING):
                raise self._challenge_failed(item, authzr)
            pause(_retry_after_seconds(response))
        raise OrderTimeout(
            f"the ACME CA did not validate {item.name} over {item.type} in time (order {order_url})",
            identifier=item.name,
            url=order_url,
        )

    def _challenge_failed(self, item: PendingChallenge, authzr: messages.AuthorizationResource) -> AcmeError:
        problems = [challb.error for challb in authzr.body.challenges if challb.error is not None]
        if not problems:
            return Unauthorized(
                f"the CA could not validate {item.name} over {item.type}: "
                f"the authorization is {authzr.body.status.name} without a reason",
                identifier=item.name,
                url=str(authzr.uri),
            )
        problem = problems[0]
        cls: type[AcmeError] = RejectedIdentifier if problem.code in _REJECTED else Unauthorized
        return cls(
            f"the CA could not validate {item.name} over {item.type}: {describe_problem(problem)}",
            problem_type=str(problem.typ),
            identifier=item.name,
            url=str(authzr.uri),
        )

    def _order_failed(self, order: messages.Order, order_url: str, label: str) -> AcmeError:
        problem = order.error
        if problem is None:
            return AcmeError(f"the ACME CA abandoned the order for {label} without a reason", url=order_url)
        error = self._problem_error(problem, f"the order for {label}")
        error.url = order_url
        return error

    def _finalize(self, orderr: messages.OrderResource, deadline: float, label: str) -> str:
        """Submit the CSR once the order is ready, wait for issuance, download the default chain."""
        client = self._acme()
        order_url = str(orderr.uri)
        finalized = False
        for pause in _poll_pauses(deadline):
            order, response = self._step(
                f"checking the order for {label}", partial(self._fetch_order, order_url)
            )
            if order.status == messages.STATUS_INVALID:
                raise self._order_failed(order, order_url, label)
            if order.status == messages.STATUS_VALID and order.certificate is not None:
                download = partial(self._post_as_get, str(order.certificate))
                return self._step(f"downloading the certificate for {label}", download).text
            if order.status == messages.STATUS_READY and not finalized:
                finalized = self._step(
                    f"finalizing the order for {label}", partial(self._begin, client, orderr)
                )
                if finalized:
                    continue
            pause(_retry_after_seconds(response))
        raise OrderTimeout(
            f"the ACME CA did not issue the certificate for {label} in time (order {order_url})",
            url=order_url,
        )

    def _fetch_order(self, order_url: str) -> tuple[messages.Order, requests.Response]:
        response = self._post_as_get(order_url)
        return messages.Order.from_json(response.json()), response

    @staticmethod
    def _begin(client: ClientV2, orderr: messages.OrderResource) -> bool:
        """Submit the CSR; False when the CA says the order is not ready yet (poll and try again)."""
        try:
            client.begin_finalization(orderr)
        except messages.Error as problem:
            if problem.code != "orderNotReady":
                raise
            return False
        return True

    def _issued(self, fullchain: str, csr_pem: bytes, order_url: str) -> IssuedCertificate:
        fullchain_pem = fullchain.encode()
        try:
            pems = split_chain(fullchain_pem)
        except CertificateError as exc:
            raise AcmeError(f"the ACME CA sent an unreadable certificate (order {order_url}): {exc}") from exc
        if not csr_public_key_matches(csr_pem, pems[0]):
            raise AcmeError(
                f"the ACME CA issued a certificate for another key than the CSR's (order {order_url})",
                url=order_url,
            )
        info = certificate_info(pems[0])
        logger.info(
            "issued certificate %s for %s (order %s)", info.serial_hex, ", ".join(info.names), order_url
        )
        return IssuedCertificate(
            fullchain_pem=fullchain_pem,
            cert_pem=pems[0],
            chain_pems=tuple(pems[1:]),
            order_url=order_url,
            info=info,
        )

    # --- after issuance --------------------------------------------------------------------------

    def revoke(self, cert_pem: bytes, reason: int) -> None:
        """Revoke a certificate this account obtained; ``reason`` is an RFC 5280 code (0-6, 9, 10).

        A certificate the CA already lists as revoked counts as success, so a retried request is safe.
        """
        if reason not in REVOCATION_REASONS:
            raise ValidationError(
                f"revocation reason {reason} is not an RFC 5280 reason code "
                f"({', '.join(str(code) for code in sorted(REVOCATION_REASONS))})",
                field="reason",
            )
        client = self._acme()
        self._require_account()
        cert = load_certificate(cert_pem)
        serial = f"{cert.serial_number:x}"
        try:
            self._step(f"revoking certificate {serial}", lambda: client.revoke(cert, reason))
        except AcmeError as exc:
            if exc.problem_type != _ERROR_PREFIX + "alreadyRevoked":
                raise
            logger.info("certificate %s was already revoked", serial)
            return
        logger.info("revoked certificate %s (reason %d)", serial, reason)

    def renewal_info(self, cert_pem: bytes) -> RenewalWindow | None:
        """The CA's ARI renewal window for a certificate, or None when the CA offers no ARI.

        None also for an expired certificate (RFC 9773 forbids asking) and for one without an authority
        key identifier: the caller's own policy applies then.
        """
        client = self._acme()
        try:
            base_url = str(client.directory["renewalInfo"])
        except KeyError:
            return None
        cert = load_certificate(cert_pem)
        if cert.not_valid_after_utc <= datetime.now(UTC):
            return None
        cert_id = ari_certificate_id(cert)
        if cert_id is None:
            return None
        url = f"{base_url.rstrip('/')}/{cert_id}"

        def fetch() -> RenewalWindow:
            response = client.net.get(url, content_type="application/json")
            data = response.json()
            window = messages.RenewalInfo.from_json(data).suggested_window
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            explanation = data.get("explanationURL")
            return RenewalWindow(
                start=window.start.astimezone(UTC),
                end=window.end.astimezone(UTC),
                retry_after=retry_after or datetime.now(UTC) + ARI_DEFAULT_RETRY,
                explanation_url=str(explanation) if explanation else None,
            )

        return self._step(f"fetching renewal information for certificate {cert.serial_number:x}", fetch)


# --- helpers -------------------------------------------------------------------------------------


def describe_problem(problem: messages.Error) -> str:
    """An ACME problem document as one line: the CA's detail (or the type's description) + subproblems."""
    text = problem.detail or problem.description or str(problem.typ)
    parts = [text]
    for sub in problem.subproblems or ():
        who = f"{sub.identifier.value}: " if sub.identifier is not None else ""
        parts.append(who + (sub.detail or sub.description or str(sub.typ)))
    return _one_line("; ".join(parts))


def _one_line(value: object) -> str:
    return " ".join(str(value).split())


def _network_reason(exc: requests.RequestException) -> str:
    """The useful end of a requests error: urllib3's reason without its pool and connection preamble."""
    reason: object = exc
    if exc.args and getattr(exc.args[0], "reason", None) is not None:
        reason = exc.args[0].reason  # urllib3's MaxRetryError wraps the real cause
    text = _one_line(reason)
    text = re.sub(r"^\w*Connection(Pool)?\([^)]*\): ", "", text)
    return re.sub(r"^Failed to establish a new connection: ", "", text)


def parse_retry_after(value: str | None) -> datetime | None:
    """A ``Retry-After`` header (seconds or an HTTP date) as an aware UTC time; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return datetime.now(UTC) + timedelta(seconds=int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)


def _retry_after_seconds(response: requests.Response) -> float | None:
    when = parse_retry_after(response.headers.get("Retry-After"))
    if when is None:
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _poll_pauses(deadline: float) -> Iterator[Callable[[float | None], None]]:
    """Yield a ``pause(hint)`` callable per poll round until ``deadline`` (a monotonic time) passes.

    Each pause sleeps a growing interval (or the CA's Retry-After hint, capped) without overshooting
    the deadline.
    """
    interval = POLL_FIRST

    def pause(hint: float | None) -> None:
        nonlocal interval
        wanted = min(hint, POLL_RETRY_AFTER_CAP) if hint is not None else interval
        interval = min(interval * POLL_FACTOR, POLL_MAX)
        time.sleep(max(0.0, min(wanted, deadline - time.monotonic())))

    while time.monotonic() < deadline:
        yield pause


def _challenge_type(challb: messages.ChallengeBody) -> str:
    chall = challb.chall
    if isinstance(chall, challenges.UnrecognizedChallenge):
        return str(chall.jobj.get("type", ""))
    return str(chall.typ)


def _account_info(regr: messages.RegistrationResource) -> AccountInfo:
    body = regr.body
    return AccountInfo(
        uri=str(regr.uri),
        # Registration.status has no decoder in acme: it arrives as a plain string, not a Status.
        status=str(getattr(body.status, "name", body.status or "valid")),
        contact=tuple(body.contact or ()),
    )


def ari_certificate_id(cert: x509.Certificate) -> str | None:
    """The RFC 9773 certificate identifier (``base64url(AKI keyIdentifier).base64url(serial DER)``)."""
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        return None
    if aki.key_identifier is None:
        return None
    serial = cert.serial_number
    serial_bytes = serial.to_bytes((serial.bit_length() + 8) // 8, "big", signed=True)
    return f"{_b64url(aki.key_identifier)}.{_b64url(serial_bytes)}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")
