"""Fax figures: pages/s through normalising (TIFF/PDF -> page PNGs + thumbnails) and OCR, as the
fax service runs them (worker threads, a bounded pool of tesseract processes), beside raw
`tesseract` on the same page images with the same models and the same parallelism; and OCR
accuracy (share of characters right) on printed letters in Korean, Chinese, Japanese and English
scanned at standard and fine fax resolution, beside raw `tesseract` on the same pages as they
arrive (fully automatic segmentation, the same language models)."""

from __future__ import annotations

import asyncio
import os
import pathlib
import time

from switchboard.fax.adapters.ocr import Tesseract
from switchboard.fax.domain.document import Limits, normalise
from switchboard.fax.samples import (
    CHINESE,
    ENGLISH,
    FINE,
    KOREAN,
    LETTERS,
    STANDARD,
    character_accuracy,
    fax_letter,
    fax_page,
    pdf,
    tiff,
)

WORKERS = int(os.environ.get("BENCH_FAX_WORKERS", "2"))
ROUNDS = int(os.environ.get("BENCH_FAX_ROUNDS", "2"))


def documents() -> list[bytes]:
    ko, zh, en = fax_page(KOREAN * 3), fax_page(CHINESE * 3), fax_page(ENGLISH * 3)
    return [tiff([ko, en], "group4"), tiff([zh], "group3", t4_2d=True), pdf([en, ko])]


async def run(work: pathlib.Path, nats_url: str) -> dict[str, float]:
    docs = documents()
    limits = Limits()
    ocr = Tesseract(workers=WORKERS)
    loop = asyncio.get_running_loop()

    # normalising alone
    start = time.perf_counter()
    pages = 0
    for _ in range(ROUNDS):
        for doc in docs:
            pages += len((await loop.run_in_executor(None, normalise, doc, limits)).pages)
    normalise_pps = pages / (time.perf_counter() - start)

    # the service's path: normalise, then read every page (script detection + OCR)
    start = time.perf_counter()
    pages = 0
    models: list[tuple[pathlib.Path, str]] = []
    for round_ in range(ROUNDS):
        for i, doc in enumerate(docs):
            document = await loop.run_in_executor(None, normalise, doc, limits)
            texts = await asyncio.gather(*(ocr.read(p.ocr_png, p.ocr_dpi) for p in document.pages))
            pages += len(document.pages)
            if round_ == 0:
                for page, text in zip(document.pages, texts, strict=True):
                    path = work / f"fax-{i}-{page.number}.png"
                    path.write_bytes(page.ocr_png)
                    models.append((path, text.languages))
    pipeline_pps = pages / (time.perf_counter() - start)

    # raw tesseract on the same images with the models the pipeline chose
    slots = asyncio.Semaphore(WORKERS)
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}

    async def raw(path: pathlib.Path, languages: str) -> None:
        async with slots:
            proc = await asyncio.create_subprocess_exec(
                "tesseract", str(path), "stdout", "-l", languages, "--psm", "3",
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, env=env,
            )  # fmt: skip
            await proc.wait()

    start = time.perf_counter()
    for _ in range(ROUNDS):
        await asyncio.gather(*(raw(path, languages) for path, languages in models))
    raw_pps = ROUNDS * len(models) / (time.perf_counter() - start)

    # accuracy on letters at fax resolution: the service's path beside raw tesseract
    service_acc: list[float] = []
    raw_acc: list[float] = []
    for header, lines in LETTERS.values():
        truth = "\n".join([header, *lines])
        for resolution in (STANDARD, FINE):
            data = tiff([fax_letter(header, lines, resolution)], "group3", dpi=resolution)
            page = (await loop.run_in_executor(None, normalise, data, limits)).pages[0]
            read = await ocr.read(page.ocr_png, page.ocr_dpi)
            service_acc.append(character_accuracy(truth, read.text))
            path = work / "letter.png"
            path.write_bytes(page.png)
            code, out = await _tesseract(path, read.languages, env)
            raw_acc.append(character_accuracy(truth, out) if code == 0 else 0.0)
    return {
        "fax_ocr_accuracy_mean": sum(service_acc) / len(service_acc),
        "fax_ocr_accuracy_min": min(service_acc),
        "raw_tesseract_accuracy_mean": sum(raw_acc) / len(raw_acc),
        "raw_tesseract_accuracy_min": min(raw_acc),
        "fax_normalise_pages_per_s": normalise_pps,
        "fax_normalise_ocr_pages_per_s": pipeline_pps,
        "raw_tesseract_pages_per_s": raw_pps,
        "fax_pipeline_over_raw_tesseract": pipeline_pps / raw_pps,
    }


async def _tesseract(path: pathlib.Path, languages: str, env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "tesseract", str(path), "stdout", "-l", languages, "--psm", "3",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")


if __name__ == "__main__":
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(asyncio.run(run(pathlib.Path(tmp), "")), indent=2))
