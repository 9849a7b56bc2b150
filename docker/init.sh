#!/bin/bash
# The one-shot init service of docker-compose.yml: makes every CouchDB node ready for certstore.
# Every step is idempotent, so it runs on each `docker compose up` and changes nothing the second time.
#
#   1. on the hub and on each server's node: the system databases (docker/couch_setup.py), then
#      `certstore init` (the certstore database, design document, _security, settings)
#   2. a CouchDB user per server on its own node (`certstore server add-user`), and one for the
#      certmgr on the hub (`--certmgr`); each password goes to that container's secrets volume
#      (/secrets/<name>)
#   3. continuous replication hub <-> each node (`certstore replicate add`, run by the node)
#
# Environment: COUCHDB_USER, COUCHDB_PASSWORD (the nodes' admin), CERTSTORE_DB, CERTSTORE_SERVERS
# (server names; node <name> is reachable as couch-<name>:5984), CERTSTORE_CERTMGR (the certmgr's name).
set -euo pipefail
shopt -s inherit_errexit  # a failing command inside $(...) stops the script too

: "${COUCHDB_USER:?}" "${COUCHDB_PASSWORD:?}" "${CERTSTORE_SERVERS:?}" "${CERTSTORE_CERTMGR:?}"
db=${CERTSTORE_DB:-certstore}
owner=10001  # the certstore user of the image, which the agent and certmgr containers run as
setup=$(dirname "$0")/couch_setup.py

admin_url() {
    echo "http://${COUCHDB_USER}:${COUCHDB_PASSWORD}@couch-$1:5984"
}

# Writes a password file readable only by the containers' certstore user.
save_password() {
    local file=/secrets/$1/password
    if [ -z "$2" ]; then
        echo "init: no password for $1" >&2
        exit 1
    fi
    install -d -m 0755 "/secrets/$1"
    (umask 077 && printf '%s\n' "$2" > "$file")
    chown "$owner" "$file"
}

# The password in the output of `certstore server add-user`, which prints it once.
password_in() {
    sed -n 's/^password: *//p' <<< "$1"
}

for node in hub $CERTSTORE_SERVERS; do
    echo "== couch-$node"
    python3 "$setup" system-dbs "$(admin_url "$node")"
    certstore init --url "$(admin_url "$node")" --db "$db"
done

for server in $CERTSTORE_SERVERS; do
    if [ -s "/secrets/$server/password" ]; then
        echo "server $server: user exists, password kept"
    else
        output=$(certstore server add-user "$server" --url "$(admin_url "$server")" --reset-password)
        save_password "$server" "$(password_in "$output")"
        echo "server $server: user created on couch-$server"
    fi
    certstore replicate add --hub "$(admin_url hub)" --replica "$(admin_url "$server")" \
        --hub-db "$db" --replica-db "$db" --name "$server" --server "$server"
done

if [ -s "/secrets/$CERTSTORE_CERTMGR/password" ]; then
    echo "certmgr $CERTSTORE_CERTMGR: user exists, password kept"
else
    # --certmgr adds the certstore-certmgr role. Users are not replicated: the certmgr works on the hub.
    output=$(certstore server add-user "$CERTSTORE_CERTMGR" --url "$(admin_url hub)" --reset-password --certmgr)
    save_password "$CERTSTORE_CERTMGR" "$(password_in "$output")"
    echo "certmgr $CERTSTORE_CERTMGR: user created on couch-hub"
fi
echo "init: done"
