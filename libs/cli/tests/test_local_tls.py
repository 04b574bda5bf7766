"""`switchboard run`'s TLS: a local CA kept in the run directory (its key readable by its owner
only) and, per service, a certificate it issued for the service's gRPC and listeners."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from switchboard.cli import local_tls
from switchboard.cli.endpoints import SERVICES, Endpoints
from switchboard.core.tls import GrpcTls


def test_every_service_gets_a_certificate_of_the_kept_ca(tmp_path: Path) -> None:
    tls = local_tls.LocalTls(tmp_path)
    ca_file = tmp_path / "tls" / "ca.crt"
    assert (tmp_path / "tls" / "ca.key").stat().st_mode & 0o777 == 0o600
    ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
    for spec in SERVICES:
        env = tls.service_env(spec)
        assert env["GRPC_TLS_CA_FILE"] == str(ca_file)
        assert env["GRPC_TLS_CLIENT_AUTH"] == "require"
        assert Path(env["GRPC_TLS_KEY_FILE"]).stat().st_mode & 0o777 == 0o600
        cert = x509.load_pem_x509_certificate(Path(env["GRPC_TLS_CERT_FILE"]).read_bytes())
        cert.verify_directly_issued_by(ca)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert spec.name in names.get_values_for_type(x509.DNSName)
        if spec.tls_env:
            assert [env[name] for name in spec.tls_env] == [
                env["GRPC_TLS_CERT_FILE"],
                env["GRPC_TLS_KEY_FILE"],
            ]
    assert local_tls.LocalTls(tmp_path).ca.cert_file.read_bytes() == ca_file.read_bytes()


def test_the_cli_uses_the_runs_ca_unless_the_environment_names_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ep = Endpoints("nats://127.0.0.1:4222", tls=local_tls.LocalTls(tmp_path).cli())
    tls = ep.grpc_tls()
    assert tls is not None and tls.serves and tls.ca_file == ep.tls["ca_file"]
    monkeypatch.setenv("GRPC_TLS_CA_FILE", "/etc/switchboard/ca.crt")
    assert ep.grpc_tls() == GrpcTls(ca_file="/etc/switchboard/ca.crt")
    assert Endpoints("nats://127.0.0.1:4222").grpc_tls(environ={}) is None


def test_tls_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert local_tls.enabled()
    monkeypatch.setenv(local_tls.RUN_TLS_ENV, "off")
    assert not local_tls.enabled()
