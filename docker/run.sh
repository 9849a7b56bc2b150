#!/bin/bash
# Entrypoint of the certmgr and agent containers: enroll this server (idempotent: an enrolled server
# with this host's key is left as it is), then run the role until the container is stopped.
#
#   run.sh certmgr   needs CERTSTORE_SERVER (its server name) and CERTSTORE_COUCH (its CouchDB, http://host:port)
#   run.sh agent     needs the CERTSTORE_AGENT_* variables that complete /etc/certstore/agent.toml
#
# The server user's password comes from /run/certstore/password (written by the init service) and
# reaches the CLI through CERTSTORE_URL, so it never appears in a process listing.
set -euo pipefail

state_dir=/var/lib/certstore/state
password=$(cat /run/certstore/password)

# http://host:port -> http://user:password@host:port
with_login() {
    echo "${2%%://*}://${1}:${password}@${2#*://}"
}

case "${1:-}" in
    certmgr)
        name=${CERTSTORE_SERVER:?CERTSTORE_SERVER must name the certmgr host}
        CERTSTORE_URL=$(with_login "server-${name}" "${CERTSTORE_COUCH:?CERTSTORE_COUCH must be the hub URL}")
        export CERTSTORE_URL
        certstore server enroll "$name" --certmgr --state-dir "$state_dir"
        exec certstore certmgr run "$name" --state-dir "$state_dir"
        ;;
    agent)
        name=${CERTSTORE_AGENT_SERVER:?CERTSTORE_AGENT_SERVER must name this server}
        CERTSTORE_URL=$(with_login "${CERTSTORE_AGENT_USER:-server-$name}" "${CERTSTORE_AGENT_URL:?}")
        export CERTSTORE_URL
        certstore server enroll "$name" --state-dir "$state_dir"
        unset CERTSTORE_URL  # the agent reads its URL, user and password file from its config
        exec certstore agent run --config /etc/certstore/agent.toml
        ;;
    *)
        echo "usage: run.sh certmgr|agent" >&2
        exit 2
        ;;
esac
