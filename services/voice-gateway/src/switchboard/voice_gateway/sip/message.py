"""SIP messages (RFC 3261 section 7): parsing with precise faults, and serialising.

A parse fault raises `SipSyntaxError` whose `reason` names the fault; the transport answers a
request with `400 <reason>` (section 21.4.1) when it can still address a response.
"""

from __future__ import annotations

import re
from collections.abc import Callable
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
# Section 8.1.1: every request carries these (Max-Forwards too, but an RFC 2543 peer may omit
# it, and a user agent server does not need it); section 20: exactly one of each.
MANDATORY = ("Via", "To", "From", "Call-ID", "CSeq")
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
_TOKEN_CHARS = r"A-Za-z0-9.!%*_+`'~\-"
_TOKEN = re.compile(rf"^[{_TOKEN_CHARS}]+$")
_STATUS = re.compile(r"^SIP/2\.0 ([1-6]\d\d) ([^\r\n]*)$")
# Section 7.1 and 25.1: Method SP Request-URI SP SIP-Version, single spaces, nothing after.
_REQUEST = re.compile(rf"^([{_TOKEN_CHARS}]+) ([^\s]+) ([Ss][Ii][Pp]/\d+\.\d+)$")
_SCHEME = r"[A-Za-z][A-Za-z0-9+.-]*"
_ABSOLUTE_URI = re.compile(rf"^{_SCHEME}:[^\s<>\"]+$")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST = re.compile(rf"^(\[[0-9A-Fa-f:.]+\]|{_LABEL}(\.{_LABEL})*\.?)$")
_PARAM_VALUE = re.compile(rf'^([{_TOKEN_CHARS}\[\]:]+|"([^"\\]|\\.)*")$')
# Section 25.1 word: the characters of a Call-ID.
_WORD = r"""[A-Za-z0-9\-.!%*_+`'~()<>:\\"/\[\]?{}]+"""
_CALL_ID = re.compile(rf"^{_WORD}(@{_WORD})?$")
# Section 20.17 and RFC 1123: the Date header is always in GMT.
_DATE = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"\d{4} \d{2}:\d{2}:\d{2} GMT$"
)
SCHEMES = frozenset({"sip", "sips", "tel"})


