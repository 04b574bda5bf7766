"""Mail text: HTML turned into clean text, and the new text separated from the quoted history and
the signature."""

from __future__ import annotations

import re
from html.parser import HTMLParser

_PARAGRAPH = {
    "p",
    "ul",
    "ol",
    "table",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "blockquote",
    "pre",
    "hr",
    "section",
    "article",
    "header",
    "footer",
    "dl",
    "address",
    "aside",
    "caption",
    "center",
    "details",
    "fieldset",
    "figcaption",
    "figure",
    "form",
    "main",
    "nav",
    "summary",
}
_LINE = {"br", "div", "tr", "li", "dt", "dd"}
_CELL = {"td", "th"}
# Elements whose content is never shown. <head> is not one: text in it is shown in the body, and
# a <head> that is never closed must not hide the mail (as an HTML5 parser ends it at the first
# element that belongs in the body).
# <noscript> is shown: mail readers run no scripts.
_SKIP = {"script", "style", "title", "template", "svg"}
_VOID = {"br", "hr", "img", "meta", "link", "input", "wbr", "col", "area", "base"}
# An unclosed <script>/<style>/<title> ends where the body's own markup starts.
_RAW_OPEN = re.compile(r"<(script|style|title|textarea)\b[^>]*>", re.I)
_BODY_MARKUP = re.compile(
    r"</head\s*>|<(body|p|div|table|br|h[1-6]|ul|ol|li|center|span|font|a|b|i|u|strong|em|blockquote|pre|tr|td)\b",
    re.I,
)
_QUOTE_CLASSES = ("gmail_quote", "moz-cite-prefix", "yahoo_quoted", "protonmail_quote")
_QUOTE_IDS = ("divrplyfwdmsg", "appendonsend", "mail-editor-reference-message-container")
QUOTE_MARK = "\u2063QUOTE\u2063"


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0
        self.quote_depth = 0
        self.marked = False
        self.href: list[str] = []
        self.link_text: list[str] = []
        self.pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        tag = tag.lower()
        a = {k.lower(): (v or "") for k, v in attrs}
        if tag in _SKIP:
            self.skip += 1
            return
        if tag in _PARAGRAPH:
            self.out.append("\n\n")
        elif tag in _LINE:
            self._line()
        if tag == "li":
            self.out.append("- ")
        if tag in _CELL:
            self.out.append(" ")
        if tag == "pre":
            self.pre += 1
        if tag == "img" and a.get("alt"):
            self.out.append(f"[{a['alt']}]")
        if tag == "a":
            self.href.append(a.get("href", ""))
            self.link_text.append("")
        classes = a.get("class", "").lower()
        ident = a.get("id", "").lower()
        if not self.marked and (
            any(c in classes for c in _QUOTE_CLASSES)
            or ident in _QUOTE_IDS
            or (tag == "blockquote" and a.get("type", "").lower() == "cite")
        ):
            self.out.append(f"\n{QUOTE_MARK}\n")
            self.marked = True
        if tag == "blockquote":
            self.quote_depth += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag.lower() not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        tag = tag.lower()
        if tag == "br":  # </br> is read as <br>
            self.out.append("\n")
            return
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
            return
        if tag == "a" and self.href:
            href, text = self.href.pop(), self.link_text.pop()
            if href.startswith(("http://", "https://")) and href not in text:
                self.out.append(f" <{href}>")
        if tag == "blockquote":
            self.quote_depth = max(0, self.quote_depth - 1)
        if tag == "pre":
            self.pre = max(0, self.pre - 1)
        if tag in _PARAGRAPH:
            self.out.append("\n\n")
        elif tag in ("div", "tr", "dd"):
            self._line()

    def _line(self) -> None:
        """A line break where a block starts or ends, unless the text is already at one (two
        adjacent blocks are one line apart, not two)."""
        last = next((s for s in reversed(self.out) if s), "")
        if not last.endswith("\n"):
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if not self.pre:
            data = re.sub(r"[ \t\r\n\f\u00a0]+", " ", data)
        if self.link_text:
            self.link_text[-1] += data
        if self.quote_depth:
            data = data.replace("\n", "\n" + "> " * self.quote_depth)
            if self.out and self.out[-1].endswith("\n"):
                data = "> " * self.quote_depth + data.lstrip()
        self.out.append(data)


def _mend_html(html: str) -> str:
    """Close what a broken mail leaves open so that its text is not swallowed: a <script>,
    <style> or <title> never closed ends where the body's markup begins, and a comment never
    closed ends at its first '>' (as quirks-mode readers take it)."""
    out: list[str] = []
    pos = 0
    opened = _RAW_OPEN.search(html)
    comment = html.find("<!--")
    unclosed: set[str] = set()
    while True:
        # Each search moves on only once passed, so the scan stays linear in the mail's length.
        if opened is not None and opened.start() < pos:
            opened = _RAW_OPEN.search(html, pos)
        if 0 <= comment < pos:
            comment = html.find("<!--", pos)
        if opened is None and comment < 0:
            break
        if comment >= 0 and (opened is None or comment < opened.start()):
            close = -1 if "<!--" in unclosed else html.find("-->", comment + 4)
            if close < 0:
                unclosed.add("<!--")
            if close >= 0:
                out.append(html[pos : close + 3])
                pos = close + 3
                continue
            gt = html.find(">", comment + 4)
            if gt < 0:
                break
            out.append(html[pos:gt] + "-->")
            pos = gt + 1
            continue
        assert opened is not None
        tag = opened.group(1).lower()
        close_match = None
        if tag not in unclosed:
            close_match = re.compile(rf"</{tag}\s*>", re.I).search(html, opened.end())
            if close_match is None:
                unclosed.add(tag)  # nor will any later one be closed
        if close_match is not None:
            out.append(html[pos : close_match.end()])
            pos = close_match.end()
            continue
        body = _BODY_MARKUP.search(html, opened.end())
        if body is None:
            break
        out.append(html[pos : body.start()] + f"</{tag}>")
        pos = body.start()
    out.append(html[pos:])
    return "".join(out)


