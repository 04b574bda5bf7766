"""The agent screens (inbox, wallboard, QA) speak Korean, Chinese, English and Japanese."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from switchboard.chat.inbox import directory

STATIC = Path(directory.__file__).resolve().parents[1] / "static"
LANGS = ("ko", "zh", "en", "ja")


def test_every_string_exists_in_every_language() -> None:
    tables = {
        lang: json.loads((STATIC / "i18n" / f"{lang}.json").read_text("utf-8")) for lang in LANGS
    }
    for lang, table in tables.items():
        assert set(table) == set(tables["en"]), (lang, set(tables["en"]) ^ set(table))
        assert all(isinstance(v, str) and v for v in table.values()), lang
        # A placeholder the English string fills must be filled in every language too.
        for key, english in tables["en"].items():
            wanted = set(re.findall(r"\{[a-z]+\}", english))
            assert set(re.findall(r"\{[a-z]+\}", table[key])) == wanted, (lang, key)


@pytest.mark.parametrize("page", ["inbox", "wallboard", "qa"])
def test_each_page_offers_every_language(page: str) -> None:
    html = (STATIC / f"{page}.html").read_text("utf-8")
    body = re.search(r"<body [^>]*>", html)
    assert body and 'data-i18n-langs="ko zh en ja"' in body.group(0)
    for select in re.findall(r'<select class="ui-lang"[^>]*>.*?</select>', html, re.S):
        assert re.findall(r'<option value="([a-z]+)"', select) == list(LANGS)


def test_an_agent_may_work_in_japanese() -> None:
    text = f"""
tenants:
  demo:
    agents:
      - id: a-ja
        name: 佐藤
        password: {directory.hash_password("long-enough-1")}
        ui_language: ja
        languages: {{ja: 5}}
"""
    agent = directory.load_text(text).verify("demo", "a-ja", "long-enough-1")
    assert agent.ui_language == "ja"
    with pytest.raises(Exception, match="must be one of ko, zh, en, ja"):
        directory.load_text(text.replace("ui_language: ja", "ui_language: vi"))
