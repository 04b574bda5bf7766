"""A corpus generated here: every charset the channel promises, RFC 2047/2231 headers, HTML, quoted
history and signatures, and malformed mail, with assertions on the decoded text."""

from __future__ import annotations

import base64
import quopri

import pytest

from switchboard.email_ingest.domain import charsets, loops, mime, threads
from switchboard.email_ingest.domain.text import html_to_text, split_reply

KO = "안녕하세요. 주문한 상품이 아직 도착하지 않았습니다."
ZH = "你好，我的订单还没有到。请帮忙查询退款。"
ZH_T = "您好，我的訂單還沒有到，請幫忙查詢。"
JA = "こんにちは。注文した商品がまだ届いていません。"

CORPUS = [
    ("UTF-8", KO + " " + ZH + " " + JA, "utf-8"),
    ("EUC-KR", KO, "euc-kr"),
    (
        "ks_c_5601-1987",
        KO + " 똠방각하",
        "cp949",
    ),  # 똠 exists only in CP949, which Outlook labels so
    ("ISO-2022-KR", KO, "iso2022_kr"),
    ("GB2312", ZH + " 镕", "gbk"),  # 镕 is GBK, mislabelled GB2312 as Chinese mailers do
    ("GBK", ZH, "gbk"),
    ("GB18030", ZH + " 𠀀", "gb18030"),
    ("Big5", ZH_T, "big5"),
    ("Shift_JIS", JA + " ①", "cp932"),  # ① is a CP932 extension
    ("ISO-2022-JP", JA, "iso2022_jp"),
    ("UTF-7", KO + " " + JA, "utf-7"),
]


def encoded_word(text: str, label: str, codec: str, b: bool = True) -> str:
    data = text.encode(codec)
    if b:
        return f"=?{label}?B?{base64.b64encode(data).decode()}?="
    return f"=?{label}?Q?{quopri.encodestring(data, header=True).decode()}?="


def build(label: str, codec: str, body: str, subject: str, cte: str) -> bytes:
    data = body.encode(codec)
    if cte == "base64":
        payload = base64.encodebytes(data)
    elif cte == "quoted-printable":
        payload = quopri.encodestring(data)
    else:
        payload = data
    head = (
        f"From: =?UTF-8?B?{base64.b64encode('김고객'.encode()).decode()}?= <kim@example.kr>\r\n"
        f"To: support@demo.example\r\n"
        f"Subject: {encoded_word(subject, label, codec)}\r\n"
        f"Message-ID: <{label}@example.kr>\r\n"
        f"MIME-Version: 1.0\r\n"
        f'Content-Type: text/plain; charset="{label}"\r\n'
        f"Content-Transfer-Encoding: {cte}\r\n\r\n"
    )
    return head.encode() + payload.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@pytest.mark.parametrize("label,text,codec", CORPUS, ids=[c[0] for c in CORPUS])
@pytest.mark.parametrize("cte", ["base64", "quoted-printable", "8bit"])
def test_every_charset_decodes(label: str, text: str, codec: str, cte: str) -> None:
    if cte == "8bit" and codec.startswith(("iso2022", "utf-7")):
        cte = "7bit"
    subject = text[:12]
    parsed = mime.parse(build(label, codec, text, subject, cte))
    assert parsed.body == text
    assert parsed.subject == subject
    assert parsed.from_name == "김고객" and parsed.from_address == "kim@example.kr"
    assert not [p for p in parsed.problems if "undecodable" in p]


def test_encoded_words_split_inside_a_character_are_joined() -> None:
    data = "고객센터 문의".encode("cp949")
    first, second = data[:3], data[3:]  # splits the second syllable's two bytes
    subject = (
        f"=?ks_c_5601-1987?B?{base64.b64encode(first).decode()}?=\r\n "
        f"=?ks_c_5601-1987?B?{base64.b64encode(second).decode()}?="
    )
    raw = f"From: a@example.kr\r\nSubject: {subject}\r\n\r\nbody\r\n".encode()
    assert mime.parse(raw).subject == "고객센터 문의"


def test_mixed_encoded_and_plain_words_and_q_encoding() -> None:
    raw = (
        "From: a@example.com\r\nSubject: Re: "
        + encoded_word("注文", "ISO-2022-JP", "iso2022_jp")
        + " about "
        + encoded_word("환불", "UTF-8", "utf-8", b=False)
        + "\r\n\r\nx\r\n"
    ).encode()
    assert mime.parse(raw).subject == "Re: 注文 about 환불"


def test_raw_8bit_header_in_the_body_charset() -> None:
    raw = (
        b"From: a@example.kr\r\nSubject: "
        + "배송 문의".encode("cp949")
        + b"\r\nContent-Type: text/plain; charset=euc-kr\r\n\r\n"
        + "내용".encode("cp949")
        + b"\r\n"
    )
    parsed = mime.parse(raw)
    assert parsed.subject == "배송 문의" and parsed.body.strip() == "내용"