def html_to_text(html: str) -> str:
    """Readable plain text from an HTML mail body: no markup, scripts or styles; paragraphs and
    line breaks kept; links shown once; quoted blocks prefixed with '>'."""
    html = _mend_html(html)
    parser = _TextExtractor()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # HTMLParser is lenient; anything left is treated as text
        return re.sub(r"<[^>]*>", " ", html)
    text = "".join(parser.out)
    lines = [line.rstrip() for line in text.split("\n")]
    lines = [line.strip() for line in lines]
    return re.sub(r"\n(\s*\n)+", "\n\n", "\n".join(lines)).strip()


_ATTRIBUTION = [
    re.compile(
        r"^(On|Le|El|Il|Em|Op)\s.{0,300}(wrote|écrit|escribió|scritto|escreveu|schreef)\s*:\s*$",
        re.I,
    ),
    re.compile(r"^Am\s.{0,300}schrieb.{0,200}:\s*$", re.I),
    re.compile(r"^.{0,300}(님이|님께서)\s*작성(하였습니다|했습니다)?\s*:\s*$"),
    re.compile(r"^.{0,300}작성\s*:\s*$"),
    re.compile(r"^(在|於|于)\s?.{0,300}(写道|寫道)\s*[:：]\s*$"),
    re.compile(r"^.{0,300}(さんは書きました|のメッセージ|wrote)\s*[:：]\s*$"),
]
_SEPARATOR = re.compile(
    r"^\s*(-{2,}\s*(Original Message|Forwarded message|Ursprüngliche Nachricht|원본 메시지|전달된 메시지|原始邮件|原始郵件|転送メッセージ|元のメッセージ)\s*-{2,}"
    r"|-{5,}\s*(原始邮件|原始郵件|Original)\s*-{5,}|_{10,})\s*$",
    re.I,
)
_HEADER_START = re.compile(
    r"^\s*\**(From|보낸 사람|발신|发件人|寄件者|差出人|Von|De)\s*\**\s*[:：]", re.I
)
_HEADER_NEXT = re.compile(
    r"^\s*\**(Sent|Date|To|Subject|보낸 날짜|날짜|받는 사람|제목|发送时间|日期|收件人|主题|送信日時|宛先|件名|Gesendet|An|Betreff|Envoyé|À|Objet)\s*\**\s*[:：]",
    re.I,
)
_MOBILE = re.compile(
    r"^\s*(Sent from my \w+|Sent from (Mail|Outlook) for|Get Outlook for|iPhone에서 보냄|나의 (iPhone|Galaxy)에서 보냄|Samsung Galaxy .* 에서 보냄|发自我的\w+|从我的\w+发送|iPhoneから送信)",
    re.I,
)


def _quote_start(lines: list[str]) -> int | None:
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped == QUOTE_MARK or _SEPARATOR.match(line):
            return i
        if any(p.match(stripped) for p in _ATTRIBUTION):
            return i
        # An attribution wrapped over two lines: "On Mon, 1 Jan 2024 at 10:00, Name <a@b>" / "wrote:"
        if (
            i + 1 < len(lines)
            and re.match(r"^(On|Le|Am)\s", stripped)
            and re.search(r"(wrote|écrit|schrieb)[^:]{0,40}:\s*$", lines[i + 1])
        ):
            return i
        if _HEADER_START.match(line):
            following = lines[i + 1 : i + 5]
            if sum(1 for f in following if _HEADER_NEXT.match(f)) >= 2:
                return i
        if stripped.startswith(">"):
            rest = [x for x in lines[i:] if x.strip()]
            if rest and sum(1 for x in rest if x.lstrip().startswith(">")) >= 0.6 * len(rest):
                return i
    return None


def split_reply(text: str) -> tuple[str, str, str]:
    """(new text, quoted history, signature) of a mail body."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    start = _quote_start(lines)
    quoted = ""
    if start is not None:
        quoted = "\n".join(lines[start:]).replace(QUOTE_MARK, "").strip()
        lines = lines[:start]
    signature = ""
    for i in range(len(lines) - 1, -1, -1):
        if lines[i] in ("-- ", "--", "—") or _MOBILE.match(lines[i]):
            signature = "\n".join(lines[i:]).strip()
            lines = lines[:i]
            break
    new = "\n".join(lines).replace(QUOTE_MARK, "").strip()
    return new, quoted, signature
