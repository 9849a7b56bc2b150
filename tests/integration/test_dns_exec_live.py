"""The exec provider against a real BIND9: a script running ``nsupdate`` meets the provider contract."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from dns_contract import ZONE, DnsProviderContract, tsig_add

from agent.dns import DnsProvider, provider_for
from store.localservices import BindServer

pytestmark = pytest.mark.integration

# The TSIG secret reaches nsupdate on its standard input (the `key` command), never on a command line.
NSUPDATE_SCRIPT = """#!/bin/sh
set -eu
action=$1 fqdn=$2 value=$3
case "$action" in
  add) change="update add $fqdn. $CERTSTORE_DNS_TTL TXT \\"$value\\"" ;;
  delete) change="update delete $fqdn. TXT \\"$value\\"" ;;
  *) echo "unknown action $action" >&2; exit 2 ;;
esac
printf 'server %s %s\\nzone %s\\nkey hmac-sha256:%s %s\\n%s\\nsend\\n' \\
  "$DNS_HOST" "$DNS_PORT" "$CERTSTORE_DNS_ZONE" "$TSIG_KEY_NAME" "$TSIG_SECRET" "$change" | nsupdate
"""


@pytest.fixture
def nsupdate_script(tmp_path: Path) -> Path:
    if shutil.which("nsupdate") is None:
        pytest.skip("nsupdate is not installed (Debian package bind9-dnsutils)")
    script = tmp_path / "dns-hook.sh"
    script.write_text(NSUPDATE_SCRIPT)
    script.chmod(0o700)
    return script


class TestExecContract(DnsProviderContract):
    @pytest.fixture(autouse=True)
    def _bind(self, bind_server: Callable[..., BindServer], nsupdate_script: Path) -> None:
        self.bind = bind_server([ZONE])
        self.server = self.bind.address
        self.script = nsupdate_script

    def make_provider(self) -> DnsProvider:
        config = {
            "zones": [ZONE],
            "command": [str(self.script)],
            "timeout": 10,
            "nameservers": [self.server],
            "env": {
                "DNS_HOST": self.bind.host,
                "DNS_PORT": str(self.bind.port),
                "TSIG_KEY_NAME": self.bind.tsig_key_name,
            },
        }
        return provider_for("exec", config, {"TSIG_SECRET": self.bind.tsig_secret})

    def seed_txt(self, fqdn: str, value: str) -> None:
        tsig_add(self.bind, fqdn, value)
