"""What the gateway says, in each language it speaks: the text of every prompt, the espeak-ng
voice that reads it, and the words for the keys a caller presses.

Chinese is written in Hanyu Pinyin with tone numbers and read by espeak-ng's
`cmn-latn-pinyin` voice (Debian's Mandarin dictionary reads few characters); Japanese is written in
kana (its dictionary reads no kanji). A text with `{key}` names a key (the language menu's option,
the callback key) and is spoken once for each key the configuration uses.

Numbers are composed from fragments: `n0` to `n19` and the tens `n20` to `n90` (see
`switchboard.voice_gateway.domain.ivr.number`)."""

from __future__ import annotations

LANGUAGES = ("ko", "zh", "en", "ja")
FALLBACK = "en"  # a call in a language not listed here hears English

VOICES = {"ko": "ko", "zh": "cmn-latn-pinyin", "en": "en-us", "ja": "ja"}

KEYS = "0123456789*#"

_KEY_WORDS = {
    "ko": [
        "영번",
        "일번",
        "이번",
        "삼번",
        "사번",
        "오번",
        "육번",
        "칠번",
        "팔번",
        "구번",
        "별표",
        "우물 정자",
    ],
    "zh": [
        "ling2",
        "yi1",
        "er4",
        "san1",
        "si4",
        "wu3",
        "liu4",
        "qi1",
        "ba1",
        "jiu3",
        "xing1 hao4",
        "jing3 hao4",
    ],
    "en": [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "star",
        "hash",
    ],
    "ja": [
        "ゼロ",
        "いちばん",
        "にばん",
        "さんばん",
        "よんばん",
        "ごばん",
        "ろくばん",
        "ななばん",
        "はちばん",
        "きゅうばん",
        "こめじるし",
        "シャープ",
    ],
}