def test_rfc2231_filenames_with_charset_and_continuations() -> None:
    raw = (
        "From: a@example.com\r\nSubject: files\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nsee attached\r\n"
        "--b1\r\nContent-Type: application/pdf\r\n"
        "Content-Disposition: attachment;\r\n filename*0*=UTF-8''%EC%B2%AD%EA%B5%AC;\r\n filename*1*=%EC%84%9C.pdf\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.b64encode(b"%PDF-1.4 test").decode()
        + "\r\n"
        '--b1\r\nContent-Type: application/octet-stream; name="'
        + encoded_word("发票.xlsx", "GB2312", "gb18030")
        + '"\r\n'
        "Content-Disposition: attachment\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.b64encode(b"xlsx").decode()
        + "\r\n--b1--\r\n"
    ).encode()
    parsed = mime.parse(raw)
    assert parsed.body.strip() == "see attached"
    assert [(a.filename, a.data) for a in parsed.attachments] == [
        ("청구서.pdf", b"%PDF-1.4 test"),
        ("发票.xlsx", b"xlsx"),
    ]


def test_html_only_mail_becomes_clean_text() -> None:
    html = (
        "<html><head><style>p{color:red}</style><title>t</title></head><body>"
        "<script>alert('x')</script><p>Dear&nbsp;team,</p><p>My order <b>#123</b> is late &amp; "
        "I&#39;m worried.<br>Please check.</p><ul><li>item one</li><li>item two</li></ul>"
        '<a href="https://example.com/track">tracking</a></body></html>'
    )
    raw = (
        "From: a@example.com\r\nSubject: html\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        + html
    ).encode()
    parsed = mime.parse(raw)
    assert parsed.from_html
    assert parsed.body == (
        "Dear team,\n\nMy order #123 is late & I'm worried.\nPlease check.\n\n- item one\n- item two\n\n"
        "tracking <https://example.com/track>"
    )
    assert "alert" not in parsed.body and "color" not in parsed.body


def test_alternative_prefers_plain_and_html_quote_is_separated() -> None:
    html = (
        '<div dir="ltr">Thanks, that worked.</div><div class="gmail_quote"><div>On Mon, Support wrote:</div>'
        "<blockquote>Try restarting.</blockquote></div>"
    )
    assert split_reply(html_to_text(html)) == (
        "Thanks, that worked.",
        "On Mon, Support wrote:\n\n> Try restarting.",
        "",
    )


@pytest.mark.parametrize(
    "body,new,quoted_start",
    [
        (
            "Thanks!\n\nOn Mon, 1 Jan 2024 at 10:00, Support <s@x.com> wrote:\n> old text\n> more",
            "Thanks!",
            "On Mon",
        ),
        (
            "감사합니다.\n\n2024년 1월 1일 (월) 오후 3:00, 고객센터 <s@x.com>님이 작성:\n> 이전 내용",
            "감사합니다.",
            "2024년",
        ),
        (
            "好的\n\n------------------ 原始邮件 ------------------\n发件人: support\n主题: 订单",
            "好的",
            "-----",
        ),
        (
            "OK then.\n\nFrom: Support <s@x.com>\nSent: Monday\nTo: me\nSubject: Re: x\n\nold",
            "OK then.",
            "From: Support",
        ),
        (
            "확인했습니다\n\n-----Original Message-----\n보낸 사람: 지원팀",
            "확인했습니다",
            "-----Original",
        ),
    ],
)
def test_quoted_history_is_separated(body: str, new: str, quoted_start: str) -> None:
    got_new, quoted, _ = split_reply(body)
    assert got_new == new and quoted.startswith(quoted_start)


def test_signature_is_separated() -> None:
    new, quoted, signature = split_reply("The app crashes on start.\n\n-- \nKim Minsu\nACME Corp\n")
    assert (new, quoted, signature) == (
        "The app crashes on start.",
        "",
        "-- \nKim Minsu\nACME Corp",
    )
    assert split_reply("Fine.\n\nSent from my iPhone")[2] == "Sent from my iPhone"


# ---- malformed mail: decoded as far as possible, never a crash --------------------------------


def test_broken_boundaries() -> None:
    raw = (
        b'From: a@example.com\r\nSubject: broken\r\nContent-Type: multipart/mixed; boundary="nope"\r\n\r\n'
        b"--other\r\nContent-Type: text/plain\r\n\r\nthe text survives\r\n--other--\r\n"
    )
    parsed = mime.parse(raw)
    assert "the text survives" in parsed.body
    assert any("Boundary" in p or "boundary" in p for p in parsed.problems)


def test_missing_closing_boundary() -> None:
    raw = (
        b'From: a@example.com\r\nSubject: unclosed\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nfirst part \xec\x95\x88\xeb\x85\x95\r\n"
    )
    parsed = mime.parse(raw)
    assert parsed.body.strip() == "first part 안녕"
    assert any("CloseBoundaryNotFound" in p for p in parsed.problems)


