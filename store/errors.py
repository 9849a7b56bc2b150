"""The store layer's exception tree: one root, each error carrying the data a caller needs."""

from __future__ import annotations


class CertstoreError(Exception):
    """Root of every error certstore raises on purpose; the CLI turns these into one-line messages."""


# --- CouchDB transport -------------------------------------------------------------------------


class CouchError(CertstoreError):
    """A CouchDB request failed.

    ``status`` is the HTTP status (0 when the server could not be reached), ``doc_id`` the document
    the request was about (if any), ``reason`` CouchDB's own explanation.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        doc_id: str | None = None,
        reason: str = "",
        url: str = "",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.doc_id = doc_id
        self.reason = reason
        self.url = url


class CouchUnreachable(CouchError):
    """The server could not be reached at all (DNS, refused connection, timeout)."""


class Unauthorized(CouchError):
    """401: the credentials are missing or wrong."""


class Forbidden(CouchError):
    """403: authenticated, but not allowed (includes validate_doc_update rejections)."""


class NotFound(CouchError):
    """404: the database or document does not exist."""


class Conflict(CouchError):
    """409: the document was changed by someone else (stale ``_rev``) or already exists."""


# --- documents ---------------------------------------------------------------------------------


class ValidationError(CertstoreError):
    """A document or a value in it breaks the document model.

    ``field`` names the offending field (dotted path) when there is one, ``doc_id`` the document.
    """

    def __init__(self, message: str, *, field: str | None = None, doc_id: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.doc_id = doc_id


class PlaintextPrivateKey(ValidationError):
    """A document carries a PEM private key in plaintext; it must never enter the database."""


# --- sealing -----------------------------------------------------------------------------------


class SealingError(CertstoreError):
    """Sealing or opening an envelope failed."""


class NotARecipient(SealingError):
    """The envelope was not sealed for this key (``key_id`` is the key that tried)."""

    def __init__(self, message: str, *, key_id: str = "") -> None:
        super().__init__(message)
        self.key_id = key_id


class TamperedEnvelope(SealingError):
    """The envelope failed authentication: some byte of it was changed or it is truncated."""


class UnsupportedEnvelopeVersion(SealingError):
    """The envelope uses a format version this certstore does not know."""

    def __init__(self, message: str, *, version: object = None) -> None:
        super().__init__(message)
        self.version = version


class KeyFileError(CertstoreError):
    """A host key file is missing, unreadable, malformed or has unsafe permissions."""


# --- local services ----------------------------------------------------------------------------


class ServiceError(CertstoreError):
    """A local service (pouchdb-server, pebble, a DNS server) could not be installed or started."""


# --- appended by the sealing work (issue 3) ------------------------------------------------------


class InvalidPublicKey(ValidationError, SealingError):
    """A host's X25519 public key is malformed (bad base64, wrong length, or a low-order point).

    It is both a ValidationError (it arrives in a ``server:`` document, ``field`` names where) and a
    SealingError (the certmgr meets it while sealing), so either handler catches it.
    """


# --- appended by the local-services work (issue 2) ----------------------------------------------


class InstallError(ServiceError):
    """Installing a local service failed; ``command`` is the command that failed, ``output`` its output."""

    def __init__(self, message: str, *, command: list[str], output: str = "") -> None:
        super().__init__(message)
        self.command = command
        self.output = output


class ServiceStartError(ServiceError):
    """A local service did not start or did not become ready; ``log_file`` (a path) holds its output."""

    def __init__(self, message: str, *, service: str, log_file: str | None = None) -> None:
        super().__init__(message)
        self.service = service
        self.log_file = log_file


# --- appended by the document-model work (issue 2) -----------------------------------------------


class DesignDocError(CertstoreError):
    """The design document files under design_docs/ are missing or malformed (``path`` is the culprit)."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


# --- enrollment --------------------------------------------------------------------------------


class EnrollmentConflict(CertstoreError):
    """A server's published identity differs from this host's, or a server user already exists."""

    def __init__(self, message: str, *, name: str, published_key_id: str | None) -> None:
        super().__init__(message)
        self.name = name
        self.published_key_id = published_key_id
