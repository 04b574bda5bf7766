"""`switchboard nats-config`: the nats-server configuration of a deployment (a user per service
with its permissions, the operator, no anonymous access, JetStream encrypted with the key in
$NATS_JETSTREAM_KEY), for a Kubernetes Secret; with --authorization-only, the users and their
permissions alone, for the configuration of deploy/k8s to include. The passwords are kept in a JSON file (made or
completed, mode 0600) and, with --env-file, as `user=password` lines for
`kubectl create secret generic nats-users --from-env-file=...`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from switchboard.core import nats_auth
from switchboard.core.router_groups import RouterGroups


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "nats-config", help="print the nats-server configuration: users, permissions, encryption"
    )
    p.add_argument(
        "--credentials",
        required=True,
        type=Path,
        help="the users' passwords (JSON; made if missing)",
    )
    p.add_argument("--env-file", type=Path, help="also write the passwords as user=password lines")
    p.add_argument("--tenants", default="", help="comma-separated tenants (default: any)")
    p.add_argument(
        "--router-groups",
        default=os.environ.get("ROUTER_GROUPS", ""),
        help="the tenant-to-group map, g1=demo,acme;g2=korea (default: $ROUTER_GROUPS; "
        "unset: the one group 'default'): each group's consumer and journal are allowed",
    )
    p.add_argument("--tls-cert", default="", help="the server's certificate (TLS required)")
    p.add_argument("--tls-key", default="", help="its private key")
    p.add_argument("--tls-ca", default="", help="a CA to verify client certificates with")
    p.add_argument(
        "--authorization-only",
        action="store_true",
        help="print only the users and their permissions (deploy/k8s includes them as auth.conf)",
    )


def run(args: argparse.Namespace) -> int:
    passwords = nats_auth.credentials(args.credentials)
    if args.env_file:
        lines = "".join(f"{user}={password}\n" for user, password in passwords.items())
        nats_auth.write_secret(args.env_file, lines)
    tls: dict[str, Any] = {
        name: value
        for name, value in (
            ("cert_file", args.tls_cert),
            ("key_file", args.tls_key),
            ("ca_file", args.tls_ca),
        )
        if value
    }
    if tls.get("ca_file"):
        tls["verify"] = True  # mutual TLS: a client shows a certificate the CA signed
    tenants = [t.strip() for t in args.tenants.split(",") if t.strip()] or None
    groups = RouterGroups.parse(args.router_groups).groups
    if args.authorization_only:
        print(nats_auth.authorization_config(passwords, tenants, groups), end="")
        return 0
    config = nats_auth.server_config(
        passwords, tenants=tenants, tls=tls or None, router_group_names=groups
    )
    print(config, end="")
    return 0
