"""A nats-server configured as the embedded default is: a user per service with the permissions
of switchboard.core.nats_auth, the operator, no anonymous access, JetStream encrypted."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest

from switchboard.core import nats_auth
from switchboard.core.embedded_nats import NatsServer


@dataclass
class SecuredNats:
    server: NatsServer
    passwords: dict[str, str]

    @classmethod
    def start(
        cls,
        folder: Path,
        tenants: list[str] | None = None,
        tls: dict[str, str] | None = None,
        router_groups: list[str] | None = None,
    ) -> SecuredNats:
        """Write the configuration into `folder` and start the server (stop it when done);
        `router_groups`: the router groups whose consumers and journals the routers may use
        (None: the group `default`)."""
        passwords = nats_auth.credentials(folder / "nats-credentials.json")
        text = nats_auth.server_config(
            passwords, tenants=tenants, tls=tls, router_group_names=router_groups
        )
        config = nats_auth.write_secret(folder / "nats-server.conf", text)
        key = {nats_auth.KEY_ENV: nats_auth.new_jetstream_key()}
        server = NatsServer(folder / "nats", config_file=config, env=key).start(timeout=30.0)
        return cls(server, passwords)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def log(self) -> Path:
        return self.server.store_dir / "nats-server.log"

    def options(self, user: str) -> dict[str, Any]:
        """nats.connect's (and Bus.connect's) options to connect as `user`."""
        return nats_auth.client_options(user, self.passwords[user])

    def env(self, user: str) -> dict[str, str]:
        """The settings a service reads to connect as `user`."""
        return {"NATS_URL": self.url, "NATS_USER": user, "NATS_PASSWORD": self.passwords[user]}

    def violations(self) -> list[str]:
        """The permission violations the server has logged (a refused publish or subscribe)."""
        return [line for line in self.log.read_text().splitlines() if "Violation" in line]


async def assert_refused(url: str, **options: Any) -> None:
    """Connecting to `url` with `options` (none: anonymously) fails: Authorization Violation."""
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        nc = await nats.connect(
            url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2, **options
        )
        await nc.close()
