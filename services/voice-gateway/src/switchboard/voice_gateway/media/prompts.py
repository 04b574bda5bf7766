"""Announcements and music on hold, pre-encoded once per codec (PCMU and PCMA) at start so the
media loop only copies frames.

A prompt is spoken in the call's language (ko, zh, en, ja; another language hears English):
an operator's recording `<overrides>/<lang>/<prompt>.wav` when there is one, else the catalogue's
text synthesised by espeak-ng (media.speech, cached on disk under the prompts folder). Music on
hold is the configured WAV file, else a gentle generated arpeggio. Without espeak-ng the gateway
still starts: it logs a warning and plays tone patterns where speech would be."""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from switchboard.voice_gateway.config import Menu
from switchboard.voice_gateway.media import audio, catalogue
from switchboard.voice_gateway.media.g711 import PCMA, PCMU, encode
from switchboard.voice_gateway.media.speech import Espeak, SpeechError

logger = logging.getLogger(__name__)

RATE = audio.RATE
LANGUAGE_MENU = "language-menu"  # composed of each option's `language-option` in its language
SENTENCE_PAUSE = 0.3  # seconds of silence after a synthesised sentence
OPTION_PAUSE = 0.2  # between the language menu's options

# Tone patterns: (frequency Hz or (f1, f2), duration s); 0 Hz is silence.
Tone = tuple[float | tuple[float, float], float]
_BEEP: list[Tone] = [(660.0, 0.15), (0, 0.1)]
# The music on hold when none is configured, and the tone patterns played instead of speech
# when espeak-ng is missing.
GENERATED: dict[str, list[Tone]] = {
    "welcome": [(523.0, 0.15), (659.0, 0.15), (784.0, 0.3), (0, 0.2)],
    "language-option": [(440.0, 0.2), (0, 0.1), (550.0, 0.2), (0, 0.3)],
    "topic-menu": [(660.0, 0.2), (0, 0.1), (550.0, 0.2), (0, 0.1), (440.0, 0.2), (0, 0.3)],
    "please-hold": [(784.0, 0.2), (0, 0.1), (659.0, 0.3), (0, 0.3)],
    "callback-offer": [(1200.0, 0.15), (0, 0.1), (1200.0, 0.15), (0, 0.3)],
    "callback-confirmed": [(1200.0, 0.4), (0, 0.2)],
    "goodbye": [(600.0, 0.3), (400.0, 0.3), (0, 0.2)],
    "invalid": [(300.0, 0.4), (0, 0.2)],
    # After the agent hangs up: "please rate us from 1 to 5", then thanks.
    "survey": [(523.0, 0.2), (0, 0.1), (587.0, 0.2), (0, 0.1), (659.0, 0.2), (0, 0.3)],
    "survey-thanks": [(784.0, 0.2), (988.0, 0.3), (0, 0.2)],
    # A slow arpeggio that loops: the music on hold.
    catalogue.MUSIC_ON_HOLD: [
        (262.0, 0.4),
        (330.0, 0.4),
        (392.0, 0.4),
        (523.0, 0.4),
        (392.0, 0.4),
        (330.0, 0.4),
        (0, 0.2),
    ],
}


class PromptError(ValueError):
    pass


def synthesise(tones: list[Tone]) -> bytes:
    out = bytearray()
    for freq, seconds in tones:
        n = int(RATE * seconds)
        freqs = freq if isinstance(freq, tuple) else (freq,)
        ramp = max(1, int(RATE * 0.01))
        for i in range(n):
            if not freqs[0]:
                value = 0.0
            else:
                value = sum(math.sin(2 * math.pi * f * i / RATE) for f in freqs) / len(freqs)
            env = min(1.0, i / ramp, (n - i) / ramp)
            out += struct.pack("<h", int(value * env * 8000))
    return bytes(out)


