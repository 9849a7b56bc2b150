"""``certstore init``: make a database ready for certstore, idempotently.

Creates the database, installs or updates ``_design/certstore`` (only when its content changed),
sets ``_security`` so that only certstore's roles can read or write, and writes a default
``settings`` document when there is none. Running it again changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from store import ids
from store.couch import CouchClient, Database, JSONDict
from store.design import load_design_doc, needs_update
from store.documents import Settings

#: Roles, not names: a server's user gets ``certstore-server`` plus ``server:<name>``.
ROLE_ADMIN = "certstore-admin"
ROLE_CERTMGR = "certstore-certmgr"
ROLE_SERVER = "certstore-server"


def security_object(existing: JSONDict | None = None) -> JSONDict:
    """The ``_security`` certstore needs, keeping any names and roles an admin added by hand.

    Members (who may read at all) are certstore's three roles; admins of the database are the
    ``certstore-admin`` role. Anonymous users are then refused everything.
    """
    current: dict[str, Any] = dict(existing or {})
    result: JSONDict = {}
    for section, roles in (("admins", [ROLE_ADMIN]), ("members", [ROLE_ADMIN, ROLE_CERTMGR, ROLE_SERVER])):
        have = current.get(section) if isinstance(current.get(section), dict) else {}
        names = [n for n in (have or {}).get("names", []) if isinstance(n, str)]
        kept = [r for r in (have or {}).get("roles", []) if isinstance(r, str) and r not in roles]
        result[section] = {"names": names, "roles": roles + kept}
    return result


@dataclass
class InitReport:
    """What ``init`` did, one entry per step."""

    url: str
    created_db: bool = False
    design: str = "unchanged"
    security: str = "unchanged"
    settings: str = "unchanged"
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Human-readable lines for the CLI."""
        return [
            f"database {self.url}: {'created' if self.created_db else 'exists'}",
            f"design document {ids.DESIGN}: {self.design}",
            f"_security: {self.security}",
            f"settings: {self.settings}",
            *self.notes,
        ]


def install_design(db: Database) -> str:
    """Install or update ``_design/certstore``; returns "installed", "updated" or "unchanged"."""
    wanted = load_design_doc()
    stored = db.get_or_none(ids.DESIGN)
    if not needs_update(stored, wanted):
        return "unchanged"
    doc = dict(wanted)
    if stored is not None:
        doc["_rev"] = stored["_rev"]
    db.put(doc)
    return "installed" if stored is None else "updated"


def init_database(client: CouchClient, name: str = "certstore") -> InitReport:
    """Create and configure database ``name`` on ``client``'s server (admin credentials needed)."""
    db = client.db(name)
    report = InitReport(url=db.url)
    report.created_db = db.create(exist_ok=True)
    report.design = install_design(db)
    current = db.get_security()
    wanted = security_object(current)
    if current != wanted:
        db.put_security(wanted)
        report.security = "set"
    if db.get_or_none(ids.SETTINGS) is None:
        db.put(Settings().validated().to_doc())
        report.settings = "written (defaults)"
    return report