def test_bad_base64_is_decoded_as_far_as_possible() -> None:
    good = base64.b64encode("결제 오류가 발생했습니다".encode()).decode()
    raw = (
        "From: a@example.com\r\nSubject: b64\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n" + good[:8] + "!!*" + good[8:] + "=\r\n"
    ).encode()
    parsed = mime.parse(raw)
    assert parsed.body == "결제 오류가 발생했습니다"
    assert any("bad base64" in p for p in parsed.problems)


def test_impossible_and_wrong_charsets() -> None:
    unknown = (
        b"From: a@example.com\r\nSubject: x\r\nContent-Type: text/plain; charset=x-no-such-charset\r\n\r\n"
        + "안녕".encode()
    )
    parsed = mime.parse(unknown)
    assert (
        parsed.body.strip() == "안녕" and "unknown charset 'x-no-such-charset'" in parsed.problems
    )
    mislabelled = (
        b"From: a@example.com\r\nSubject: x\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        + "주문 확인".encode("cp949")
    )
    parsed = mime.parse(mislabelled)
    assert (
        parsed.body.strip() == "주문 확인"
        and "declared utf-8 but decoded as cp949" in parsed.problems
    )
    garbage = b"From: a@example.com\r\nSubject: x\r\nContent-Type: text/plain; charset=iso-2022-jp\r\n\r\n\xff\xfe\xfa ok"
    parsed = mime.parse(garbage)
    assert parsed.body.endswith("ok")


def test_huge_headers() -> None:
    raw = (
        b"From: a@example.com\r\nSubject: "
        + b"A" * 300_000
        + b"\r\nX-Junk: "
        + b"b" * 300_000
        + b"\r\n\r\nstill readable\r\n"
    )
    parsed = mime.parse(raw)
    assert parsed.body.strip() == "still readable"
    assert len(parsed.subject) == 16 * 1024 - len("")
    assert any("header block over" in p for p in parsed.problems)
    assert any("truncated" in p for p in parsed.problems)


def test_deep_nesting() -> None:
    depth = 60
    head = b"From: a@example.com\r\nSubject: deep\r\n"
    body = b""
    for i in range(depth):
        body += f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n'.encode()
    body += b"Content-Type: text/plain\r\n\r\ninnermost\r\n"
    for i in reversed(range(depth)):
        body += f"--b{i}--\r\n".encode()
    parsed = mime.parse(head + body)
    assert any("nested deeper than" in p for p in parsed.problems)


def test_outer_text_survives_deep_nesting() -> None:
    raw = (
        b'From: a@example.com\r\nSubject: mixed\r\nContent-Type: multipart/mixed; boundary="top"\r\n\r\n'
        b"--top\r\nContent-Type: text/plain\r\n\r\nvisible text\r\n--top\r\n"
        + b"".join(
            f'Content-Type: multipart/mixed; boundary="n{i}"\r\n\r\n--n{i}\r\n'.encode()
            for i in range(40)
        )
        + b"Content-Type: text/plain\r\n\r\nburied\r\n--top--\r\n"
    )
    parsed = mime.parse(raw)
    assert parsed.body.startswith("visible text")


def test_charset_decoder_reports_unrecoverable_bytes() -> None:
    problems: list[str] = []
    text = charsets.decode(b"\x80\x81\xff\xfe\x00abc", "utf-8", problems)
    assert text.endswith("abc") and problems


# ---- threading helpers and loop detection ------------------------------------------------------


def test_subject_normalisation_and_tokens() -> None:
    assert (
        threads.normalise_subject("RE: AW: 답장: 回复: Fwd: Order late [#C-7K3M9Q]") == "order late"
    )
    assert threads.subject_token("Re: Order [#c-7k3m9q]") == "C-7K3M9Q"
    assert threads.plus_token(["support+C-7K3M9Q@demo.example"]) == "C-7K3M9Q"
    assert threads.with_token("Re: Order [#C-7K3M9Q]", "C-7K3M9Q") == "Re: Order [#C-7K3M9Q]"


@pytest.mark.parametrize(
    "headers,reason",
    [
        ("Auto-Submitted: auto-replied\r\n", "Auto-Submitted"),
        ("Precedence: bulk\r\n", "Precedence"),
        ("X-Autoreply: yes\r\n", "x-autoreply"),
        ("Return-Path: <>\r\n", "null Return-Path"),
        ("Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n", "delivery"),
    ],
)
def test_machine_mail_is_recognised(headers: str, reason: str) -> None:
    raw = f"From: someone@example.com\r\nSubject: hi\r\n{headers}\r\nbody\r\n".encode()
    assert reason in loops.automated(mime.parse(raw))


def test_daemon_and_own_address_and_person() -> None:
    bounce = mime.parse(b"From: MAILER-DAEMON@mx.example.com\r\nSubject: failure\r\n\r\nx")
    assert loops.automated(bounce)
    own = mime.parse(b"From: support@demo.example\r\nSubject: hi\r\n\r\nx")
    assert loops.automated(own, frozenset({"support@demo.example"}))
    person = mime.parse(b"From: kim@example.kr\r\nSubject: question\r\n\r\nx")
    assert loops.automated(person) == ""
