"""ECG uploads in, one :class:`~ecg.model.ECG` out: format detection, dispatch, safe unzipping.

Accepted: a WFDB record (``.hea`` plus the signal files it names, optional annotations), one
DICOM Part 10 ECG waveform file, one HL7 aECG XML file, one Philips Sierra/PhilipsECG XML or GE
MUSE XML file (told apart by their root element, never by file name), or a ``.zip`` holding one
of these. Every reader raises :class:`~ecg.model.ECGError` (or a subclass) with a precise message.
"""

from __future__ import annotations

import re
import stat
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from ecg.formats.aecg import decode_aecg, read_aecg, write_aecg
from ecg.formats.common import (
    DecodedECG,
    RawChannel,
    UnrecognisedFormatError,
    UnsafeArchiveError,
    UnsupportedFormatError,
    UploadTooLargeError,
    total_size,
)
from ecg.formats.dicom_waveform import decode_dicom_waveform, is_ecg_waveform, read_dicom_waveform
from ecg.formats.muse import decode_muse
from ecg.formats.philips import decode_philips
from ecg.formats.wfdb import decode_wfdb, read_wfdb
from ecg.model import ECG, ECGError

__all__ = [
    "ACCEPTED_FORMATS",
    "MAX_UPLOAD_BYTES",
    "MAX_ZIP_MEMBERS",
    "DecodedECG",
    "ECGError",
    "RawChannel",
    "UnrecognisedFormatError",
    "UnsafeArchiveError",
    "UnsupportedFormatError",
    "UploadTooLargeError",
    "XML_ECG_KINDS",
    "decode_aecg",
    "decode_dicom_waveform",
    "decode_muse",
    "decode_philips",
    "decode_upload",
    "decode_wfdb",
    "detect_format",
    "is_ecg_waveform",
    "read_aecg",
    "read_dicom_waveform",
    "read_upload",
    "read_wfdb",
    "unpack_zip",
    "write_aecg",
]

# One upload, and one archive once unpacked: a 12-lead resting ECG is well under 1 MB, a
# 30-minute 2-lead WFDB record 2 MB, a 24-hour 3-lead Holter in format 212 about 40 MB.
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_ZIP_MEMBERS = 100
ACCEPTED_FORMATS = (
    "a WFDB record (.hea header plus the signal files it names)",
    "a DICOM ECG waveform file (12-lead, general or ambulatory ECG waveform storage)",
    "an HL7 aECG XML file",
    "a Philips Sierra/PhilipsECG XML file",
    "a GE MUSE XML file",
    "a .zip archive holding one of these",
)
_SNIFF_BYTES = 64 * 1024
_XML_KINDS = {"AnnotatedECG": "aecg", "restingecgdata": "philips-xml", "RestingECG": "muse-xml"}
#: The XML kinds, for callers that sort files by content (``telehub send``).
XML_ECG_KINDS = frozenset(_XML_KINDS.values())
# the first element after the declaration, comments and doctype (only when the file starts "<")
_FIRST_ELEMENT = re.compile(
    rb"\A(?:<\?.*?\?>\s*|<!--.*?-->\s*|<!DOCTYPE[^>]*>\s*)*<([\w.:-]+)", re.S
)
_ZIP_JUNK = re.compile(r"(^|/)(__MACOSX/|\._|\.DS_Store$|Thumbs\.db$)")


def _accepted() -> str:
    return "; ".join(ACCEPTED_FORMATS)


def _is_zip(name: str, path: Path) -> bool:
    if name.lower().endswith(".zip"):
        return True
    with path.open("rb") as handle:
        return handle.read(4) == b"PK\x03\x04"


def detect_format(path: Path) -> str | None:
    """'dicom', 'aecg', 'philips-xml', 'muse-xml' or None, from a single file's content."""
    with Path(path).open("rb") as handle:
        head = handle.read(132)
    if head[128:132] == b"DICM":
        return "dicom"
    root = _xml_root(path).rpartition(":")[2]  # "hl7:AnnotatedECG" -> "AnnotatedECG"
    return _XML_KINDS.get(root)


