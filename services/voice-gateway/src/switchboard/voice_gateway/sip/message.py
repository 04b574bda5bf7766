"""SIP messages (RFC 3261 section 7): parsing with precise faults, and serialising.

A parse fault raises `SipSyntaxError` whose `reason` names the fault; the transport answers a
request with `400 <reason>` (section 21.4.1) when it can still address a response.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_MESSAGE_BYTES = 64 * 1024
MAX_HEADERS = 128

COMPACT = {
    "v": "Via",
    "f": "From",
    "t": "To",
    "i": "Call-ID",
    "m": "Contact",
    "l": "Content-Length",
    "c": "Content-Type",
    "k": "Supported",
    "s": "Subject",
    "e": "Content-Encoding",
    "o": "Event",
    "r": "Refer-To",
    "b": "Referred-By",
    "u": "Allow-Events",
}
_CANONICAL = {
    name.lower(): name
    for name in (
        "Via From To Call-ID CSeq Contact Content-Length Content-Type Max-Forwards Route "
        "Record-Route Authorization WWW-Authenticate Proxy-Authorization Proxy-Authenticate "
        "Expires Allow Supported Require User-Agent Server Retry-After Event Refer-To "
        "Referred-By Subscription-State Accept Reason Min-Expires Unsupported Allow-Events"
    ).split()
}
# Section 8.1.1: every request carries these; section 20: exactly one of each.
MANDATORY = ("Via", "To", "From", "Call-ID", "CSeq", "Max-Forwards")
SINGLETONS = ("To", "From", "Call-ID", "CSeq", "Max-Forwards", "Content-Length", "Content-Type")
# Headers whose comma-separated values are separate header field values (section 7.3.1).
_LISTS = frozenset({"Via", "Route", "Record-Route", "Contact"})
METHODS = frozenset(
    {
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "INFO",
        "REFER",
        "NOTIFY",
        "UPDATE",
        "PRACK",
        "SUBSCRIBE",
        "MESSAGE",
        "PUBLISH",
    }
)
_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")
_STATUS = re.compile(r"^SIP/2\.0 ([1-6]\d\d) (.*)$")
_REQUEST = re.compile(r"^([A-Za-z0-9.!%*_+`'~-]+) (\S+) SIP/2\.0$")


class SipSyntaxError(Exception):
    """The bytes are not a valid SIP message; `reason` names the fault (a 400 reason phrase)."""

    def __init__(self, reason: str, partial: SipMessage | None = None, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.partial = partial
        self.status = status


def canonical(name: str) -> str:
    low = name.strip().lower()
    if low in COMPACT:
        return COMPACT[low]
    return _CANONICAL.get(low) or "-".join(p.capitalize() for p in low.split("-"))


def split_list(value: str) -> list[str]:
    """Split a header value at commas outside quotes and angle brackets."""
    parts: list[str] = []
    depth, quoted, start = 0, False, 0
    for i, ch in enumerate(value):
        if ch == '"' and (i == 0 or value[i - 1] != "\\"):
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth = max(0, depth - 1)
        elif ch == "," and not quoted and depth == 0:
            parts.append(value[start:i].strip())
            start = i + 1
    parts.append(value[start:].strip())
    return [p for p in parts if p]


@dataclass
class SipMessage:
    method: str = ""  # requests
    uri: str = ""
    status: int = 0  # responses
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def is_request(self) -> bool:
        return bool(self.method)

    def get(self, name: str, default: str = "") -> str:
        name = canonical(name)
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        name = canonical(name)
        return [v for k, v in self.headers if k == name]

    def set(self, name: str, value: str) -> None:
        """Replace every value of `name` with one (appended if absent)."""
        name = canonical(name)
        for i, (k, _) in enumerate(self.headers):
            if k == name:
                self.headers[i] = (name, value)
                self.headers[:] = [h for j, h in enumerate(self.headers) if j <= i or h[0] != name]
                return
        self.headers.append((name, value))

    def add(self, name: str, value: str, first: bool = False) -> None:
        if first:
            self.headers.insert(0, (canonical(name), value))
        else:
            self.headers.append((canonical(name), value))

    def remove(self, name: str) -> None:
        name = canonical(name)
        self.headers = [h for h in self.headers if h[0] != name]

    @property
    def call_id(self) -> str:
        return self.get("Call-ID")

    @property
    def cseq(self) -> tuple[int, str]:
        num, _, method = self.get("CSeq").partition(" ")
        return int(num), method.strip()

    @property
    def top_via(self) -> Via:
        return Via.parse(self.get("Via"))

    def encode(self) -> bytes:
        if self.method:
            lines = [f"{self.method} {self.uri} SIP/2.0"]
        else:
            lines = [f"SIP/2.0 {self.status} {self.reason}"]
        lines += [f"{k}: {v}" for k, v in self.headers if k != "Content-Length"]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body

    def response(self, status: int, reason: str, to_tag: str = "") -> SipMessage:
        """A response to this request (section 8.2.6.2): Via, From, To, Call-ID, CSeq copied."""
        resp = SipMessage(status=status, reason=reason)
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            for value in self.get_all(name):
                if name == "To" and to_tag and ";tag=" not in value.replace(" ", ""):
                    value = f"{value};tag={to_tag}"
                resp.add(name, value)
        if self.method in ("INVITE", "SUBSCRIBE", "REFER") or status < 300:
            for value in self.get_all("Record-Route"):
                resp.add("Record-Route", value)
        return resp


@dataclass
class Via:
    transport: str
    host: str
    port: int | None
    params: dict[str, str | None]

    @classmethod
    def parse(cls, value: str) -> Via:
        m = re.match(r"^SIP\s*/\s*2\.0\s*/\s*([A-Za-z]+)\s+([^;\s]+)\s*(.*)$", value.strip())
        if not m:
            raise SipSyntaxError("Malformed Via header")
        host, port = split_hostport(m.group(2))
        return cls(m.group(1).upper(), host, port, parse_params(m.group(3)))

    @property
    def branch(self) -> str:
        return self.params.get("branch") or ""


def split_hostport(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = text.partition(":")
    if port and not port.isdigit():
        raise SipSyntaxError("Malformed port")
    value = int(port) if port else None
    if value is not None and not 0 < value < 65536:
        raise SipSyntaxError("Port out of range")
    return host, value


def parse_params(text: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        k, eq, v = part.partition("=")
        params[k.strip().lower()] = v.strip().strip('"') if eq else None
    return params


@dataclass
class Uri:
    scheme: str
    user: str
    host: str
    port: int | None
    params: dict[str, str | None]

    @classmethod
    def parse(cls, text: str) -> Uri:
        text = text.strip()
        m = re.match(r"^(sips?|tel):(.*)$", text, re.IGNORECASE)
        if not m:
            raise SipSyntaxError("Malformed URI")
        scheme, rest = m.group(1).lower(), m.group(2)
        rest = rest.split("?", 1)[0]
        hostpart, _, params = rest.partition(";")
        user = ""
        if "@" in hostpart:
            user, _, hostpart = hostpart.rpartition("@")
            user = user.split(":", 1)[0]
        if scheme == "tel":
            return cls(scheme, hostpart, "", None, parse_params(params))
        host, port = split_hostport(hostpart)
        if not host:
            raise SipSyntaxError("URI without a host")
        return cls(scheme, user, host, port, parse_params(params))

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params.items())
        return f"{self.scheme}:{user}{self.host}{port}{params}"


@dataclass
class NameAddr:
    """`"Name" <uri>;params` as in From, To, Contact, Route and Record-Route."""

    display: str
    uri: str
    params: dict[str, str | None]

    @classmethod
    def parse(cls, value: str) -> NameAddr:
        value = value.strip()
        if "<" in value:
            display, _, rest = value.partition("<")
            uri, close, params = rest.partition(">")
            if not close:
                raise SipSyntaxError("Unclosed angle bracket")
            return cls(display.strip().strip('"'), uri.strip(), parse_params(params))
        uri, _, params = value.partition(";")
        return cls("", uri.strip(), parse_params(params))

    @property
    def tag(self) -> str:
        return self.params.get("tag") or ""

    def __str__(self) -> str:
        display = f'"{self.display}" ' if self.display else ""
        params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params.items())
        return f"{display}<{self.uri}>{params}"


def parse_head(head: bytes) -> SipMessage:
    """Parse the start line and headers (everything before the blank line)."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise SipSyntaxError("Message is not UTF-8") from None
    lines = text.split("\r\n")
    start = lines[0]
    msg = SipMessage()
    if start.startswith("SIP/"):
        m = _STATUS.match(start)
        if not m:
            raise SipSyntaxError("Malformed Status-Line")
        msg.status, msg.reason = int(m.group(1)), m.group(2)
    else:
        m = _REQUEST.match(start)
        if not m:
            raise SipSyntaxError("Malformed Request-Line")
        msg.method, msg.uri = m.group(1).upper(), m.group(2)
    unfolded: list[str] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and unfolded:
            unfolded[-1] += " " + line.strip()  # header folding (section 7.3.1)
        elif line:
            unfolded.append(line)
    if len(unfolded) > MAX_HEADERS:
        raise SipSyntaxError("Too many headers", msg)
    for line in unfolded:
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.match(name.strip()):
            raise SipSyntaxError(f"Malformed header line {line[:32]!r}", msg)
        key, value = canonical(name), value.strip()
        for item in split_list(value) if key in _LISTS else [value]:
            msg.headers.append((key, item))
    return msg


