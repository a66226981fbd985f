"""Rendered frames (PS3.18 8.3.5.1): decoded pixels to an 8-bit PNG or JPEG a browser can show.

Grayscale: Modality LUT (rescale slope/intercept), then the VOI window (from the request, else
the file's first WindowCenter/Width, else the frame's min/max) with the requested function
(PS3.3 C.11.2.1.2), MONOCHROME1 inverted. Colour (RGB, YBR*, palette) is shown as RGB.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from dicom.web.stored import NotAcceptable, StoredInstance, decoded_frame
from telehub.errors import Invalid, NotFound

MEDIA_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG"}
FUNCTIONS = ("linear", "linear_exact", "sigmoid")
MAX_VIEWPORT = 4096
THUMBNAIL = 128


@dataclass(frozen=True)
class Window:
    center: float
    width: float
    function: str = "linear"


@dataclass(frozen=True)
class RenderOptions:
    media_type: str = "image/jpeg"
    window: Window | None = None
    viewport: tuple[int, int] | None = None
    quality: int = 90


def parse_window(raw: str | None) -> Window | None:
    """``window=center,width[,function]``."""
    if raw is None:
        return None
    parts = [p.strip() for p in raw.split(",")]
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        center, width = float(parts[0]), float(parts[1])
    except ValueError as exc:
        raise Invalid("window must be center,width[,function]", "bad_window") from exc
    function = parts[2].lower() if len(parts) == 3 else "linear"
    if function not in FUNCTIONS:
        raise Invalid(f"window function must be one of {', '.join(FUNCTIONS)}", "bad_window")
    if width <= 0 or (function == "linear" and width < 1):
        raise Invalid("window width must be positive (at least 1 for linear)", "bad_window")
    return Window(center, width, function)


def parse_viewport(raw: str | None) -> tuple[int, int] | None:
    """``viewport=vw,vh`` (the source-rectangle form is not supported)."""
    if raw is None:
        return None
    parts = raw.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        vw, vh = int(parts[0]), int(parts[1])
    except ValueError as exc:
        raise Invalid("viewport must be width,height in pixels", "bad_viewport") from exc
    if not (0 < vw <= MAX_VIEWPORT and 0 < vh <= MAX_VIEWPORT):
        raise Invalid(f"viewport sizes must be 1..{MAX_VIEWPORT}", "bad_viewport")
    return vw, vh


def parse_quality(raw: str | None) -> int:
    if raw is None:
        return 90
    try:
        quality = int(raw)
    except ValueError:
        quality = 0
    if not 1 <= quality <= 100:
        raise Invalid("quality must be 1..100", "bad_quality")
    return quality


def _first(value: object) -> float | None:
    """The first value of a possibly multi-valued DS/IS element as a float."""
    if isinstance(value, list | tuple | MultiValue):
        value = value[0] if len(value) else None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def default_window(ds: Dataset, data: np.ndarray) -> Window:
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").lower()
    if function not in FUNCTIONS:
        function = "linear"
    if center is not None and width is not None and width >= 1:
        return Window(center, width, function)
    lo, hi = float(data.min()), float(data.max())
    # Linear with c - 0.5 and w - 1 (PS3.3) maps lo to 0 and hi to 255 exactly with these.
    return Window((lo + hi) / 2 + 0.5, max(hi - lo + 1, 1.0), "linear")


def apply_window(data: np.ndarray, window: Window) -> np.ndarray:
    """PS3.3 C.11.2.1.2 to 0..255."""
    x = data.astype(np.float64)
    c, w = window.center, window.width
    if window.function == "linear":
        y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255 if w > 1 else np.where(x > c - 0.5, 255, 0)
    elif window.function == "linear_exact":
        y = ((x - c) / w + 0.5) * 255
    else:
        y = 255 / (1 + np.exp(-4 * (x - c) / w))
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def to_8bit(inst: StoredInstance, frame: int, window: Window | None) -> np.ndarray:
    ds = inst.ds
    data = decoded_frame(inst, frame)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if data.ndim == 3 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        if data.dtype != np.uint8:
            bits = int(ds.get("BitsStored", 8) or 8)
            data = (data.astype(np.float64) * 255 / ((1 << bits) - 1)).astype(np.uint8)
        return data
    slope = _first(ds.get("RescaleSlope")) or 1.0
    intercept = _first(ds.get("RescaleIntercept")) or 0.0
    values = data.astype(np.float64) * slope + intercept
    out = apply_window(values, window or default_window(ds, values))
    return 255 - out if photometric == "MONOCHROME1" else out


def render(inst: StoredInstance, frame: int, options: RenderOptions) -> bytes:
    """One frame as PNG or JPEG bytes."""
    if options.media_type not in MEDIA_TYPES:
        raise NotAcceptable(f"cannot render as {options.media_type}", "not_acceptable")
    if inst.pixels is None:
        raise NotFound("the instance has no pixel data to render", "no_pixel_data")
    pixels = to_8bit(inst, frame, options.window)
    image = Image.fromarray(pixels, "RGB" if pixels.ndim == 3 else "L")
    if options.viewport is not None:
        image = ImageOps.contain(image, options.viewport, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    fmt = MEDIA_TYPES[options.media_type]
    if fmt == "JPEG":
        image.save(out, fmt, quality=options.quality)
    else:
        image.save(out, fmt)
    return out.getvalue()
