"""The HylaFAX receive hook (`switchboard-fax-hook`) as HylaFAX runs it: its exit codes when it
cannot hand a fax over, its fallback to the spool, and its connection as the fax service's NATS
user."""

from __future__ import annotations

import sys
from pathlib import Path

from switchboard.core.bus import Bus
from switchboard.fax.samples import fax_page, tiff
from switchboard.testing.processes import run_command
from switchboard.testing.secured_nats import SecuredNats
from switchboard.testing.streams import published
from switchboard.v1 import fax_pb2


def hook_binary() -> str:
    return str(Path(sys.executable).with_name("switchboard-fax-hook"))


async def run_hook(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    return await run_command([hook_binary(), *args], env, cwd)


async def test_hook_exits_non_zero_when_it_cannot_hand_over(tmp_path: Path, nats_url: str) -> None:
    (tmp_path / "recvq").mkdir()
    (tmp_path / "recvq" / "fax1.tif").write_bytes(tiff([fax_page(["x"])]))
    dead = {"NATS_URL": "nats://127.0.0.1:9", "FAX_HOOK_TIMEOUT_SECONDS": "3", "PATH": "/usr/bin"}
    code, output = await run_hook(["recvq/fax1.tif", "ttyS0", "1"], dead, tmp_path)
    assert code == 75, output
    assert "could not hand over" in output
    code, output = await run_hook(["recvq/missing.tif", "ttyS0", "2"], dead, tmp_path)
    assert code == 66 and "cannot read" in output
    # with a spool to fall back on, the file is dropped there atomically (and kept)
    fallback = {**dead, "FAX_SPOOL_DIR": str(tmp_path / "spool")}
    code, output = await run_hook(["recvq/fax1.tif", "ttyS0", "3"], fallback, tmp_path)
    assert code == 0, output
    dropped = sorted(p.name for p in (tmp_path / "spool").iterdir())
    assert dropped == ["ttyS0-3-fax1.tif", "ttyS0-3-fax1.tif.json"]


async def test_hook_hands_over_as_the_fax_services_nats_user(
    tmp_path: Path, secured_nats: SecuredNats
) -> None:
    (tmp_path / "recvq").mkdir()
    (tmp_path / "recvq" / "fax1.tif").write_bytes(tiff([fax_page(["x"])]))
    base = {"FAX_TENANT": "acme", "FAX_HOOK_TIMEOUT_SECONDS": "5", "PATH": "/usr/bin"}
    anonymous = {**base, "NATS_URL": secured_nats.url}
    code, output = await run_hook(["recvq/fax1.tif", "ttyS0", "1"], anonymous, tmp_path)
    assert code == 75, output
    as_fax = {**base, **secured_nats.env("fax")}
    code, output = await run_hook(["recvq/fax1.tif", "ttyS0", "2"], as_fax, tmp_path)
    assert code == 0, output
    admin = await Bus.connect(secured_nats.url, source="test", **secured_nats.options("admin"))
    try:
        [received] = await published(admin, "contact.acme.fax.fax_received", fax_pb2.FaxReceived)
        assert received.meta.tenant == "acme"
    finally:
        await admin.drain()
    assert secured_nats.violations() == []