class Prompts:
    """(language, prompt name) -> G.711 audio per payload type.

    `folder` is writable state: the speech cache lives in `folder/cache` unless `cache_dir`
    says where. `overrides` is the operators' folder of `<lang>/<prompt>.wav` recordings."""

    def __init__(
        self,
        folder: Path,
        *,
        cache_dir: Path | None = None,
        overrides: Path | None = None,
        music_on_hold: Path | None = None,
        espeak: str = "espeak-ng",
    ) -> None:
        self.folder = folder
        self.overrides = overrides
        self.music_on_hold = music_on_hold
        self.speech = Espeak(cache_dir or folder / "cache", espeak)
        self.spoken = True  # False: espeak-ng was missing, tones play instead
        self._pcm: dict[tuple[str, str], bytes] = {}
        self._audio: dict[tuple[str, str, int], bytes] = {}
        self._overridden: set[tuple[str, str]] = set()

    # ---- loading ------------------------------------------------------------------------------

    def names(self, extra: Iterable[str], keys: Iterable[str]) -> set[str]:
        """Every prompt name a call may hear: the catalogue's, each template once per key that
        the configuration uses, and the configuration's own menu prompts (`extra`)."""
        names = {n for n in catalogue.TEXTS[catalogue.FALLBACK] if n not in catalogue.TEMPLATES}
        names |= {catalogue.template_name(t, k) for t in catalogue.TEMPLATES for k in keys}
        names |= set(extra) - {LANGUAGE_MENU}
        return names

    def load(self, extra: Iterable[str] = (), keys: Iterable[str] = ("*", "1", "2", "3")) -> None:
        """Read the overrides and synthesise (or take from the cache) everything else, for every
        language. `keys`: the keys a template prompt may name (the language menus' options and
        the callback keys)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.overrides is not None and not self.overrides.is_dir():
            raise PromptError(f"prompt overrides: {self.overrides} is not a folder")
        names = self.names(extra, keys)
        todo: list[tuple[str, str, str]] = []  # (language, name, text) to speak
        for lang in catalogue.LANGUAGES:
            for name in sorted(names | {LANGUAGE_MENU}):
                override = self._override(lang, name)
                if override is not None:
                    self._pcm[(lang, name)] = audio.read_wav(override)
                    self._overridden.add((lang, name))
                    continue
                words = catalogue.text(lang, name)
                if words is None:
                    continue  # a configured prompt with no text: found below, or an error
                todo.append((lang, name, words))
        self._speak(todo)
        for name in sorted(set(extra) - {LANGUAGE_MENU}):
            self._configured_prompt(name)
        self._pcm[("", catalogue.MUSIC_ON_HOLD)] = (
            audio.read_wav(self.music_on_hold)
            if self.music_on_hold is not None
            else synthesise(GENERATED[catalogue.MUSIC_ON_HOLD])
        )
        for (lang, name), pcm in self._pcm.items():
            for pt in (PCMU, PCMA):
                self._audio[(lang, name, pt)] = encode(pcm, pt)

    def _override(self, lang: str, name: str) -> Path | None:
        """The operator's recording of `name` in `lang` (a template's covers every key)."""
        if self.overrides is None:
            return None
        for stem in dict.fromkeys((name, name.partition(":")[0])):
            path = self.overrides / lang / f"{stem}.wav"
            if path.is_file():
                return path
        return None

    def _speak(self, todo: list[tuple[str, str, str]]) -> None:
        if not todo:
            return
        uncached = [t for t in todo if not self.speech.cached(catalogue.VOICES[t[0]], t[2])]
        if uncached:
            try:
                self.speech.executable()
            except SpeechError as exc:
                logger.warning("%s; playing tone patterns instead of speech", exc)
                self.spoken = False
                for lang, name, _ in todo:
                    base = name.partition(":")[0]
                    self._pcm[(lang, name)] = synthesise(GENERATED.get(base, _BEEP))
                return
            logger.info("synthesising %d prompts with espeak-ng", len(uncached))

        def one(item: tuple[str, str, str]) -> tuple[tuple[str, str], bytes]:
            lang, name, words = item
            pcm = self.speech.speak(catalogue.VOICES[lang], words)
            if words.rstrip().endswith((".", "。")):
                pcm += audio.silence(SENTENCE_PAUSE)
            return (lang, name), pcm

        with ThreadPoolExecutor(max_workers=4) as pool:
            for key, pcm in pool.map(one, todo):
                self._pcm[key] = pcm

    def _configured_prompt(self, name: str) -> None:
        """A menu prompt the configuration names that the catalogue has no text for: recorded in
        some language; the other languages play the English recording, else any other."""
        have = [lang for lang in catalogue.LANGUAGES if (lang, name) in self._pcm]
        if not have:
            raise PromptError(
                f"prompt {name!r}: the configuration names it, the catalogue has no text for it "
                f"and there is no recording <overrides>/<lang>/{name}.wav"
                + ("" if self.overrides is not None else " (no prompt overrides folder is set)")
            )
        source = catalogue.FALLBACK if catalogue.FALLBACK in have else have[0]
        for lang in catalogue.LANGUAGES:
            if (lang, name) not in self._pcm:
                logger.warning(
                    "prompt %r has no %s recording: playing the %s one", name, lang, source
                )
                self._pcm[(lang, name)] = self._pcm[(source, name)]

    # ---- playing ------------------------------------------------------------------------------

    def has(self, name: str, language: str = catalogue.FALLBACK) -> bool:
        return (self._lang(name, language), name, PCMU) in self._audio

    def overridden(self, name: str, language: str) -> bool:
        return (catalogue.language(language), name) in self._overridden

    @staticmethod
    def _lang(name: str, language: str) -> str:
        return "" if name == catalogue.MUSIC_ON_HOLD else catalogue.language(language)

    def get(self, name: str, payload_type: int, language: str = catalogue.FALLBACK) -> bytes:
        return self._audio[(self._lang(name, language), name, payload_type)]

    def pcm(self, name: str, language: str = catalogue.FALLBACK) -> bytes:
        """The 8 kHz 16-bit PCM of a prompt (what `get` encodes)."""
        return self._pcm[(self._lang(name, language), name)]

    def sequence(
        self, names: list[str], payload_type: int, language: str = catalogue.FALLBACK
    ) -> bytes:
        return b"".join(self.get(n, payload_type, language) for n in names)

    def menu(self, menu: Menu, payload_type: int, language: str) -> bytes:
        """A menu's prompt. The language menu, unless recorded, is each option in its own
        language ("한국어는 1번 ..., For English, press 3"); options in a language the catalogue
        does not speak are left out (record the menu to name them)."""
        if menu.prompt != LANGUAGE_MENU or self.overridden(LANGUAGE_MENU, language):
            return self.get(menu.prompt, payload_type, language)
        silence = encode(audio.silence(OPTION_PAUSE), payload_type)
        parts = []
        for key, option in menu.options.items():
            if option in catalogue.TEXTS:
                parts.append(
                    self.get(catalogue.template_name("language-option", key), payload_type, option)
                )
        return silence.join(parts)
