"""OCR with the `tesseract` binary (Debian's tesseract-ocr and its language packs).

Each page runs in its own tesseract process, off the event loop, at most `workers` at a time.
The page arrives resampled to square pixels at 300 dpi (`document.ocr_image`). Per page:

- the script is detected first (tesseract's OSD, a fraction of a second) and chooses the
  language models (Hangul -> kor+eng, Han -> chi_sim+eng...); when OSD cannot tell, every
  configured model is used at once, which is slower but reads any of them;
- the page segmentation is chosen from the page's layout (`segmentation`): a page whose text
  runs in one column, as letters and most faxes do, is read as one column of lines of varying
  size (psm 4), which keeps the small header line a fax machine prints at the top and short
  lines that the fully automatic mode (psm 3) drops as noise; a page with columns side by side
  is left to the automatic layout analysis; when the chosen mode reads with low confidence,
  sparse text (psm 11, for forms) is tried too and the better reading kept.
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

from PIL import Image

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


SINGLE_COLUMN = 4  # tesseract --psm: one column of text of variable sizes
AUTOMATIC = 3  # fully automatic page segmentation
SPARSE = 11  # as much text as possible, in no particular order
LOW_CONFIDENCE = 60.0


@dataclass(frozen=True)
class PageText:
    text: str
    confidence: float  # mean word confidence 0..100, -1 when no word was found
    languages: str
    script: str
    segmentation: int = 0  # the tesseract page segmentation mode the text was read with


def segmentation(png: bytes) -> int:
    """The page segmentation mode for a page: AUTOMATIC when its text stands in two or more
    columns side by side (a blank gutter crosses the middle of the text block from top to
    bottom), otherwise SINGLE_COLUMN."""
    with Image.open(io.BytesIO(png)) as page:
        ink = page.convert("L").point(lambda v: 255 if v < 128 else 0)
    box = ink.getbbox()
    if box is None:
        return AUTOMATIC
    block = ink.crop(box)
    # darkness of each column of pixels across the text block, averaged over its height
    profile = list(block.resize((block.width, 1), Image.Resampling.BOX).tobytes())
    start, end = block.width // 5, block.width * 4 // 5
    gutter = run = 0
    for value in profile[start:end]:
        run = run + 1 if value == 0 else 0
        gutter = max(gutter, run)
    # a gutter wider than 2 % of the page between text on both sides
    return AUTOMATIC if gutter > page.width * 0.02 else SINGLE_COLUMN


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

    async def read(self, png: bytes, dpi: float = 300.0) -> PageText:
        """OCR one page image (PNG bytes with square pixels at `dpi`): its text, mean
        confidence, models used, script and the segmentation mode used."""
        async with self._slots:
            with tempfile.TemporaryDirectory(prefix="sb-fax-ocr-") as tmp:
                image = Path(tmp) / "page.png"
                image.write_bytes(png)
                try:
                    mode = await asyncio.to_thread(segmentation, png)
                    script = await self.detect_script(image)
                    models = self.scripts.get(script, self.fallback)
                    best = await self._recognise(image, models, mode, dpi)
                    if 0 <= best[1] < LOW_CONFIDENCE and mode != SPARSE:
                        sparse = await self._recognise(image, models, SPARSE, dpi)
                        if sparse[1] > best[1]:
                            best = sparse
                except TimeoutError as exc:
                    raise OcrError(f"tesseract took longer than {self.timeout:.0f}s") from exc
                except FileNotFoundError as exc:
                    raise OcrError(f"{self.binary} is not installed") from exc
        text, confidence, used = best
        return PageText(text, confidence, models, script, used)

    async def _recognise(
        self, image: Path, models: str, mode: int, dpi: float
    ) -> tuple[str, float, int]:
        base = image.parent / f"out-{mode}"
        args = (str(image), str(base), "-l", models, "--psm", str(mode), "--dpi", f"{dpi:.0f}")
        code, _, err = await self._run(*args, "txt", "tsv")
        if code != 0:
            raise OcrError(f"tesseract exited {code}: {err.strip()[-300:]}")
        text = base.with_suffix(".txt").read_text(errors="replace")
        tsv = base.with_suffix(".tsv").read_text(errors="replace")
        return text.strip(), mean_confidence(tsv), mode