def validate(msg: SipMessage) -> None:
    """Check the mandatory headers of a request or response (raises SipSyntaxError)."""
    required = MANDATORY if msg.is_request else ("Via", "To", "From", "Call-ID", "CSeq")
    for name in required:
        if not msg.get_all(name):
            raise SipSyntaxError(f"Missing {name} header", msg)
    for name in SINGLETONS:
        if len(msg.get_all(name)) > 1:
            raise SipSyntaxError(f"Repeated {name} header", msg)
    cseq = msg.get("CSeq").split()
    if len(cseq) != 2 or not cseq[0].isdigit() or len(cseq[0]) > 10 or int(cseq[0]) >= 2**31:
        raise SipSyntaxError("Malformed CSeq header", msg)
    if msg.is_request:
        if cseq[1].upper() != msg.method:
            raise SipSyntaxError("CSeq method does not match the request", msg)
        mf = msg.get("Max-Forwards")
        if not mf.isdigit() or int(mf) > 255:
            raise SipSyntaxError("Malformed Max-Forwards header", msg)
        try:
            Uri.parse(msg.uri)
        except SipSyntaxError:
            raise SipSyntaxError("Malformed Request-URI", msg) from None
    try:
        msg.top_via  # noqa: B018 (parses it)
        NameAddr.parse(msg.get("From"))
        NameAddr.parse(msg.get("To"))
    except SipSyntaxError as exc:
        raise SipSyntaxError(exc.reason, msg) from None
    if not msg.call_id or " " in msg.call_id:
        raise SipSyntaxError("Malformed Call-ID header", msg)


def content_length(msg: SipMessage) -> int | None:
    values = msg.get_all("Content-Length")
    if len(values) > 1:
        raise SipSyntaxError("Repeated Content-Length header", msg)
    if not values:
        return None
    value = values[0]
    if not value.isdigit() or len(value) > 9:
        raise SipSyntaxError("Invalid Content-Length", msg)
    length = int(value)
    if length > MAX_MESSAGE_BYTES:
        raise SipSyntaxError("Content-Length too large", msg, status=413)
    return length


def parse_datagram(data: bytes) -> SipMessage:
    """Parse one UDP datagram: a Content-Length beyond the datagram is an error (section 18.3)."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipSyntaxError("Message too large", status=513)
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise SipSyntaxError("No blank line after the headers")
    msg = parse_head(head)
    length = content_length(msg)
    if length is not None:
        if length > len(body):
            raise SipSyntaxError("Content-Length exceeds the datagram", msg)
        body = body[:length]
    msg.body = body
    validate(msg)
    return msg