_UNITS = {
    "ko": ["영", "일", "이", "삼", "사", "오", "육", "칠", "팔", "구"],
    "zh": ["ling2", "yi1", "er4", "san1", "si4", "wu3", "liu4", "qi1", "ba1", "jiu3"],
    "en": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"],
    "ja": ["ゼロ", "いち", "に", "さん", "よん", "ご", "ろく", "なな", "はち", "きゅう"],
}
_TEEN_EN = [
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS_EN = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_TEN = {"ko": "십", "zh": "shi2", "ja": "じゅう"}


def _numbers(lang: str) -> dict[str, str]:
    """n0..n19 and n20, n30, ... n90 as words."""
    units = _UNITS[lang]
    out = {f"n{i}": units[i] for i in range(10)}
    for n in range(10, 20):
        if lang == "en":
            out[f"n{n}"] = _TEEN_EN[n - 10]
        else:
            sep = " " if lang == "zh" else ""
            out[f"n{n}"] = _TEN[lang] + (sep + units[n - 10] if n > 10 else "")
    for tens in range(2, 10):
        if lang == "en":
            out[f"n{tens * 10}"] = _TENS_EN[tens]
        else:
            sep = " " if lang == "zh" else ""
            out[f"n{tens * 10}"] = units[tens] + sep + _TEN[lang]
    return out


# The prompts the gateway plays. `position` + number + `position-end` and `wait` + number +
# `minute`/`minutes` make the queue announcement.
_PHRASES: dict[str, dict[str, str]] = {
    "ko": {
        "welcome": "안녕하세요. 고객센터입니다.",
        "language-option": "한국어는 {key} 버튼을 누르세요.",
        "topic-menu": "요금 문의는 일번, 기술 지원은 이번, 계정 문의는 삼번을 누르세요.",
        "please-hold": "잠시만 기다려 주십시오. 곧 상담원을 연결해 드리겠습니다.",
        "position": "고객님의 대기 순서는",
        "position-end": "번입니다.",
        "wait": "예상 대기 시간은 약",
        "minute": "분입니다.",
        "minutes": "분입니다.",
        "callback-offer": "전화를 끊고 순서가 되면 다시 전화를 받으시려면 {key} 버튼을 누르세요.",
        "callback-confirmed": "순서가 되면 다시 전화 드리겠습니다.",
        "connecting": "상담원에게 연결해 드리겠습니다.",
        "goodbye": "전화해 주셔서 감사합니다. 안녕히 계십시오.",
        "invalid": "잘못 누르셨습니다.",
        "survey": "상담에 대한 만족도를 일번부터 오번까지 눌러 주세요. 오번은 매우 만족입니다.",
        "survey-thanks": "소중한 의견 감사합니다.",
    },
    "zh": {
        "welcome": "huan1 ying2 zhi4 dian4 ke4 fu2 zhong1 xin1.",
        "language-option": "zhong1 wen2 fu2 wu4, qing3 an4 {key}.",
        "topic-menu": (
            "zhang4 dan1 wen4 ti2 qing3 an4 yi1, ji4 shu4 zhi1 chi2 qing3 an4 er4, "
            "zhang4 hu4 wen4 ti2 qing3 an4 san1."
        ),
        "please-hold": "qing3 shao1 hou4, wo3 men5 jiang1 wei4 nin2 zhuan3 jie1 ke4 fu2.",
        "position": "nin2 xian4 zai4 pai2 zai4 di4",
        "position-end": "wei4.",
        "wait": "yu4 ji4 deng3 dai4",
        "minute": "fen1 zhong1.",
        "minutes": "fen1 zhong1.",
        "callback-offer": (
            "ru2 xu1 gua4 duan4 hou4 hui2 bo1, qing3 an4 {key}, nin2 de5 pai2 dui4 wei4 zhi4 "
            "jiang1 bao3 liu2."
        ),
        "callback-confirmed": "lun2 dao4 nin2 shi2, wo3 men5 hui4 hui2 dian4 gei3 nin2.",
        "connecting": "zheng4 zai4 wei4 nin2 zhuan3 jie1 ke4 fu2.",
        "goodbye": "gan3 xie4 nin2 de5 lai2 dian4, zai4 jian4.",
        "invalid": "nin2 de5 shu1 ru4 wu2 xiao4.",
        "survey": (
            "qing3 wei4 ben3 ci4 fu2 wu4 ping2 fen1, an4 yi1 dao4 wu3, wu3 wei2 fei1 chang2 man3 yi4."
        ),
        "survey-thanks": "xie4 xie4 nin2 de5 ping2 jia4.",
    },
    "en": {
        "welcome": "Thank you for calling customer service.",
        "language-option": "For English, press {key}.",
        "topic-menu": (
            "For billing, press one. For technical support, press two. For your account, "
            "press three."
        ),
        "please-hold": "Please hold. An agent will be with you shortly.",
        "position": "You are number",
        "position-end": "in the queue.",
        "wait": "The estimated wait is",
        "minute": "minute.",
        "minutes": "minutes.",
        "callback-offer": "To hang up and be called back when it is your turn, press {key}.",
        "callback-confirmed": "Thank you. We will call you back when it is your turn.",
        "connecting": "Connecting you to an agent.",
        "goodbye": "Thank you for calling. Goodbye.",
        "invalid": "Sorry, that is not a valid choice.",
        "survey": "Please rate this call from one to five on your keypad. Five is excellent.",
        "survey-thanks": "Thank you for your feedback.",
    },
    "ja": {
        "welcome": "おでんわ ありがとうございます。 カスタマーセンターです。",
        "language-option": "にほんごは {key}を おしてください。",
        "topic-menu": (
            "ごせいきゅうについては いちばん、 ぎじゅつサポートは にばん、 "
            "アカウントについては さんばんを おしてください。"
        ),
        "please-hold": "しょうしょう おまちください。 まもなく たんとうしゃに おつなぎします。",
        "position": "おきゃくさまの じゅんばんは",
        "position-end": "ばんめです。",
        "wait": "まちじかんは およそ",
        "minute": "ふんです。",
        "minutes": "ふんです。",
        "callback-offer": "でんわを きって おりかえしを ごきぼうの かたは {key}を おしてください。",
        "callback-confirmed": "じゅんばんが きましたら おりかえし おでんわ いたします。",
        "connecting": "たんとうしゃに おつなぎします。",
        "goodbye": "おでんわ ありがとうございました。 しつれい いたします。",
        "invalid": "にゅうりょくが ただしく ありません。",
        "survey": (
            "こんかいの たいおうの まんぞくどを いちから ごの ボタンで おしえてください。 "
            "ごが もっとも まんぞくです。"
        ),
        "survey-thanks": "ごきょうりょく ありがとうございました。",
    },
}

# Prompts whose text names a key: spoken once per key, as "name:key" (e.g. "callback-offer:*").
TEMPLATES = frozenset(k for k, text in _PHRASES["en"].items() if "{key}" in text)

TEXTS: dict[str, dict[str, str]] = {
    lang: {**_PHRASES[lang], **_numbers(lang)} for lang in LANGUAGES
}

# Prompts with no language: played as they are.
MUSIC_ON_HOLD = "music-on-hold"


def language(lang: str) -> str:
    """The catalogue language a call in `lang` hears."""
    return lang if lang in TEXTS else FALLBACK


def template_name(name: str, key: str) -> str:
    return f"{name}:{key}"


def text(lang: str, name: str) -> str | None:
    """The words of prompt `name` in `lang` (a template's as "name:key"); None: no such prompt."""
    base, _, key = name.partition(":")
    words = TEXTS[lang].get(base)
    if words is None or (base in TEMPLATES) != bool(key):
        return None
    if key:
        if key not in KEYS:
            return None
        return words.replace("{key}", _KEY_WORDS[lang][KEYS.index(key)])
    return words
