"""Fax figures: pages/s through normalising (TIFF/PDF -> page PNGs + thumbnails) and OCR, as the
fax service runs them (worker threads, a bounded pool of tesseract processes), beside raw
`tesseract` on the same page images with the same models and the same parallelism."""

from __future__ import annotations

import asyncio
import os
import pathlib
import time

from switchboard.fax.adapters.ocr import Tesseract
from switchboard.fax.domain.document import Limits, normalise
from switchboard.fax.samples import CHINESE, ENGLISH, KOREAN, fax_page, pdf, tiff

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
            texts = await asyncio.gather(*(ocr.read(p.png) for p in document.pages))
            pages += len(document.pages)
            if round_ == 0:
                for page, text in zip(document.pages, texts, strict=True):
                    path = work / f"fax-{i}-{page.number}.png"
                    path.write_bytes(page.png)
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
    return {
        "fax_normalise_pages_per_s": normalise_pps,
        "fax_normalise_ocr_pages_per_s": pipeline_pps,
        "raw_tesseract_pages_per_s": raw_pps,
        "fax_pipeline_over_raw_tesseract": pipeline_pps / raw_pps,
    }


if __name__ == "__main__":
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(asyncio.run(run(pathlib.Path(tmp), "")), indent=2))
