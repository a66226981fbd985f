"""The structural check catches what pydicom silently accepts: cut-off data sets."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from dicom.integrity import MalformedDataset, check_structure
from tests.helpers import dicom_file

GOOD = [
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_bigendian.dcm",
    "JPEG2000.dcm",
    "SC_rgb_rle.dcm",
    "waveform_ecg.dcm",
    "rtplan.dcm",
    "image_dfl.dcm",
]


@pytest.mark.parametrize("name", GOOD)
def test_complete_files_pass(name: str) -> None:
    check_structure(dicom_file(name))


@pytest.mark.parametrize("name", ["rtplan_truncated.dcm", "MR_truncated.dcm"])
def test_pydicoms_truncated_files_fail(name: str) -> None:
    with pytest.raises(MalformedDataset):
        check_structure(dicom_file(name))


@pytest.mark.parametrize("keep", [0.99, 0.5, 0.05])
def test_cut_anywhere_fails(tmp_path: Path, keep: float) -> None:
    raw = dicom_file("CT_small.dcm").read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(MalformedDataset):
        check_structure(path)


def test_not_dicom_fails(tmp_path: Path) -> None:
    path = tmp_path / "notes.dcm"
    path.write_text("this is not DICOM")
    with pytest.raises(MalformedDataset):
        check_structure(path)


def test_mutated_files_never_crash_the_check(tmp_path: Path) -> None:
    """Cut or byte-flipped versions of pydicom's files: the check answers MalformedDataset or
    passes, never another exception (which would turn into a processing failure)."""
    import random

    rng = random.Random(7)
    path = tmp_path / "mutated.dcm"
    for name in sorted(dicom_file("CT_small.dcm").parent.glob("*.dcm")):
        raw = Path(name).read_bytes()
        for k in range(10):
            data = bytearray(raw[: rng.randint(0, len(raw) - 1)] if k % 2 == 0 else raw)
            if k % 2 and len(data) > 200:
                for _ in range(5):
                    data[rng.randint(132, len(data) - 1)] = rng.randint(0, 255)
            path.write_bytes(bytes(data))
            with contextlib.suppress(MalformedDataset):
                check_structure(path)
