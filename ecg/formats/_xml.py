"""Parsing untrusted XML without entity expansion (billion laughs) or external entities (XXE).

defusedxml does it when installed; otherwise the standard library's expat parser is given
handlers that refuse any DTD, entity declaration or external reference, which is what
defusedxml's ``forbid_dtd=True`` amounts to. ECG XML formats never need a DTD.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
import xml.parsers.expat
from typing import NoReturn

from ecg.model import ECGError

try:  # pragma: no cover - which branch runs depends on the environment
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring as _defused_fromstring
except ImportError:  # pragma: no cover
    DefusedXmlException = None  # type: ignore[assignment,misc]
    _defused_fromstring = None


class _Refused(Exception):
    pass


def _refuse(*_args: object) -> NoReturn:
    raise _Refused("DTDs, entity declarations and external references are not allowed")


def _qualified(name: str) -> str:
    return "{" + name if "}" in name else name  # expat gives "uri}local"


def _stdlib_fromstring(data: bytes) -> ET.Element:
    builder = ET.TreeBuilder()
    expat = xml.parsers.expat.ParserCreate(namespace_separator="}")
    expat.SetParamEntityParsing(xml.parsers.expat.XML_PARAM_ENTITY_PARSING_NEVER)
    expat.StartDoctypeDeclHandler = _refuse
    expat.EntityDeclHandler = _refuse
    expat.UnparsedEntityDeclHandler = _refuse
    expat.ExternalEntityRefHandler = _refuse
    expat.buffer_text = True
    expat.StartElementHandler = lambda tag, attrs: builder.start(
        _qualified(tag), {_qualified(key): value for key, value in attrs.items()}
    )
    expat.EndElementHandler = lambda tag: builder.end(_qualified(tag))
    expat.CharacterDataHandler = builder.data
    try:
        expat.Parse(data, True)
    except xml.parsers.expat.ExpatError as exc:
        raise ET.ParseError(str(exc)) from exc
    return builder.close()


def parse_xml(data: bytes, what: str) -> ET.Element:
    """The root element of ``data``; an ECGError if it is not well-formed or declares a DTD."""
    try:
        if _defused_fromstring is not None:
            return _defused_fromstring(data, forbid_dtd=True)
        return _stdlib_fromstring(data)
    except ET.ParseError as exc:
        raise ECGError(f"{what} is not well-formed XML: {exc}") from exc
    except _Refused as exc:
        raise ECGError(f"{what}: {exc}") from exc
    except Exception as exc:
        if DefusedXmlException is not None and isinstance(exc, DefusedXmlException):
            raise ECGError(f"{what}: refused unsafe XML ({exc})") from exc
        raise