class SipSyntaxError(Exception):
    """The bytes are not a valid SIP message; `reason` names the fault (a 400 reason phrase)."""

    def __init__(self, reason: str, partial: SipMessage | None = None, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.partial = partial
        self.status = status


_TAG = re.compile(r";\s*tag\s*=", re.IGNORECASE)


def has_tag(value: str) -> bool:
    """Whether a From or To header value carries a tag parameter."""
    return bool(_TAG.search(value))


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
                if name == "To" and to_tag and not has_tag(value):
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
        """`SIP/2.0/transport host[:port] *(;param)`, with LWS around "/", ":" and ";"
        (section 20.42 and 25.1)."""
        m = re.match(
            rf"^SIP\s*/\s*2\.0\s*/\s*([{_TOKEN_CHARS}]+)\s+(\[[^\]]*\]|[^;:\s]+)"
            r"(?:\s*:\s*(\d+))?\s*(;.*)?$",
            value.strip(),
            re.IGNORECASE | re.DOTALL,
        )
        if not m or not _HOST.match(m.group(2)):
            raise SipSyntaxError("Malformed Via header")
        host, port = split_hostport(m.group(2) + (f":{m.group(3)}" if m.group(3) else ""))
        try:
            params = parse_params(m.group(4) or "")
        except SipSyntaxError:
            raise SipSyntaxError("Malformed Via header") from None
        return cls(m.group(1).upper(), host, port, params)

    @property
    def branch(self) -> str:
        return self.params.get("branch") or ""


def split_hostport(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = text.partition(":")
    if port and not (port.isascii() and port.isdigit()):
        raise SipSyntaxError("Malformed port")
    value = int(port) if port and len(port) <= 5 else (None if not port else 0)
    if value is not None and not 0 < value < 65536:
        raise SipSyntaxError("Port out of range")
    return host, value


def _split_unquoted(text: str, sep: str) -> list[str]:
    """Split at `sep` outside quoted strings."""
    parts: list[str] = []
    quoted, escaped, start = False, False, 0
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append(text[start:i])
            start = i + 1
    if quoted:
        raise SipSyntaxError("Unterminated quoted string")
    parts.append(text[start:])
    return parts


def parse_params(text: str) -> dict[str, str | None]:
    """`*( SEMI name [EQUAL value] )` (section 25.1 generic-param): every parameter has a token
    name and a token, host or quoted-string value; an empty one (`;;`) is a fault."""
    params: dict[str, str | None] = {}
    text = text.strip()
    if not text:
        return params
    if not text.startswith(";"):
        raise SipSyntaxError("Malformed parameters")
    for part in _split_unquoted(text, ";")[1:]:
        k, eq, v = part.partition("=")
        k, v = k.strip(), v.strip()
        if not _TOKEN.match(k) or (eq and not _PARAM_VALUE.match(v)):
            raise SipSyntaxError("Malformed parameters")
        params[k.lower()] = (v[1:-1] if v.startswith('"') else v) if eq else None
    return params


def _uri_params(text: str) -> dict[str, str | None]:
    """`;name[=value]` URI parameters (section 19.1.1): no LWS, none empty."""
    params: dict[str, str | None] = {}
    for part in text.split(";")[1:] if text else []:
        k, eq, v = part.partition("=")
        if not k or (eq and not v) or any(c in part for c in ' \t<>"'):
            raise SipSyntaxError("Malformed URI")
        params[k.lower()] = v if eq else None
    return params


@dataclass
class Uri:
    scheme: str
    user: str
    host: str
    port: int | None
    params: dict[str, str | None]
    headers: str = ""  # `?h=v&...` (allowed in a URI of a header, never in a Request-URI)

    @classmethod
    def parse(cls, text: str) -> Uri:
        """A SIP, SIPS or tel URI (section 19.1, RFC 3966); any other scheme raises with
        status 416 (Unsupported URI Scheme)."""
        if not _ABSOLUTE_URI.match(text):
            raise SipSyntaxError("Malformed URI")
        scheme, _, rest = text.partition(":")
        scheme = scheme.lower()
        if scheme not in SCHEMES:
            raise SipSyntaxError("Unsupported URI Scheme", status=416)
        if scheme == "tel":
            number, _, params = rest.partition(";")
            if not number:
                raise SipSyntaxError("Malformed URI")
            return cls(scheme, number, "", None, _uri_params(";" + params if params else ""))
        user = ""
        if "@" in rest:
            # userinfo may hold ; ? and escapes, never an unescaped @ (section 25.1)
            userinfo, _, rest = rest.partition("@")
            user = userinfo.split(":", 1)[0]
            if not user:
                raise SipSyntaxError("Malformed URI")
        rest, _, headers = rest.partition("?")
        hostport, _, params = rest.partition(";")
        host, port = split_hostport(hostport)
        if not host or not _HOST.match(host if not host.count(":") else f"[{host}]"):
            raise SipSyntaxError("Malformed URI")
        return cls(scheme, user, host, port, _uri_params(";" + params if params else ""), headers)

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params.items())
        return f"{self.scheme}:{user}{self.host}{port}{params}"


@dataclass
class NameAddr:
    """`"Name" <uri>;params` as in From, To, Contact, Route and Record-Route (section 20.10):
    a quoted or token display name, a URI in angle brackets with no LWS inside them, or a bare
    URI holding no `,` `?` or `;` of its own; then header parameters."""

    display: str
    uri: str
    params: dict[str, str | None]

    @classmethod
    def parse(cls, value: str) -> NameAddr:
        value = value.strip()
        display = ""
        if value.startswith('"'):
            end = _quoted_end(value)
            display = re.sub(r"\\(.)", r"\1", value[1:end], flags=re.DOTALL)
            rest = value[end + 1 :].lstrip()
            if not rest.startswith("<"):
                raise SipSyntaxError("Malformed display name")
        elif "<" in value:
            words, _, rest = value.partition("<")
            rest = "<" + rest
            if not all(_TOKEN.match(w) for w in words.split()):
                raise SipSyntaxError("Malformed display name")
            display = " ".join(words.split())
        else:
            rest = ""
        if rest:
            uri, close, params = rest[1:].partition(">")
            if not close:
                raise SipSyntaxError("Unclosed angle bracket")
            if not _ABSOLUTE_URI.match(uri):
                raise SipSyntaxError("Malformed URI in angle brackets")
        else:
            uri, semi, params = value.partition(";")
            uri, params = uri.strip(), semi + params
            if not _ABSOLUTE_URI.match(uri) or any(c in uri for c in ",?"):
                raise SipSyntaxError("Malformed address")
        return cls(display, uri, parse_params(params))

    @property
    def tag(self) -> str:
        return self.params.get("tag") or ""

    def __str__(self) -> str:
        display = f'"{self.display}" ' if self.display else ""
        params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params.items())
        return f"{display}<{self.uri}>{params}"


def _quoted_end(text: str) -> int:
    """The index of the quote closing the quoted string `text` starts with."""
    i = 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            return i
        i += 1
    raise SipSyntaxError("Unterminated quoted string")


def _decode(head: bytes) -> tuple[str, str | None]:
    """The header section as text, and the fault if it is not UTF-8 (section 7.3.1)."""
    try:
        return head.decode("utf-8"), None
    except UnicodeDecodeError:
        return head.decode("latin-1"), "Message is not UTF-8"


