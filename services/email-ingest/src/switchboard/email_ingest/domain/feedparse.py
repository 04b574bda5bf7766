"""The stdlib's MIME parser (compat32) without a regular expression compiled per multipart, and
its messages' header look-ups through an index.

`email.feedparser` compiles a pattern for each multipart's boundary. A mail's boundary is unique
to it, so every compile misses the `re` cache, and at a few hundred microseconds it cost a small
multipart mail as much as the rest of its parse. This module runs a private copy of the stdlib's
feed parser whose boundary patterns are a prefix test and one pattern compiled once: the same
matches, the same groups, so the same messages. Any pattern of another shape (a later Python's
parser changed) is compiled as before. The stdlib's own module is left as it is.

compat32's `Message` finds a header by lower-casing and comparing every header's name, and parses
a parameter list (Content-Type's charset, boundary and name) again each time it is asked; a mail's
decoding asks a few dozen times. The messages parsed here (`IndexedMessage`) answer from an index
by lower-cased name and keep each header's parsed parameters, both rebuilt whenever the header
list is no longer the one they were built from.
"""

from __future__ import annotations

import importlib.util
import re
import types
from email import policy
from email.message import Message
from typing import Any

_OPEN = "(?P<sep>"
_TAIL = r")(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$"
_AFTER_SEPARATOR = re.compile(_TAIL[1:])
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)


class _Boundary:
    """`re.compile('(?P<sep>' + re.escape(separator) + _TAIL[1:])`, matching as that would."""

    __slots__ = ("separator",)

    def __init__(self, separator: str) -> None:
        self.separator = separator

    def match(self, line: str) -> re.Match[str] | None:
        if not line.startswith(self.separator):
            return None
        return _AFTER_SEPARATOR.match(line, len(self.separator))


class _Re:
    """`re` for the parser's copy: boundary patterns become `_Boundary`, the rest is `re`."""

    def __getattr__(self, name: str) -> Any:
        return getattr(re, name)

    def compile(self, pattern: Any, flags: int = 0) -> Any:
        if (
            not flags
            and isinstance(pattern, str)
            and pattern.startswith(_OPEN)
            and pattern.endswith(_TAIL)
        ):
            escaped = pattern[len(_OPEN) : -len(_TAIL)]
            separator = _ESCAPED.sub(lambda m: m.group(1), escaped)
            if re.escape(separator) == escaped:
                return _Boundary(separator)
        return re.compile(pattern, flags)


class IndexedMessage(Message):
    """compat32's `Message`, its header look-ups answered from an index of its header list."""

    # The header list the index was built from (a copy: compared with the list at each look-up,
    # so that any change, in place or not, rebuilds it).
    _indexed: list[tuple[str, Any]] | None = None
    _by_name: dict[str, list[tuple[str, Any]]]
    _params: dict[str, list[tuple[str, Any]]]

    def _index(self) -> dict[str, list[tuple[str, Any]]]:
        headers = self._headers  # type: ignore[attr-defined]
        if self._indexed != headers:
            by_name: dict[str, list[tuple[str, Any]]] = {}
            for name, value in headers:
                by_name.setdefault(name.lower(), []).append((name, value))
            self._by_name = by_name
            self._params = {}
            self._indexed = list(headers)
        return self._by_name

    def raw_values(self, name: str) -> list[Any]:
        """Every value of the header `name`, as stored (no policy applied), in order."""
        return [value for _, value in self._index().get(name.lower(), ())]

    def get(self, name: str, failobj: Any = None) -> Any:
        found = self._index().get(name.lower())
        if not found:
            return failobj
        return self.policy.header_fetch_parse(*found[0])

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index()

    def _get_params_preserve(self, failobj: Any, header: str) -> Any:
        key = header.lower()
        if key not in self._index():
            return failobj
        params = self._params.get(key)
        if params is None:
            params = self._params[key] = super()._get_params_preserve(failobj, header)  # type: ignore[misc]
        return list(params)  # the caller's own list, as the stdlib's is


def _parser_copy() -> types.ModuleType:
    spec = importlib.util.find_spec("email.feedparser")
    assert spec is not None and spec.loader is not None
    source = spec.loader.get_source("email.feedparser")  # type: ignore[attr-defined]
    module = types.ModuleType("switchboard.email_ingest.domain._stdlib_feedparser")
    module.__file__ = spec.origin
    exec(compile(source, spec.origin or "<email.feedparser>", "exec"), module.__dict__)
    module.re = _Re()  # type: ignore[attr-defined]  # looked up when a multipart is parsed
    return module


_feedparser = _parser_copy()


def message_from_bytes(raw: bytes) -> Message:
    """`email.message_from_bytes(raw, policy=policy.compat32)`, fed the same way; the message and
    its parts are `IndexedMessage`s."""
    text = raw.decode("ascii", "surrogateescape")
    parser = _feedparser.FeedParser(IndexedMessage, policy=policy.compat32)
    for i in range(0, len(text), 8192):  # email.parser.Parser's reads
        parser.feed(text[i : i + 8192])
    msg: Message = parser.close()
    return msg
