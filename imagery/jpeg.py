"""What a JPEG says about itself, read from its markers before anything is decoded.

A decompression bomb is a small file that declares a huge frame: a few KiB
announcing 60000×60000 pixels make a decoder allocate 10 GB. The frame size
is in the SOF segment, so it is read here, by walking the marker segments
(each carries its own length) up to the first scan, and the image is refused
before OpenCV sees it. The walk also tells a truncated file (no EOI after
the scan data) and what is not a baseline/progressive JPEG at all (a PNG,
random bytes, a second SOF, a frame with no height).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

SOI = b"\xff\xd8"
EOI = b"\xff\xd9"
SOS = 0xDA
# SOF0-3, 5-7, 9-11, 13-15; 0xC4 (DHT), 0xC8 (JPG) and 0xCC (DAC) share the range.
SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
# Markers without a length: TEM and RST0-7 (SOI/EOI are handled apart).
STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


class NotAJpeg(ValueError):
    """The bytes are not a JPEG we are willing to decode; the message says why."""


class TruncatedJpeg(NotAJpeg):
    """A JPEG cut short: the header is whole, the end of the image is missing."""


@dataclass(frozen=True, slots=True)
class JpegInfo:
    """The frame a JPEG declares."""

    width: int
    height: int
    components: int
    progressive: bool

    @property
    def pixels(self) -> int:
        """Width × height as declared."""
        return self.width * self.height


def inspect_jpeg(data: bytes) -> JpegInfo:
    """The declared frame of ``data``, or ``NotAJpeg`` if it is not a whole JPEG."""
    if not data.startswith(SOI):
        raise NotAJpeg("does not start with a JPEG SOI marker")
    pos, end = 2, len(data)
    info: JpegInfo | None = None
    while True:
        # Markers may be preceded by any number of 0xFF fill bytes.
        while pos < end and data[pos] == 0xFF:
            pos += 1
        if pos >= end:
            raise TruncatedJpeg("the file ends inside the header")
        if data[pos - 1] != 0xFF:
            raise NotAJpeg(f"no marker at byte {pos}: corrupt header")
        marker = data[pos]
        pos += 1
        if marker in STANDALONE:
            continue
        if pos + 2 > end:
            raise TruncatedJpeg("the file ends inside the header")
        (length,) = struct.unpack_from(">H", data, pos)
        if length < 2:
            raise NotAJpeg(f"segment 0x{marker:02X} has an impossible length")
        if pos + length > end:
            raise TruncatedJpeg(f"segment 0x{marker:02X} runs past the end of the file")
        if marker in SOF_MARKERS:
            if info is not None:
                raise NotAJpeg("two SOF markers")
            info = _frame(marker, data[pos + 2 : pos + length])
        elif marker == SOS:
            if info is None:
                raise NotAJpeg("scan data before any SOF marker")
            # Inside entropy-coded data 0xFF is always stuffed (FF00) or a restart
            # marker, so an EOI after the first scan means the file was not cut short.
            if data.rfind(EOI, pos + length) < 0:
                raise TruncatedJpeg("no EOI marker after the scan data")
            return info
        elif marker == 0xD9:
            raise NotAJpeg("EOI before any scan")
        pos += length


def _frame(marker: int, body: bytes) -> JpegInfo:
    if len(body) < 6:
        raise NotAJpeg("SOF segment too short")
    _precision, height, width, components = struct.unpack_from(">BHHB", body)
    if width == 0 or height == 0:
        # Height 0 means "given later by a DNL marker": legal, but nothing a camera sends,
        # and it would hide the real size from this check.
        raise NotAJpeg(f"frame declares {width}×{height}")
    if components not in (1, 3):
        raise NotAJpeg(f"{components} colour components (expected 1 or 3)")
    return JpegInfo(width, height, components, marker in PROGRESSIVE)
