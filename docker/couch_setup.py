"""The CouchDB steps of docker/init.sh that the certstore CLI has no command for.

    couch_setup.py system-dbs URL          create _users, _replicator and _global_changes (idempotent)
    couch_setup.py certmgr-user URL NAME   create the certmgr's user; print its new password once

URL is a node's admin URL. A fresh Apache CouchDB 3 node that is not part of a cluster has no system
databases until someone creates them; doing it here keeps the official image unchanged (an ini file
mounted into it would have to be writable, because its entrypoint changes the owner of every file
under /opt/couchdb). The certmgr's user gets the roles of a server (to enroll itself) plus
``certstore-certmgr`` (state, challenge and lease documents), which `certstore server add-user`
does not give.
"""

from __future__ import annotations

import secrets
import sys

from store.couch import CouchClient
from store.enrollment import server_role, server_user
from store.errors import CertstoreError
from store.provision import ROLE_CERTMGR, ROLE_SERVER

SYSTEM_DATABASES = ("_users", "_replicator", "_global_changes")


def system_databases(client: CouchClient) -> list[str]:
    """Create the system databases that are missing; return the ones created."""
    return [name for name in SYSTEM_DATABASES if client.db(name).create(exist_ok=True)]


def certmgr_user(client: CouchClient, name: str) -> str:
    """Create (or reset) the CouchDB user of certmgr host ``name``; return its new password."""
    password = secrets.token_urlsafe(24)
    client.put_user(server_user(name), password, [ROLE_SERVER, server_role(name), ROLE_CERTMGR])
    return password


def main(argv: list[str]) -> int:
    """Run one step; errors are one line on stderr, as the certstore CLI prints them."""
    try:
        if len(argv) == 2 and argv[0] == "system-dbs":
            with CouchClient(argv[1]) as client:
                created = system_databases(client)
            print(f"system databases: {'created ' + ', '.join(created) if created else 'exist'}")
            return 0
        if len(argv) == 3 and argv[0] == "certmgr-user":
            with CouchClient(argv[1]) as client:
                print(certmgr_user(client, argv[2]))
            return 0
    except CertstoreError as exc:
        print(f"couch_setup: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
