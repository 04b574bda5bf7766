"""OCR with the `tesseract` binary (Debian's tesseract-ocr and its language packs).

Each page runs in its own tesseract process, off the event loop, at most `workers` at a time.
The script is detected first (tesseract's OSD, a fraction of a second) and chooses the language
models (Hangul -> kor+eng, Han -> chi_sim+eng...); when OSD cannot tell, every configured
model is used at once, which is slower but reads any of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_SCRIPTS = {
    "Hangul": "kor+eng",
    "Korean": "kor+eng",
    "Han": "chi_sim+eng",
    "HanS": "chi_sim+eng",
    "HanT": "chi_tra+eng",
    "Japanese": "jpn+eng",
    "Katakana": "jpn+eng",
    "Hiragana": "jpn+eng",
    "Latin": "eng",
}
DEFAULT_FALLBACK = "kor+chi_sim+chi_tra+jpn+eng"
_SCRIPT_RE = re.compile(r"^Script:\s*(\S+)", re.MULTILINE)


class OcrError(Exception):
    """tesseract could not read the page (not the document's fault: retried by redelivery)."""


@dataclass(frozen=True)
class PageText:
    text: str
    confidence: float  # mean word confidence 0..100, -1 when no word was found
    languages: str
    script: str


def parse_scripts(spec: str) -> dict[str, str]:
    """Parse "Hangul=kor+eng,Han=chi_sim+eng" into a script -> models map."""
    mapping: dict[str, str] = {}
    for item in spec.split(","):
        if "=" in item:
            script, models = item.split("=", 1)
            mapping[script.strip()] = models.strip()
    return mapping


def mean_confidence(tsv: str) -> float:
    """Mean confidence of the recognised words in tesseract's TSV output (-1 if none)."""
    confidences: list[float] = []
    for row in csv.DictReader(io.StringIO(tsv), delimiter="\t", quoting=csv.QUOTE_NONE):
        try:
            conf = float(row.get("conf") or -1)
        except ValueError:
            continue
        if row.get("level") == "5" and conf >= 0 and (row.get("text") or "").strip():
            confidences.append(conf)
    return round(sum(confidences) / len(confidences), 2) if confidences else -1.0


class Tesseract:
    def __init__(
        self,
        binary: str = "tesseract",
        workers: int = 2,
        scripts: dict[str, str] | None = None,
        fallback: str = DEFAULT_FALLBACK,
        timeout: float = 120.0,
    ) -> None:
        self.binary = binary
        self.scripts = scripts or dict(DEFAULT_SCRIPTS)
        self.fallback = fallback
        self.timeout = timeout
        self._slots = asyncio.Semaphore(max(1, workers))
        # One tesseract per page already uses the cores; OpenMP threads inside it only contend.
        self._env = {**os.environ, "OMP_THREAD_LIMIT": "1"}

    async def _run(self, *args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            self.binary,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._env,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.timeout)
        except (TimeoutError, asyncio.CancelledError):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")

    async def detect_script(self, image: Path) -> str:
        """tesseract's script detection (OSD) for the page, or "" when it cannot tell."""
        code, out, _ = await self._run(str(image), "stdout", "--psm", "0", "-l", "osd")
        match = _SCRIPT_RE.search(out)
        return match.group(1) if code == 0 and match else ""

    async def read(self, png: bytes) -> PageText:
        """OCR one page image (PNG bytes): its text, mean confidence, models used and script."""
        async with self._slots:
            with tempfile.TemporaryDirectory(prefix="sb-fax-ocr-") as tmp:
                image = Path(tmp) / "page.png"
                image.write_bytes(png)
                try:
                    script = await self.detect_script(image)
                    models = self.scripts.get(script, self.fallback)
                    base = Path(tmp) / "out"
                    args = (str(image), str(base), "-l", models, "--psm", "3", "txt", "tsv")
                    code, _, err = await self._run(*args)
                except TimeoutError as exc:
                    raise OcrError(f"tesseract took longer than {self.timeout:.0f}s") from exc
                except FileNotFoundError as exc:
                    raise OcrError(f"{self.binary} is not installed") from exc
                if code != 0:
                    raise OcrError(f"tesseract exited {code}: {err.strip()[-300:]}")
                text = base.with_suffix(".txt").read_text(errors="replace")
                tsv = base.with_suffix(".tsv").read_text(errors="replace")
        return PageText(text.strip(), mean_confidence(tsv), models, script)
