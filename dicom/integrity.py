"""Structural check of a received dataset: every element's declared length is really there.

pydicom reads truncated files without complaint (a short read just yields a short value), so a
C-STORE whose data set was cut off would otherwise be stored and acknowledged. This walks the
top-level element headers, seeking past large values, which costs microseconds per instance.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from pydicom.dataelem import RawDataElement
from pydicom.filereader import _read_file_meta_info, data_element_generator, read_preamble
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

UNDEFINED = 0xFFFFFFFF


class MalformedDataset(ValueError):
    """The bytes are not a complete DICOM data set."""


def check_structure(path: Path | str) -> UID:
    """Raise MalformedDataset unless the Part 10 file at ``path`` is structurally complete.

    Returns the transfer syntax from the file meta information.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as fp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            read_preamble(fp, False)
            meta = _read_file_meta_info(fp)
            ts = UID(str(meta.get("TransferSyntaxUID", "")))
            if not ts:
                raise MalformedDataset("file meta has no transfer syntax")
            if ts == DeflatedExplicitVRLittleEndian:
                return ts  # a deflate stream is checked by zlib when it is read
            position = fp.tell()
            count = 0
            for elem in data_element_generator(
                fp, ts.is_implicit_VR, ts.is_little_endian, defer_size=256
            ):
                count += 1
                if isinstance(elem, RawDataElement) and elem.length != UNDEFINED:
                    end = elem.value_tell + elem.length
                    have = len(elem.value) if elem.value is not None else elem.length
                    if end > size or have != elem.length:
                        raise MalformedDataset(
                            f"element {elem.tag} declares {elem.length} bytes, "
                            f"data set ends after {size - elem.value_tell}"
                        )
                position = fp.tell()
        except MalformedDataset:
            raise
        except Exception as exc:  # pydicom raises many types on garbage
            raise MalformedDataset(f"cannot parse data set: {exc}") from exc
    if count == 0:
        raise MalformedDataset("data set is empty")
    if position != size:
        raise MalformedDataset(f"data set ends inside an element header ({size - position} bytes)")
    return ts
