"""The CouchDB step of docker/init.sh that the certstore CLI has no command for.

    couch_setup.py system-dbs URL    create _users, _replicator and _global_changes (idempotent)

URL is a node's admin URL. A fresh Apache CouchDB 3 node that is not part of a cluster has no system
databases until someone creates them (or ``[couchdb] single_node = true`` is set). Doing it here
keeps the official image unchanged: an ini file mounted into it would have to be writable, because
its entrypoint changes the owner of every file under /opt/couchdb.
"""

from __future__ import annotations

import sys

from store.couch import CouchClient
from store.errors import CertstoreError

SYSTEM_DATABASES = ("_users", "_replicator", "_global_changes")


def system_databases(client: CouchClient) -> list[str]:
    """Create the system databases that are missing; return the ones created."""
    return [name for name in SYSTEM_DATABASES if client.db(name).create(exist_ok=True)]


def main(argv: list[str]) -> int:
    """Run the step; errors are one line on stderr, as the certstore CLI prints them."""
    try:
        if len(argv) == 2 and argv[0] == "system-dbs":
            with CouchClient(argv[1]) as client:
                created = system_databases(client)
            print(f"system databases: {'created ' + ', '.join(created) if created else 'exist'}")
            return 0
    except CertstoreError as exc:
        print(f"couch_setup: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
