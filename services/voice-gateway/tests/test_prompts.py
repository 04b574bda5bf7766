"""The prompt catalogue and how a prompt is found: every prompt in every language, numbers
composed from fragments that exist, the operators' recordings before synthesis, music on hold
from a file, espeak-ng's output resampled to the telephone's 8 kHz, and a gateway without
espeak-ng still starting (on tones, with a warning)."""

from __future__ import annotations

import array
import logging
import math
import shutil
from pathlib import Path

import pytest

from switchboard.voice_gateway import config
from switchboard.voice_gateway.config import Menu
from switchboard.voice_gateway.domain import ivr
from switchboard.voice_gateway.media import audio, catalogue
from switchboard.voice_gateway.media.g711 import PCMA, PCMU, encode
from switchboard.voice_gateway.media.prompts import PromptError, Prompts

ESPEAK = shutil.which("espeak-ng")
needs_espeak = pytest.mark.skipif(ESPEAK is None, reason="espeak-ng is not installed")

PLAYED = [  # every prompt the call flow plays by name
    "welcome",
    "topic-menu",
    "please-hold",
    "invalid",
    "callback-confirmed",
    "goodbye",
    "connecting",
    "survey",
    "survey-thanks",
]


def tone(freq: float, seconds: float, rate: int) -> bytes:
    n = int(rate * seconds)
    return array.array(
        "h", (int(8000 * math.sin(2 * math.pi * freq * i / rate)) for i in range(n))
    ).tobytes()


def test_every_prompt_exists_in_every_language() -> None:
    assert set(catalogue.LANGUAGES) == {"ko", "zh", "en", "ja"}
    keys = set(catalogue.TEXTS["en"])
    for lang in catalogue.LANGUAGES:
        assert set(catalogue.TEXTS[lang]) == keys, lang
        for name in PLAYED:
            assert catalogue.text(lang, name), (lang, name)
        for n in range(0, 1000):
            for fragment in ivr.number(n):
                assert catalogue.text(lang, fragment), (lang, n, fragment)
        for name in ivr.announcement(37, 300.0, "*") + ivr.announcement(1, 30.0, "#"):
            assert catalogue.text(lang, name), (lang, name)
        for key in catalogue.KEYS:
            words = catalogue.text(lang, f"language-option:{key}")
            assert words and "{key}" not in words, (lang, key)
            if lang != "zh":  # (Pinyin has tone digits) the key is said as a word
                assert key not in words, (lang, key, words)


def test_templates_need_a_key_and_plain_prompts_take_none() -> None:
    assert catalogue.text("en", "callback-offer:*") == (
        "To hang up and be called back when it is your turn, press star."
    )
    assert catalogue.text("en", "callback-offer") is None
    assert catalogue.text("en", "callback-offer:x") is None
    assert catalogue.text("en", "welcome:1") is None
    assert catalogue.text("en", "no-such-prompt") is None


def test_texts_are_what_the_voices_read() -> None:
    """Japanese in kana (the ja voice reads no kanji); Mandarin in tone-numbered Pinyin for the
    cmn-latn-pinyin voice (Debian's Mandarin dictionary reads few characters)."""
    for text in catalogue.TEXTS["ja"].values():
        assert not any("\u4e00" <= c <= "\u9fff" for c in text), text
    for text in catalogue.TEXTS["zh"].values():
        assert text.isascii(), text
    assert catalogue.VOICES["zh"] == "cmn-latn-pinyin"


def test_another_language_hears_english() -> None:
    assert catalogue.language("fr") == "en"
    assert catalogue.language("ja") == "ja"


def test_resampling_keeps_the_telephone_band_and_removes_what_would_alias() -> None:
    def level(pcm: array.array[int]) -> float:
        return math.sqrt(sum(s * s for s in pcm[400:-400]) / max(1, len(pcm) - 800))

    kept = array.array("h")
    kept.frombytes(tone(1000, 0.5, 22050))
    out = audio.resample(kept, 22050)
    assert len(out) == 4000  # 0.5 s at 8 kHz
    assert level(out) == pytest.approx(level(kept), rel=0.05)
    high = array.array("h")
    high.frombytes(tone(6000, 0.5, 22050))  # above 4 kHz: would fold down to 2 kHz
    assert level(audio.resample(high, 22050)) < 0.01 * level(high)