def _xml_root(path: Path) -> str:
    """The root element's name if the file looks like XML, else ''."""
    with Path(path).open("rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16, as some devices export
        head = head.decode("utf-16", errors="ignore").encode("utf-8")
    match = _FIRST_ELEMENT.search(head.lstrip(b"\xef\xbb\xbf \t\r\n"))
    return match[1].decode("ascii", "replace") if match else ""


def unpack_zip(
    path: Path,
    dest: Path,
    *,
    max_total_bytes: int = MAX_UPLOAD_BYTES,
    max_files: int = MAX_ZIP_MEMBERS,
) -> dict[str, Path]:
    """Unpack an uploaded zip into ``dest`` (flattened to file names) without trusting it.

    Refused: entries with absolute paths, drive letters or ``..``; symbolic links; encrypted
    entries; more than ``max_files`` files; more than ``max_total_bytes`` unpacked (checked on
    the declared sizes first, then while writing, so a lying header cannot get past either);
    two entries with one file name. Folder entries and macOS/Windows litter are skipped.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ECGError(f"{Path(path).name} is not a readable zip archive: {exc}") from exc
    with archive:
        members: list[tuple[zipfile.ZipInfo, str]] = []
        for info in archive.infolist():
            raw = info.filename
            name = raw.replace("\\", "/")
            parts = PurePosixPath(name).parts
            if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in parts:
                raise UnsafeArchiveError(f"zip entry {raw!r} points outside the archive folder")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UnsafeArchiveError(f"zip entry {raw!r} is a symbolic link")
            if info.is_dir() or _ZIP_JUNK.search(name):
                continue
            if info.flag_bits & 0x1:
                raise ECGError(f"zip entry {raw!r} is encrypted")
            members.append((info, parts[-1]))
        if len(members) > max_files:
            raise UnsafeArchiveError(f"zip archive holds {len(members)} files; at most {max_files}")
        declared = sum(info.file_size for info, _ in members)
        if declared > max_total_bytes:
            raise UploadTooLargeError(
                f"zip archive unpacks to {declared} bytes, more than the {max_total_bytes} allowed"
            )
        names = [name for _, name in members]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ECGError(f"zip archive holds several files named {duplicates}")
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        written = 0
        result: dict[str, Path] = {}
        for info, name in members:
            target = dest / name
            try:
                with archive.open(info) as source, target.open("xb") as out:
                    while chunk := source.read(1024 * 1024):
                        written += len(chunk)
                        if written > max_total_bytes:
                            raise UploadTooLargeError(
                                f"zip archive unpacks to more than the {max_total_bytes} "
                                "bytes allowed"
                            )
                        out.write(chunk)
            except (zipfile.BadZipFile, EOFError, OSError, RuntimeError) as exc:
                raise ECGError(f"zip entry {info.filename!r} cannot be unpacked: {exc}") from exc
            result[name] = target
    return result


def decode_upload(files: Mapping[str, Path]) -> DecodedECG:
    """Detect the format of an upload (file name -> path) and read it, keeping stored integers."""
    if not files:
        raise ECGError("no file was uploaded")
    named: dict[str, Path] = {}
    for name, path in files.items():
        base = PurePosixPath(name.replace("\\", "/")).name
        if base in named:
            raise ECGError(f"two uploaded files are named {base!r}")
        named[base] = Path(path)
    size = total_size(named)
    if size > MAX_UPLOAD_BYTES:
        raise UploadTooLargeError(
            f"upload is {size} bytes, more than the {MAX_UPLOAD_BYTES // 2**20} MB allowed"
        )
    zips = {name: path for name, path in named.items() if _is_zip(name, path)}
    if not zips:
        return _dispatch(named)
    with tempfile.TemporaryDirectory(prefix="ecg-unzip-") as tmp:
        merged = {name: path for name, path in named.items() if name not in zips}
        for number, (name, path) in enumerate(sorted(zips.items())):
            for inner, inner_path in unpack_zip(path, Path(tmp) / str(number)).items():
                if _is_zip(inner, inner_path):
                    raise UnsafeArchiveError(f"{name} holds another archive ({inner}); not read")
                if inner in merged:
                    raise ECGError(f"{inner} is uploaded twice (in {name} and beside it)")
                merged[inner] = inner_path
        if total_size(merged) > MAX_UPLOAD_BYTES:
            raise UploadTooLargeError(
                f"upload unpacks to more than the {MAX_UPLOAD_BYTES // 2**20} MB allowed"
            )
        return _dispatch(merged)


def _dispatch(files: Mapping[str, Path]) -> DecodedECG:
    lowered = [name.lower() for name in files]
    if any(name.endswith(".hea") for name in lowered):
        return decode_wfdb(files)
    kinds = {name: detect_format(path) for name, path in files.items()}
    found = {name: kind for name, kind in kinds.items() if kind is not None}
    if not found:
        if any(name.endswith((".dat", ".atr", ".xyz")) for name in lowered):
            raise ECGError("a WFDB record needs a .hea header file; none was uploaded")
        xml_roots = {name: _xml_root(path) for name, path in files.items()}
        described = [
            f"{name} is XML whose root element is <{root}>, not HL7 aECG <AnnotatedECG>, "
            "Philips <restingecgdata> or GE MUSE <RestingECG>"
            for name, root in sorted(xml_roots.items())
            if root
        ]
        raise UnrecognisedFormatError(
            f"unrecognised ECG format ({'; '.join(described) or ', '.join(sorted(files))}); "
            f"accepted: {_accepted()}"
        )
    if len(found) > 1:
        raise ECGError(f"upload one ECG at a time; these files each hold one: {sorted(found)}")
    name, kind = next(iter(found.items()))
    if kind == "dicom":
        return decode_dicom_waveform(files[name])
    if kind == "aecg":
        return decode_aecg(files[name])
    if kind == "philips-xml":
        return decode_philips(files[name])
    return decode_muse(files[name])


def read_upload(files: Mapping[str, Path]) -> ECG:
    """Read an upload (file name -> path; zips are unpacked safely) into the hub's ECG."""
    return decode_upload(files).ecg
