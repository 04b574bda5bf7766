"""What the pod runner asks of a running pod: its probes, as the kubelet runs them; each port of
each Service in front of it, in the protocol the port names (appProtocol), over TLS where the pod
serves it (verified by the test's CA, showing a client certificate of it) and refusing plain text
there; the ports it really listens on. Every check goes to the pod's address, POD_IP."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import smtplib
import socket
import ssl
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from k8s_pods import POD_IP, Pod, processes

TIMEOUT = 3.0


@dataclass(frozen=True)
class Trust:
    """What a caller inside the deployment holds: the internal CA and a certificate it issued."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def context(self, server_name: str | None) -> ssl.SSLContext:
        """A client context verifying the server by the CA (its name, when one is given)."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(self.cert_file, self.key_file)
        if server_name is None:
            context.check_hostname = False
        return context


def grpc_health(port: int, service: str = "", tls: Trust | None = None, name: str = "") -> str:
    """The health status of `service` on a port, in plain text or (tls) over mutual TLS, the
    server verified as `name`."""
    target = f"{POD_IP}:{port}"
    if tls is None:
        channel = grpc.insecure_channel(target)
    else:
        credentials = grpc.ssl_channel_credentials(
            tls.ca_file.read_bytes(), tls.key_file.read_bytes(), tls.cert_file.read_bytes()
        )
        options = [("grpc.ssl_target_name_override", name)]
        channel = grpc.secure_channel(target, credentials, options=options)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def http_get(
    port: int, path: str = "/", context: ssl.SSLContext | None = None, name: str = ""
) -> int:
    """The status of a GET; over HTTPS with `context`, the server verified as `name`."""
    if context is None:
        conn = http.client.HTTPConnection(POD_IP, port, timeout=TIMEOUT)
    else:
        conn = _https(port, context, name)
    try:
        conn.request("GET", path, headers={"Host": f"{POD_IP}:{port}"})
        return conn.getresponse().status
    finally:
        conn.close()


def sip_options(port: int, transport: str) -> str:
    """Send a SIP OPTIONS over udp, tcp or tls; return the status line of the answer."""
    tag = uuid.uuid4().hex[:10]
    family = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, family) as raw:
        raw.settimeout(TIMEOUT)
        # UDP stays unconnected: a server bound to 0.0.0.0 answers from 127.0.0.1, not POD_IP.
        if transport == "udp":
            raw.bind(("127.0.0.1", 0))
        else:
            raw.connect((POD_IP, port))
        sock: socket.socket = raw
        if transport == "tls":
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            sock = context.wrap_socket(raw)
        local, local_port = sock.getsockname()[:2]
        request = (
            f"OPTIONS sip:{POD_IP}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport.upper()} {local}:{local_port};branch=z9hG4bK{tag};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:pod-runner@{local}>;tag={tag}\r\n"
            f"To: <sip:{POD_IP}>\r\n"
            f"Call-ID: {tag}@{local}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            f"Contact: <sip:pod-runner@{local}:{local_port};transport={transport}>\r\n"
            "Accept: application/sdp\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        if transport == "udp":
            sock.sendto(request.encode(), (POD_IP, port))
        else:
            sock.sendall(request.encode())
        answer = sock.recv(65535).decode(errors="replace")
        return answer.split("\r\n", 1)[0]


def _https(port: int, context: ssl.SSLContext, name: str) -> http.client.HTTPSConnection:
    """An HTTPS connection to POD_IP whose certificate is checked for `name`."""

    class Named(http.client.HTTPSConnection):
        def connect(self) -> None:
            http.client.HTTPConnection.connect(self)
            self.sock = context.wrap_socket(self.sock, server_hostname=name or None)

    return Named(POD_IP, port, timeout=TIMEOUT, context=context)


def smtp_ehlo(port: int, starttls: bool = False) -> int:
    """EHLO's code; with starttls, STARTTLS must be offered, and EHLO's code after it."""
    with smtplib.SMTP(POD_IP, port, local_hostname="pod-runner.test", timeout=TIMEOUT) as smtp:
        code, _ = smtp.ehlo()
        if not starttls:
            return code
        if not smtp.has_extn("starttls"):
            return 0
        # A sender on the internet does not verify an MX's certificate; this checks the handshake.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        smtp.starttls(context=context)
        code, _ = smtp.ehlo()
        return code


def run_probe(pod: Pod, probe: dict[str, Any]) -> str:
    """'' when the probe passes, else what failed (the kubelet's grpc, httpGet and tcpSocket)."""
    try:
        if "grpc" in probe:
            status = grpc_health(pod.port(probe["grpc"]["port"]), probe["grpc"].get("service", ""))
            return "" if status == "SERVING" else f"gRPC health {status}"
        if "httpGet" in probe:
            get = probe["httpGet"]
            # The kubelet's HTTPS probes do not verify the certificate.
            context = None
            if get.get("scheme", "HTTP") == "HTTPS":
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            code = http_get(pod.port(get["port"]), get.get("path", "/"), context)
            return "" if 200 <= code < 400 else f"HTTP {code}"
        if "tcpSocket" in probe:
            socket.create_connection(
                (POD_IP, pod.port(probe["tcpSocket"]["port"])), TIMEOUT
            ).close()
            return ""
    except (OSError, grpc.RpcError, http.client.HTTPException) as e:
        detail = e.details() if isinstance(e, grpc.Call) else str(e)
        return f"{type(e).__name__}: {detail}"
    return f"probe {sorted(probe)} is not supported"


def wait_until_ready(pod: Pod, timeout: float = 60.0) -> None:
    """Wait for the startup (if any), readiness and liveness probes to pass, or say why not."""
    deadline = time.monotonic() + timeout
    for name in ("startupProbe", "readinessProbe", "livenessProbe"):
        if name not in pod.container:
            continue
        failure = "not tried"
        while time.monotonic() < deadline:
            if not pod.alive():
                raise AssertionError(
                    f"{pod.name} exited with {pod.process.returncode if pod.process else '?'} "
                    f"before its {name} passed:\n{pod.log_tail()}"
                )
            failure = run_probe(pod, pod.container[name])
            if not failure:
                break
            time.sleep(0.3)
        else:
            raise AssertionError(f"{pod.name}: {name} failing ({failure}):\n{pod.log_tail()}")


def check_service_port(
    pod: Pod, service: str, port: dict[str, Any], trust: Trust | None = None
) -> str:
    """'' when the pod answers on a port of the Service named `service` in the protocol it names,
    else what happened. Where the pod serves gRPC over TLS (GRPC_TLS_CERT_FILE), the port must
    refuse plain text and answer a caller holding `trust`, the server verified by its name."""
    protocol = port.get("protocol", "TCP")
    local = pod.port(port.get("targetPort", port["port"]), protocol)
    kind = port.get("appProtocol") or port.get("name", "")  # test_policy requires appProtocol
    try:
        if kind == "grpc" and pod.env.get("GRPC_TLS_CERT_FILE"):
            if trust is None:
                return "serves gRPC over TLS, and the check was given no CA"
            with contextlib.suppress(grpc.RpcError):
                return f"answers plain-text gRPC ({grpc_health(local)}) beside TLS"
            status = grpc_health(local, tls=trust, name=service)
            return "" if status == "SERVING" else f"gRPC health over TLS {status}"
        if kind == "grpc":
            status = grpc_health(local)
            return "" if status == "SERVING" else f"gRPC health {status}"
        if kind == "http":
            code = http_get(local, "/")
            return "" if code < 500 else f"HTTP {code}"
        if kind == "https":
            if trust is None:
                return "serves HTTPS, and the check was given no CA"
            with contextlib.suppress(OSError, http.client.HTTPException):
                return f"answers plain HTTP ({http_get(local, '/')}) beside HTTPS"
            code = http_get(local, "/", trust.context(service), service)
            return "" if code < 500 else f"HTTPS {code}"
        if kind in {"sip", "sips"}:
            transport = "tls" if kind == "sips" else protocol.lower()
            line = sip_options(local, transport)
            return "" if line.startswith("SIP/2.0 ") else f"not a SIP answer: {line!r}"
        if kind == "smtp":
            starttls = bool(pod.env.get("EMAIL_SMTP_TLS_CERT_FILE"))
            code = smtp_ehlo(local, starttls)
            if starttls and code == 0:
                return "STARTTLS is not offered"
            return "" if code == 250 else f"EHLO answered {code}"
    except (OSError, grpc.RpcError, smtplib.SMTPException, http.client.HTTPException) as e:
        return f"{type(e).__name__}: {e}"
    return f"no check for appProtocol {kind!r}"


def listening_ports(pod: Pod) -> set[tuple[int, str]]:
    """(port, TCP|UDP) of every listening TCP socket and unconnected UDP socket of the pod's
    processes, read from /proc."""
    assert pod.process is not None
    inodes = set()
    for pid in _descendants(pod.process.pid):
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                if m := re.match(r"socket:\[(\d+)\]", os.readlink(fd)):
                    inodes.add(m[1])
        except OSError:
            continue
    found = set()
    for table, proto in (("tcp", "TCP"), ("tcp6", "TCP"), ("udp", "UDP"), ("udp6", "UDP")):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            listening = state == "0A" if proto == "TCP" else int(remote.split(":")[1], 16) == 0
            if inode in inodes and listening:
                found.add((int(local.split(":")[1], 16), proto))
    return found


def memory_bytes(pod: Pod) -> int:
    """The resident memory of the pod's processes (bubblewrap's own excepted)."""
    assert pod.process is not None
    total = 0
    for proc in processes():
        if proc.pid in _descendants(pod.process.pid) and proc.name != "bwrap":
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{proc.pid}/status").read_text()
                total += int(re.search(r"VmRSS:\s+(\d+) kB", status)[1]) * 1024  # type: ignore[index]
    return total


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (512Mi, 1Gi, 1G, 1000000) in bytes."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}
    for unit, factor in units.items():
        if quantity.endswith(unit):
            return int(float(quantity[: -len(unit)]) * factor)
    return int(quantity)


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for proc in processes():
        children.setdefault(proc.ppid, []).append(proc.pid)
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found
