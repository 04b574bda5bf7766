"""`switchboard-fax-hook`: HylaFAX's receive hook (call it from bin/faxrcvd, or as FaxRcvdCmd).

    switchboard-fax-hook qfile devid commid msg cidnumber cidname destination

The arguments are faxrcvd's: the received TIFF (e.g. recvq/fax00042.tif, relative to the spool),
the modem, the communication id, the receive error message ("" when the fax was received
cleanly), the caller id number and name, and the number dialled. FaxDispatch-style variables
fill in the rest: SENDER (the sender's TSI/CSID), PAGES, CALLID1/CALLID2 (when the caller id
arguments are empty), FAX_TENANT, NATS_URL (NATS_USER, NATS_PASSWORD, NATS_TLS_*_FILE: the fax
service's), FAX_BUCKET.

The file is handed over durably: stored in the JetStream object store with a FaxReceived event.
If NATS cannot be reached and FAX_SPOOL_DIR is set, it is dropped atomically into that spool
(which the fax service watches) instead. Exit 0 only when one of them succeeded; otherwise
75 (EX_TEMPFAIL), so the fax server keeps the file and reports the failure.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from switchboard.core import nats_auth
from switchboard.core.bus import Bus
from switchboard.fax.adapters.objects import Objects
from switchboard.fax.entrypoints.spool import write_atomically
from switchboard.fax.intake import accept, fax_id_for
from switchboard.fax.notifier import FaxNotifier
from switchboard.v1 import fax_pb2

logger = logging.getLogger("switchboard-fax-hook")

EX_OK, EX_USAGE, EX_NOINPUT, EX_TEMPFAIL = 0, 64, 66, 75


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="switchboard-fax-hook",
        description="Hand a fax received by HylaFAX to Switchboard (faxrcvd's arguments).",
    )
    parser.add_argument("qfile", help="the received TIFF, e.g. recvq/fax00042.tif")
    for name in ("devid", "commid", "msg", "cidnumber", "cidname", "destination"):
        parser.add_argument(name, nargs="?", default="")
    return parser.parse_args(argv)


def origin_from(args: argparse.Namespace, env: dict[str, str]) -> fax_pb2.FaxOrigin:
    try:
        pages = int(env.get("PAGES", "0") or 0)
    except ValueError:
        pages = 0
    return fax_pb2.FaxOrigin(
        intake=fax_pb2.FAX_INTAKE_HOOK,
        reference=args.qfile,
        device=args.devid or env.get("DEVICE", ""),
        comm_id=args.commid or env.get("COMMID", ""),
        status=args.msg,
        caller_id_number=args.cidnumber or env.get("CALLID1", ""),
        caller_id_name=args.cidname or env.get("CALLID2", ""),
        csid=env.get("SENDER", ""),
        destination=args.destination or env.get("DESTINATION", ""),
        filename=Path(args.qfile).name,
        reported_pages=pages,
    )


async def hand_over(
    data: bytes, origin: fax_pb2.FaxOrigin, env: dict[str, str], timeout: float
) -> str:
    """Store the fax in JetStream; return its fax id."""
    tenant = env.get("FAX_TENANT", "demo")
    bucket = env.get("FAX_BUCKET", "fax-documents")
    fax_id = fax_id_for("hook", origin.device, origin.comm_id, origin.reference, data)

    # The hook never declares what the services have not: unset, existing streams keep theirs.
    replicas = int(env.get("NATS_STREAM_REPLICAS", "0") or 0) or None

    async def run() -> None:
        url = env.get("NATS_URL", "nats://127.0.0.1:4222")
        options = nats_auth.options_from_env(env)  # the fax service's user
        bus = await Bus.connect(url, source="fax-hook", replicas=replicas, **options)
        try:
            objects = Objects(bus.js, replicas or 1)
            await accept(objects, FaxNotifier(bus), bucket, tenant, fax_id, data, origin)
        finally:
            await bus.drain()

    await asyncio.wait_for(run(), timeout)
    return fax_id


def main(argv: list[str] | None = None, env: dict[str, str] | None = None) -> int:
    env = dict(os.environ if env is None else env)
    logging.basicConfig(level=logging.WARNING, format="switchboard-fax-hook: %(message)s")
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:
        return EX_USAGE if exc.code else EX_OK
    path = Path(args.qfile)
    try:
        data = path.read_bytes()
    except OSError as exc:
        print(f"switchboard-fax-hook: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return EX_NOINPUT
    origin = origin_from(args, env)
    timeout = float(env.get("FAX_HOOK_TIMEOUT_SECONDS", "20"))
    try:
        fax_id = asyncio.run(hand_over(data, origin, env, timeout))
    except Exception as exc:
        spool = env.get("FAX_SPOOL_DIR", "")
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if spool:
            try:
                name = f"{origin.device or 'fax'}-{origin.comm_id or 'x'}-{path.name}"
                write_atomically(Path(spool), name, data, origin)
            except OSError as spool_exc:
                print(
                    f"switchboard-fax-hook: NATS failed ({reason}) and the spool "
                    f"{spool} is not writable ({spool_exc.strerror})",
                    file=sys.stderr,
                )
                return EX_TEMPFAIL
            print(f"switchboard-fax-hook: NATS failed ({reason}); queued in spool {spool}/{name}")
            return EX_OK
        print(f"switchboard-fax-hook: could not hand over {path}: {reason}", file=sys.stderr)
        return EX_TEMPFAIL
    print(f"switchboard-fax-hook: {path} accepted as fax {fax_id}")
    return EX_OK


def entry() -> None:
    sys.exit(main())
