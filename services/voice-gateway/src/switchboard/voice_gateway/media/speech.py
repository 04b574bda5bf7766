"""Speech synthesis with Debian's espeak-ng: text read by a voice, resampled from espeak-ng's
22 050 Hz to the telephone's 8 kHz and cached on disk, keyed by voice and text, so a restart
speaks from the cache without running espeak-ng again."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from switchboard.voice_gateway.media import audio

SPEED = 150  # words per minute: a little slower than espeak-ng's 175, for the telephone
FORMAT = "8k16-trim-v1"  # part of the cache key: what the cached file holds


class SpeechError(RuntimeError):
    pass


class Espeak:
    def __init__(self, cache_dir: Path, program: str = "espeak-ng") -> None:
        self.cache_dir = cache_dir
        self.program = program
        self.synthesised = 0  # texts spoken by espeak-ng (not from the cache)

    def cache_path(self, voice: str, text: str) -> Path:
        key = hashlib.sha256(f"{FORMAT}\0{voice}\0{SPEED}\0{text}".encode()).hexdigest()
        return self.cache_dir / f"{voice}-{key[:32]}.wav"

    def cached(self, voice: str, text: str) -> bool:
        return self.cache_path(voice, text).exists()

    def executable(self) -> str:
        """espeak-ng's path, or a SpeechError saying how to install it."""
        found = shutil.which(self.program)
        if found is None:
            raise SpeechError(
                f"{self.program} is not installed, and the voice gateway synthesises its spoken "
                "prompts with it: install Debian's espeak-ng (`make system-deps`, or "
                "`apt-get install espeak-ng`), or record every prompt (docs/voice.md, Prompts)"
            )
        return found

    def speak(self, voice: str, text: str) -> bytes:
        """`text` read by `voice` as 8 kHz 16-bit mono PCM, from the cache when it is there."""
        path = self.cache_path(voice, text)
        if path.exists():
            return audio.read_wav(path)
        program = self.executable()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.cache_dir) as tmp:
            out = Path(tmp) / "speech.wav"
            result = subprocess.run(
                [program, "-v", voice, "-s", str(SPEED), "-w", str(out), "--", text],
                capture_output=True,
                timeout=60,
                check=False,
            )
            if result.returncode != 0 or not out.exists():
                raise SpeechError(
                    f"{self.program} -v {voice} failed ({result.returncode}): "
                    f"{result.stderr.decode(errors='replace').strip()}"
                )
            pcm = audio.trim(audio.read_wav(out))
        audio.write_wav(path, pcm)
        self.synthesised += 1
        return pcm