def parse_head(head: bytes) -> SipMessage:
    """Parse the start line and headers (everything before the blank line). A fault in a
    request still parses the headers, so that the fault can be answered (`partial`)."""
    text, fault = _decode(head)
    lines = text.split("\r\n")
    start = lines[0]
    msg = SipMessage()
    status = 400
    if start.startswith("SIP/"):
        m = _STATUS.match(start)
        if not m:
            raise SipSyntaxError("Malformed Status-Line")  # responses are never answered
        msg.status, msg.reason = int(m.group(1)), m.group(2)
    else:
        m = _REQUEST.match(start)
        if m:
            msg.method, msg.uri = m.group(1), m.group(2)
            if m.group(3) != "SIP/2.0":
                fault, status = fault or "Version Not Supported", 505
        else:
            # Section 21.4.1: a request whose start line is malformed is still answered.
            first = start.split(" ", 1)[0]
            msg.method = first if _TOKEN.match(first) else "UNKNOWN"
            fault = fault or "Malformed Request-Line"
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
        if not colon or not _TOKEN.match(name.rstrip(" \t")):
            fault = fault or f"Malformed header line {line[:32]!r}"
            continue
        key, value = canonical(name), value.strip()
        for item in split_list(value) if key in _LISTS else [value]:
            msg.headers.append((key, item))
    if fault:
        raise SipSyntaxError(fault, msg, status)
    return msg


def _check(msg: SipMessage, name: str, check: Callable[[str], object]) -> None:
    for value in msg.get_all(name):
        try:
            check(value)
        except SipSyntaxError:
            raise SipSyntaxError(f"Malformed {name} header", msg) from None


def _contact(value: str) -> None:
    if value.strip() != "*":
        NameAddr.parse(value)


def _route(value: str) -> None:
    if not NameAddr.parse(value).uri or "<" not in value:
        raise SipSyntaxError("Malformed Route")


def _digits(limit: int) -> Callable[[str], None]:
    def check(value: str) -> None:
        if not (value.isascii() and value.isdigit()) or len(value) > 10 or int(value) > limit:
            raise SipSyntaxError("Malformed number")

    return check


def _date(value: str) -> None:
    if not _DATE.match(value):
        raise SipSyntaxError("Malformed Date")


def validate(msg: SipMessage) -> None:
    """Check a request or response against section 8.1.1, 20 and 25 (raises SipSyntaxError
    with the status to answer: 400, or 416 for a Request-URI scheme not supported)."""
    for name in ("Via", "To", "From", "Call-ID", "CSeq"):
        if not msg.get_all(name):
            raise SipSyntaxError(f"Missing {name} header", msg)
    for name in SINGLETONS:
        if len(msg.get_all(name)) > 1:
            raise SipSyntaxError(f"Repeated {name} header", msg)
    cseq = msg.get("CSeq").split()
    if (
        len(cseq) != 2
        or not (cseq[0].isascii() and cseq[0].isdigit())
        or len(cseq[0]) > 10
        or int(cseq[0]) >= 2**31
        or not _TOKEN.match(cseq[1])
    ):
        raise SipSyntaxError("Malformed CSeq header", msg)
    _check(msg, "Via", Via.parse)
    _check(msg, "From", NameAddr.parse)
    _check(msg, "To", NameAddr.parse)
    if not _CALL_ID.match(msg.call_id):
        raise SipSyntaxError("Malformed Call-ID header", msg)
    _check(msg, "Contact", _contact)
    _check(msg, "Route", _route)
    _check(msg, "Record-Route", _route)
    _check(msg, "Max-Forwards", _digits(255))
    _check(msg, "Expires", _digits(2**32 - 1))
    _check(msg, "Date", _date)
    if not msg.is_request:
        return
    if cseq[1] != msg.method:  # methods are case-sensitive (section 7.1)
        raise SipSyntaxError("CSeq method does not match the request", msg)
    # Section 19.1.1: a Request-URI has no LWS, no angle brackets and no headers.
    if not _ABSOLUTE_URI.match(msg.uri):
        raise SipSyntaxError("Malformed Request-URI", msg)
    try:
        uri = Uri.parse(msg.uri)
    except SipSyntaxError as exc:
        if exc.status == 416 and msg.method != "ACK":
            raise SipSyntaxError("Unsupported URI Scheme", msg, 416) from None
        raise SipSyntaxError("Malformed Request-URI", msg) from None
    if uri.headers:
        raise SipSyntaxError("Malformed Request-URI", msg)


def content_length(msg: SipMessage) -> int | None:
    values = msg.get_all("Content-Length")
    if len(values) > 1:
        raise SipSyntaxError("Repeated Content-Length header", msg)
    if not values:
        return None
    value = values[0]
    if not (value.isascii() and value.isdigit()) or len(value) > 9:
        raise SipSyntaxError("Invalid Content-Length", msg)
    length = int(value)
    if length > MAX_MESSAGE_BYTES:
        raise SipSyntaxError("Content-Length too large", msg, status=413)
    return length


def parse_datagram(data: bytes) -> SipMessage:
    """Parse one UDP datagram (section 18.3): octets beyond Content-Length are discarded, a
    Content-Length beyond the datagram is an error, and without one the body is the rest."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipSyntaxError("Message too large", status=513)
    data = data.lstrip(b"\r\n")  # section 7.5: CRLFs before the start line are ignored
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        msg = parse_head(data.rstrip(b"\r\n"))
        raise SipSyntaxError("No blank line after the headers", msg)
    msg = parse_head(head)
    length = content_length(msg)
    if length is not None:
        if length > len(body):
            raise SipSyntaxError("Content-Length exceeds the datagram", msg)
        body = body[:length]
    msg.body = body
    validate(msg)
    return msg