def write(path: Path, pcm: bytes, rate: int = 8000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    audio.write_wav(path, pcm, rate)
    return path


def no_espeak(tmp_path: Path, **kwargs: object) -> Prompts:
    return Prompts(tmp_path / "state", espeak=str(tmp_path / "no-espeak-ng"), **kwargs)  # type: ignore[arg-type]


def test_without_espeak_the_gateway_warns_and_plays_tones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    prompts = no_espeak(tmp_path)
    with caplog.at_level(logging.WARNING):
        prompts.load()
    assert not prompts.spoken
    assert "is not installed" in caplog.text and "apt-get install espeak-ng" in caplog.text
    for lang in catalogue.LANGUAGES:
        for name in PLAYED:
            assert prompts.get(name, PCMU, lang)


def test_an_operators_recording_replaces_the_prompt_in_its_language(tmp_path: Path) -> None:
    overrides = tmp_path / "recordings"
    recorded = tone(440, 0.5, 16000)  # recorded at 16 kHz: resampled to 8 kHz
    write(overrides / "ko" / "welcome.wav", recorded, 16000)
    write(overrides / "en" / "callback-offer.wav", tone(500, 0.25, 8000))
    prompts = no_espeak(tmp_path, overrides=overrides)
    prompts.load()
    expected = audio.read_wav(overrides / "ko" / "welcome.wav")
    assert len(expected) == 2 * 4000
    assert prompts.pcm("welcome", "ko") == expected
    assert prompts.get("welcome", PCMA, "ko") == encode(expected, PCMA)
    assert prompts.pcm("welcome", "en") != expected  # the other languages keep theirs
    # A template's recording covers every key.
    assert prompts.pcm("callback-offer:*", "en") == prompts.pcm("callback-offer:1", "en")
    assert prompts.overridden("callback-offer:*", "en")
    assert not prompts.overridden("callback-offer:*", "ko")


def test_a_recorded_language_menu_is_played_as_it_is(tmp_path: Path) -> None:
    overrides = tmp_path / "recordings"
    write(overrides / "ko" / "language-menu.wav", tone(300, 0.4, 8000))
    prompts = no_espeak(tmp_path, overrides=overrides)
    prompts.load(("language-menu",), "123")
    menu = Menu("language-menu", {"1": "ko", "2": "zh", "3": "en"})
    assert prompts.menu(menu, PCMU, "ko") == encode(tone(300, 0.4, 8000), PCMU)
    # Not recorded in English: each option in its own language, one after the other.
    composed = prompts.menu(menu, PCMU, "en")
    for key, lang in menu.options.items():
        assert prompts.get(f"language-option:{key}", PCMU, lang) in composed


def test_a_configured_prompt_needs_a_recording(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match=r"'holiday-menu'.*no recording"):
        no_espeak(tmp_path).load(("holiday-menu",))
    overrides = tmp_path / "recordings"
    write(overrides / "en" / "holiday-menu.wav", tone(300, 0.2, 8000))
    prompts = no_espeak(tmp_path, overrides=overrides)
    prompts.load(("holiday-menu",))
    assert prompts.pcm("holiday-menu", "ja") == prompts.pcm("holiday-menu", "en")


def test_music_on_hold_from_a_file_or_a_gentle_arpeggio(tmp_path: Path) -> None:
    music = write(tmp_path / "music.wav", tone(220, 1.0, 44100), 44100)
    prompts = no_espeak(tmp_path, music_on_hold=music)
    prompts.load()
    assert prompts.pcm("music-on-hold", "ko") == audio.read_wav(music)
    assert len(prompts.pcm("music-on-hold")) == 2 * 8000
    default = no_espeak(tmp_path / "b")
    default.load()
    assert len(default.pcm("music-on-hold")) > 2 * 8000  # the generated arpeggio


def test_bad_recordings_are_named(tmp_path: Path) -> None:
    (tmp_path / "recordings" / "en").mkdir(parents=True)
    (tmp_path / "recordings" / "en" / "welcome.wav").write_bytes(b"not a wav")
    with pytest.raises(audio.AudioError, match=r"welcome\.wav: not a PCM WAV"):
        no_espeak(tmp_path, overrides=tmp_path / "recordings").load()
    with pytest.raises(PromptError, match="is not a folder"):
        no_espeak(tmp_path, overrides=tmp_path / "missing").load()


def test_the_configuration_names_recordings_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "voice.yaml"
    path.write_text(
        "prompts:\n  overrides: recordings\n  music_on_hold: /srv/music.wav\n"
        'numbers:\n  "+1555":\n    tenant: demo\n    callback_key: "#"\n'
        '    language_menu: {prompt: language-menu, options: {"7": ko}}\n'
    )
    cfg = config.load(str(path))
    assert cfg.prompt_overrides == str(tmp_path / "recordings")
    assert cfg.music_on_hold == "/srv/music.wav"
    assert cfg.prompt_keys == {"#", "7"}
    with pytest.raises(config.ConfigError, match=r"prompts\.music: unknown field"):
        config.load_text("prompts:\n  music: x.wav\n", "v.yaml")


@needs_espeak
def test_espeak_speaks_each_language_at_8_khz_and_caches_it(tmp_path: Path) -> None:
    prompts = Prompts(tmp_path / "state")
    prompts.load()
    assert prompts.spoken
    first = prompts.speech.synthesised
    assert first > 4 * 28  # every language's phrases and number fragments
    for lang in catalogue.LANGUAGES:
        pcm = prompts.pcm("welcome", lang)
        assert 1.0 < len(pcm) / 2 / 8000 < 8.0, lang
    again = Prompts(tmp_path / "state")
    again.load()
    assert again.speech.synthesised == 0  # all from the cache
    assert again.pcm("position", "zh") == prompts.pcm("position", "zh")
    cached = list((tmp_path / "state" / "cache").glob("*.wav"))
    assert len(cached) >= first - 8  # texts shared by two prompts are one file
