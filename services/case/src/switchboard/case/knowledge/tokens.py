"""Search tokens for knowledge-base text in any script.

Korean, Chinese and Japanese are written without spaces between words (Korean puts particles right
after the noun: "환불요청을"), so a word-splitting tokenizer finds nothing inside a run of CJK
characters. Every run of CJK characters is therefore indexed as its overlapping character bigrams
("환불요청을" -> 환불 불요 요청 청을), and a query is turned into the same bigrams, searched as a
phrase: "환불" or "退款" is found wherever it occurs, with no dictionary. Other scripts are split
into words and lower-cased. Both the SQLite FTS5 table and the PostgreSQL tsvector index hold
these tokens, separated by spaces, so both backends find exactly the same articles.
"""

from __future__ import annotations

import re
import unicodedata

# Han (incl. extension A and compatibility ideographs), Hiragana, Katakana (incl. phonetic
# extensions and the prolonged sound mark), Hangul syllables and jamo.
_CJK = (
    "\u1100-\u11ff\u3040-\u309f\u30a0-\u30ff\u31f0-\u31ff\u3130-\u318f"
    "\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
)
_TOKEN = re.compile(rf"([{_CJK}]+)|([^\W{_CJK}]+)")
MAX_QUERY_TERMS = 32


def normalise(text: str) -> str:
    # NFKC folds full-width Latin and half-width katakana, common in CJK text, to one form.
    return unicodedata.normalize("NFKC", text).casefold()


def _bigrams(run: str) -> list[str]:
    if len(run) == 1:
        return [run]
    return [run[i : i + 2] for i in range(len(run) - 1)]


def terms(text: str) -> list[list[str]]:
    """The text's words, each as the list of tokens that must appear in order (a phrase): a Latin
    word is one token, a CJK run is its bigrams."""
    result: list[list[str]] = []
    for match in _TOKEN.finditer(normalise(text)):
        cjk, word = match.groups()
        result.append(_bigrams(cjk) if cjk else [word])
    return result


def document(text: str) -> str:
    """The text as the space-separated token stream the search index stores."""
    return " ".join(token for term in terms(text) for token in term)


def query_terms(text: str, phrases: bool = True) -> list[list[str]]:
    """A query's distinct phrases, at most MAX_QUERY_TERMS of them, in order. Without `phrases`
    (for "any of these words" suggestions), every bigram of a CJK run is a term of its own, since
    a case's whole sentence will not appear verbatim in an article."""
    seen: dict[tuple[str, ...], None] = {}
    for term in terms(text):
        for t in [term] if phrases else [[token] for token in term]:
            seen.setdefault(tuple(t), None)
            if len(seen) >= MAX_QUERY_TERMS:
                return [list(t) for t in seen]
    return [list(t) for t in seen]


def is_single_cjk(term: list[str]) -> bool:
    """A one-character CJK query word: found as the start of a bigram (a prefix search)."""
    return len(term) == 1 and len(term[0]) == 1 and bool(re.fullmatch(f"[{_CJK}]", term[0]))
