"""Sealed call recordings opened a byte range at a time, and their waveform's peaks."""

from __future__ import annotations

import io
import os
import struct

import pytest

from switchboard.core import recording_seal
from switchboard.core.recording_seal import CHUNK, SealedRecording, SealError, peaks, seal

KEY = os.urandom(32)


def sealed(data: bytes, tenant: str = "demo", contact: str = "c-1") -> bytes:
    out = io.BytesIO()
    seal(KEY, tenant, contact, io.BytesIO(data), out)
    return out.getvalue()


def wav(left: list[int], right: list[int], rate: int = 8000) -> bytes:
    frames = b"".join(struct.pack("<hh", a, b) for a, b in zip(left, right, strict=True))
    return (
        b"RIFF"
        + struct.pack("<I", 36 + len(frames))
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 2, rate, rate * 4, 4, 16)
        + b"data"
        + struct.pack("<I", len(frames))
        + frames
    )


@pytest.mark.parametrize("size", [1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17])
def test_any_range_reads_the_bytes_sealed(size: int) -> None:
    data = os.urandom(size)
    rec = SealedRecording(KEY, "demo", "c-1", sealed(data))
    assert rec.size == size
    assert rec.read() == data
    for start, stop in [(0, 1), (size - 1, size), (CHUNK - 3, CHUNK + 3), (size // 2, size + 99)]:
        assert rec.read(start, stop) == data[start:stop]
    assert rec.read(size, size + 10) == b""


def test_another_tenants_or_contacts_recording_does_not_open() -> None:
    blob = sealed(b"x" * 100)
    with pytest.raises(SealError):
        SealedRecording(KEY, "acme", "c-1", blob)
    with pytest.raises(SealError):
        SealedRecording(KEY, "demo", "c-2", blob)
    with pytest.raises(SealError):
        SealedRecording(os.urandom(32), "demo", "c-1", blob)


def test_an_altered_chunk_is_refused_when_read() -> None:
    data = os.urandom(2 * CHUNK)
    blob = bytearray(sealed(data))
    blob[-5] ^= 1  # in the last chunk
    rec = SealedRecording(KEY, "demo", "c-1", bytes(blob))
    assert rec.read(0, 10) == data[:10]  # the first chunk is intact
    with pytest.raises(SealError):
        rec.read(CHUNK + 1, CHUNK + 2)


def test_a_cut_recording_does_not_open() -> None:
    blob = sealed(os.urandom(2 * CHUNK))
    with pytest.raises(SealError):
        SealedRecording(KEY, "demo", "c-1", blob[:-10])


def test_peaks_per_channel_and_duration() -> None:
    left = [30000] * 4000 + [0] * 4000
    right = [0] * 4000 + [-16384] * 4000
    duration, (lp, rp) = peaks(wav(left, right), 10)
    assert duration == pytest.approx(1.0)
    assert lp == [pytest.approx(30000 / 32767, abs=1e-3)] * 5 + [0] * 5
    assert rp == [0] * 5 + [pytest.approx(16384 / 32767, abs=1e-3)] * 5


def test_peaks_of_something_else_are_refused() -> None:
    with pytest.raises(SealError):
        peaks(b"not a wav at all" * 10, 10)


def test_the_master_key_is_configured_or_derived() -> None:
    import base64

    key = os.urandom(32)
    assert recording_seal.master_key(base64.b64encode(key).decode(), "", "s") == key
    derived = recording_seal.master_key("", "", "secret")
    assert len(derived) == 32 and derived != recording_seal.master_key("", "", "other")
    with pytest.raises(ValueError):
        recording_seal.master_key("c2hvcnQ=", "", "s")


def test_peaks_read_slice_by_slice_match_the_whole() -> None:
    left = [(n * 37) % 20000 - 10000 for n in range(24000)]
    right = [(n * 91) % 30000 - 15000 for n in range(24000)]
    data = wav(left, right)
    reads: list[int] = []

    def read(start: int, stop: int) -> bytes:
        reads.append(stop - start)
        return data[start:stop]

    assert recording_seal.peaks_of(read, len(data), 60) == peaks(data, 60)
    assert max(reads) < len(data) // 10  # never the whole recording at once


# A recording sealed before the key id was written (SBREC1), under the key bytes(range(32)).
OLD_FORMAT = (
    "U0JSRUMxCgA8D1UnOVn/E9yBO/3p0dTdTauKJsdYNn3RIk6Qv+Vb7MdQ+oEIOrv9HhziFR6y+ezFq5ccAtj4AMOKUBCB"
    "U3SSHh4xly0AAABcRI7nr3dzDMDBESdDKU7rLgwP3+0FMFxtzAzwm4vxoy/SmPsFJfY+3grkhcJBbMX4LwBBa7GRhteI"
    "9Qqj0JHUnkrym4SDKlic16FaS0eBXJCewAXLrVyMbvQYKRw="
)


def test_after_the_key_changes_older_recordings_open_with_the_old_key() -> None:
    old, new = os.urandom(32), os.urandom(32)
    data = os.urandom(CHUNK + 5)
    before = io.BytesIO()
    seal(old, "demo", "c-1", io.BytesIO(data), before)
    assert recording_seal.key_id(old) in before.getvalue()[:32]  # the header names its key
    rotated = recording_seal.RecordingKeys(new, (old,))
    assert SealedRecording(rotated, "demo", "c-1", before.getvalue()).read() == data
    out = io.BytesIO()
    recording_seal.open_sealed(rotated, "demo", "c-1", io.BytesIO(before.getvalue()), out)
    assert out.getvalue() == data
    after = io.BytesIO()
    seal(rotated, "demo", "c-2", io.BytesIO(data), after)  # new recordings: the new key
    assert SealedRecording(new, "demo", "c-2", after.getvalue()).read() == data
    with pytest.raises(SealError, match="sealed under the key"):
        SealedRecording(old, "demo", "c-2", after.getvalue())
    # Without the old key listed, the older recording does not open, and says which key it needs.
    with pytest.raises(SealError, match=recording_seal.key_id(old).hex()):
        SealedRecording(new, "demo", "c-1", before.getvalue())


def test_a_recording_sealed_before_key_ids_still_opens() -> None:
    import base64

    blob = base64.b64decode(OLD_FORMAT)
    assert blob.startswith(recording_seal.MAGIC_V1)
    key = bytes(range(32))
    expected = b"RIFF-old-recording-" * 4
    assert SealedRecording(key, "demo", "c-old", blob).read() == expected
    # ... also when that key is now an old one: every configured key is tried.
    keys = recording_seal.RecordingKeys(os.urandom(32), (os.urandom(32), key))
    assert SealedRecording(keys, "demo", "c-old", blob).read() == expected
    out = io.BytesIO()
    recording_seal.open_sealed(keys, "demo", "c-old", io.BytesIO(blob), out)
    assert out.getvalue() == expected
    with pytest.raises(SealError):
        SealedRecording(keys, "demo", "c-other", blob)


def test_old_keys_are_read_one_a_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import base64

    a, b = os.urandom(32), os.urandom(32)
    path = tmp_path / "old-keys"
    path.write_text(f"# retired 2026-01\n{base64.b64encode(a).decode()}\n\n"
                    f"  {base64.b64encode(b).decode()}  \n")  # fmt: skip
    assert recording_seal.old_keys(str(path)) == (a, b)
    assert recording_seal.old_keys(str(tmp_path / "absent")) == ()  # no old keys in the Secret
    path.write_text(base64.b64encode(a).decode() + "\nc2hvcnQ=\n")
    with pytest.raises(ValueError, match=r"old-keys:2: an old recording key"):
        recording_seal.old_keys(str(path))


def test_production_needs_a_key_of_its_own_that_reads(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import base64

    unset = recording_seal.production_problem("", "", "")
    assert unset.startswith("VOICE_RECORDING_KEY_FILE (or VOICE_RECORDING_KEY) is unset")
    assert "voice-recording-key" in unset
    missing = str(tmp_path / "key")
    assert recording_seal.production_problem("", missing, "") == (
        f"VOICE_RECORDING_KEY_FILE {missing} cannot be read (No such file or directory)"
    )
    (tmp_path / "key").write_text("not base64 of 32 bytes\n")
    assert "must hold 32 random bytes" in recording_seal.production_problem("", missing, "")
    (tmp_path / "key").write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    assert recording_seal.production_problem("", missing, "") == ""
