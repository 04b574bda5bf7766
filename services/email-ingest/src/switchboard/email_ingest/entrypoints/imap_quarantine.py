"""Deleting a quarantined mail from the IMAP folder it was kept in (flagged
$SwitchboardQuarantined, not moved): on its sender's erasure, or when its retention has passed."""

from __future__ import annotations

import asyncio
import logging
import ssl

from switchboard.email_ingest.config import ImapConfig
from switchboard.email_ingest.entrypoints.imap import _UIDVALIDITY, ImapFailure, _Client, _text

logger = logging.getLogger(__name__)


async def delete_message(
    imap: ImapConfig, folder: str, uidvalidity: int, uid: int, timeout: float = 30.0
) -> bool:
    """Delete the message `uid` from `folder` (\\Deleted, then UID EXPUNGE of it alone); False
    when the folder's UIDVALIDITY changed (the uid names another message now, or none). A message
    gone already is no fault: deleting again is harmless."""
    client = _Client(
        imap.host,
        imap.port,
        timeout=timeout,
        ssl_context=ssl.create_default_context() if imap.security == "tls" else None,
    )
    try:
        await client.wait_hello_from_server()
        response = await client.login(imap.username, imap.password)
        if response.result != "OK":
            raise ImapFailure(f"login as {imap.username} refused: {_text(response.lines)}")
        response = await client.select(folder)
        if response.result != "OK":
            raise ImapFailure(f"SELECT {folder} refused: {_text(response.lines)}")
        found = next(
            (int(m.group(1)) for line in response.lines if (m := _UIDVALIDITY.search(bytes(line)))),
            0,
        )
        if found != uidvalidity:
            return False
        response = await client.uid("store", str(uid), "+FLAGS.SILENT", "(\\Deleted)")
        if response.result != "OK":
            raise ImapFailure(f"UID STORE {uid} refused: {_text(response.lines)}")
        response = await client.uid("expunge", str(uid))
        if response.result != "OK":
            raise ImapFailure(f"UID EXPUNGE {uid} refused: {_text(response.lines)}")
        return True
    finally:
        try:
            await asyncio.wait_for(client.logout(), 2)
        except Exception:
            pass
        transport = getattr(client.protocol, "transport", None)
        if transport is not None:
            transport.close()
