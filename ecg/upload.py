"""The clinic side of ECG upload: ``telehub send`` hands non-DICOM ECG files (WFDB records,
aECG and vendor XML, zips) to the hub's HTTP API, one upload per record.

ECG files are known by their ending, and XML ECGs (HL7 aECG, Philips, GE MUSE) also by their
content, through the same detection the hub uses, so an export named without ``.xml`` (some
carts write ``.ecg`` or no ending) still goes as an ECG instead of failing as DICOM."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

#: File endings that are sent over HTTP as ECGs rather than by C-STORE.
ECG_SUFFIXES = {".hea", ".dat", ".atr", ".xyz", ".qrs", ".xml", ".zip"}
_XML_STARTS = (b"<", b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")


@dataclass
class UploadOutcome:
    files: list[str]
    case_id: int | None = None
    error: str = ""


def split_ecg_files(files: Iterable[Path]) -> tuple[list[Path], list[list[Path]]]:
    """(files for C-STORE, ECG uploads): a WFDB record travels with every file of its name."""
    files = list(files)
    stems = {f.with_suffix("") for f in files if f.suffix.lower() == ".hea"}
    records: dict[Path, list[Path]] = defaultdict(list)
    singles: list[list[Path]] = []
    dicom: list[Path] = []
    for f in files:
        if f.with_suffix("") in stems:
            records[f.with_suffix("")].append(f)
        elif f.suffix.lower() in ECG_SUFFIXES or is_xml_ecg(f):
            singles.append([f])
        else:
            dicom.append(f)
    return dicom, [sorted(group) for group in records.values()] + singles


def is_xml_ecg(path: Path) -> bool:
    """Whether the file is an XML ECG the hub reads (aECG, Philips, MUSE), by its content."""
    try:
        with path.open("rb") as handle:
            head = handle.read(64).lstrip(b" \t\r\n")
    except OSError:
        return False
    if not head.startswith(_XML_STARTS):
        return False  # DICOM (a 128-byte preamble) and other binaries: not opened further
    from ecg.formats import XML_ECG_KINDS, detect_format

    return detect_format(path) in XML_ECG_KINDS


def _multipart(files: list[Path], fields: dict[str, str]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    chunks = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    for f in files:
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{f.name}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
            + f.read_bytes()
            + b"\r\n"
        )
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def _call(url: str, data: bytes, content_type: str, token: str | None = None) -> dict:
    request = urllib.request.Request(
        url, data=data, method="POST", headers={"Content-Type": content_type}
    )
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read())
            message = body.get("message", exc.reason)
        except ValueError:
            message = exc.reason
        raise RuntimeError(f"HTTP {exc.code}: {message}") from exc


def upload_ecgs(
    base_url: str, username: str, password: str, groups: list[list[Path]], priority: str = "routine"
) -> list[UploadOutcome]:
    """Log in once, then upload each group; a refused group does not stop the others."""
    base = base_url.rstrip("/")
    login = json.dumps({"username": username, "password": password}).encode()
    token = _call(f"{base}/api/v1/auth/login", login, "application/json")["token"]
    outcomes = []
    for group in groups:
        outcome = UploadOutcome([str(f) for f in group])
        try:
            body, content_type = _multipart(group, {"priority": priority})
            outcome.case_id = _call(f"{base}/api/v1/ecg", body, content_type, token)["case_id"]
        except (RuntimeError, OSError) as exc:
            outcome.error = str(exc)
        outcomes.append(outcome)
    return outcomes
