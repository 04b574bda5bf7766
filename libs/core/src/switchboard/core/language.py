"""Language identification for contacts whose channel does not say the language (email, fax).

py3langid (a maintained port of langid.py) scores the text; Switchboard narrows the answer to the
languages a tenant serves when it is given them, and maps the result to a BCP 47 tag.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

# langid codes -> BCP 47 tags Switchboard routes on.
_TAGS = {"zh": "zh", "yue": "zh-Hant", "ko": "ko", "ja": "ja", "en": "en"}
_HANGUL = re.compile(r"[\uac00-\ud7a3]")
_KANA = re.compile(r"[\u3040-\u30ff]")
_HAN = re.compile(r"[\u4e00-\u9fff]")


@lru_cache(maxsize=16)
def _identifier(candidates: tuple[str, ...]) -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    if candidates:
        identifier.set_languages(list(candidates))
    return identifier


def warm() -> None:
    """Load the model now (about half a second of CPU) rather than on the first contact."""
    _identifier(())


def detect(text: str, candidates: Iterable[str] | None = None) -> tuple[str, float]:
    """Return (BCP 47 tag, probability) for `text`, or ("", 0.0) when there is nothing to go on.

    Scripts decide first where they are unambiguous (Hangul is Korean, kana is Japanese), since
    short CJK texts are where statistical models err most; otherwise py3langid decides, limited to
    `candidates` (langid codes such as "ko", "zh", "en") when given.
    """
    sample = text.strip()[:5000]
    if not re.search(r"\w", sample):
        return "", 0.0
    letters = max(1, len(re.findall(r"\w", sample)))
    hangul, kana, han = (len(p.findall(sample)) for p in (_HANGUL, _KANA, _HAN))
    if hangul / letters > 0.3:
        return "ko", min(1.0, 0.5 + hangul / letters)
    if kana / letters > 0.1:
        return "ja", min(1.0, 0.5 + (kana + han) / letters)
    identifier = _identifier(tuple(sorted(set(candidates or ()))))
    code, probability = identifier.classify(sample)
    if han / letters > 0.3 and code not in ("zh", "yue", "ja"):
        code = "zh"
    return _TAGS.get(code, code), float(probability)
