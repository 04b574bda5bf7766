"""A throwaway Dovecot IMAP server for tests and benchmarks: a free port, a config in a temporary
directory, plain authentication from a passwd-file, Maildir storage. Runs as the current user
(as root, Dovecot's own unprivileged users are used, since it refuses to serve mail as root)."""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import aioimaplib

from switchboard.core.embedded_nats import free_port

DOVECOT = os.environ.get("DOVECOT_BINARY", "/usr/sbin/dovecot")


def available() -> bool:
    return Path(DOVECOT).exists()


class Dovecot:
    def __init__(self, users: dict[str, str] | None = None, extra_config: str = "") -> None:
        self.users = users or {"support": "secret"}
        self.extra_config = extra_config
        self.dir = Path(tempfile.mkdtemp(prefix="sb-dovecot-"))
        self.dir.chmod(0o755)  # the mail user must reach its maildir
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        if os.geteuid() == 0:
            self.login_user, self.internal_user = "dovenull", "dovecot"
            self.mail_uid, self.mail_gid = (
                pwd.getpwnam("nobody").pw_uid,
                grp.getgrnam("nogroup").gr_gid,
            )
        else:
            me = pwd.getpwuid(os.geteuid()).pw_name
            self.login_user = self.internal_user = me
            self.mail_uid, self.mail_gid = os.geteuid(), os.getegid()

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def maildir(self, user: str = "support") -> Path:
        return self.dir / "mail" / user

    def _write_config(self) -> Path:
        internal_group = grp.getgrgid(pwd.getpwnam(self.internal_user).pw_gid).gr_name
        (self.dir / "mail").mkdir(exist_ok=True)
        (self.dir / "home").mkdir(exist_ok=True)
        for d in ("mail", "home"):
            os.chown(self.dir / d, self.mail_uid, self.mail_gid)
        passwd = self.dir / "passwd"
        passwd.write_text("".join(f"{u}:{{PLAIN}}{p}\n" for u, p in self.users.items()))
        passwd.chmod(0o644)
        conf = self.dir / "dovecot.conf"
        conf.write_text(
            f"""
base_dir = {self.dir}/run
state_dir = {self.dir}/state
log_path = {self.dir}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {self.internal_user}
default_internal_group = {internal_group}
default_login_user = {self.login_user}
first_valid_uid = 0
mail_location = maildir:{self.dir}/mail/%u
mail_max_userip_connections = 500
imap_idle_notify_interval = 10 secs
# Mail that arrives between a client's last command and its IDLE is noticed within this.
mailbox_idle_check_interval = 1 secs
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
userdb {{
  driver = static
  args = uid={self.mail_uid} gid={self.mail_gid} home={self.dir}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  chroot =
}}
service anvil {{
  chroot =
}}
{self.extra_config}
"""
        )
        return conf

    def start(self) -> Dovecot:
        if not self.port:
            self.port = free_port()
        conf = self._write_config()
        self.proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dovecot exited: {self.log()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                    if s.recv(64).startswith(b"* OK"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"dovecot did not start: {self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # The master and its sessions: Dovecot leaves running sessions alone on shutdown.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        """The server dies with every session it had (clients see their connections drop)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        path = self.dir / "dovecot.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def reset_uidvalidity(self, user: str = "support") -> None:
        """What a server migration does: the same messages, new UIDVALIDITY and UIDs."""
        self.stop()
        maildir = self.maildir(user)
        for path in list(maildir.glob("dovecot-uidlist")) + list(maildir.glob("dovecot.index*")):
            path.unlink()
        time.sleep(1.1)  # Dovecot derives a new UIDVALIDITY from the clock
        self.start()

    async def client(self, user: str = "support") -> aioimaplib.IMAP4:
        client = aioimaplib.IMAP4(self.host, self.port, timeout=30)
        await client.wait_hello_from_server()
        response = await client.login(user, self.users[user])
        if response.result != "OK":
            raise RuntimeError(f"login failed: {response.lines}")
        return client

    async def append(
        self, messages: list[bytes], user: str = "support", folder: str = "INBOX"
    ) -> None:
        """Deliver `messages` by IMAP APPEND over one connection."""
        client = await self.client(user)
        try:
            for raw in messages:
                response = await client.append(raw, mailbox=folder)
                if response.result != "OK":
                    raise RuntimeError(f"APPEND failed: {response.lines}")
        finally:
            await client.logout()

    async def uids(
        self, user: str = "support", folder: str = "INBOX", criteria: str = "ALL"
    ) -> list[int]:
        client = await self.client(user)
        try:
            await client.select(folder)
            response = await client.uid_search(criteria, charset=None)
            words = b" ".join(bytes(x) for x in response.lines[:-1]).split()
            return [int(w) for w in words if w.isdigit()]
        finally:
            await client.logout()


async def _main() -> None:  # pragma: no cover - manual smoke run
    d = Dovecot().start()
    try:
        await d.append([b"From: a@example.com\r\nSubject: hi\r\n\r\nhello\r\n"])
        print(await d.uids())
    finally:
        d.close()


if __name__ == "__main__":  # pragma: no cover
    asyncio.run(_main())
