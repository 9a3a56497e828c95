"""One snapshot's bytes in; its checks, privacy version, thumbnail and QR codes out.

Pure CPU work, no I/O: the service stores what comes out. The order is the
cheapest refusal first, and nothing is decoded before its declared size is
known to be bounded:

1. size (the contract's 2 MiB);
2. the JPEG's own header (``imagery.jpeg``): not a JPEG, cut short, or a
   declared frame over ``max_pixels`` / ``MAX_SIDE`` (a decompression bomb);
3. decoding, at 1/2, 1/4 or 1/8 scale straight from the JPEG's DCT when the
   frame is larger than ``decode_max_pixels``, so memory per snapshot stays
   near 12 MB whatever was declared;
4. quality, faces and people, QR codes, on that decoded frame.

The privacy version is the decoded frame (at most ``privacy_max_width`` wide)
with every face and person blurred; the thumbnail is made from the privacy
version, never from the original.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import cv2
import numpy as np
import numpy.typing as npt

from imagery.checkpoints import QrReader
from imagery.jpeg import JpegInfo, NotAJpeg, TruncatedJpeg, inspect_jpeg
from imagery.privacy import FACE, PERSON, Box, DetectorSettings, PrivacyDetector, blur_regions
from imagery.quality import Quality, QualityThresholds, measure

Image = npt.NDArray[np.uint8]
MAX_SIDE = 16_384
_REDUCED = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


class Reason(StrEnum):
    """Why a snapshot was refused; the label of the rejection counter."""

    TOO_LARGE = "too_large"
    NOT_JPEG = "not_jpeg"
    TRUNCATED = "truncated"
    TOO_MANY_PIXELS = "too_many_pixels"
    UNDECODABLE = "undecodable"
    UNKNOWN_DEVICE = "unknown_device"
    DEVICE_MISMATCH = "device_mismatch"
    BAD_TOPIC = "bad_topic"


class Refused(Exception):
    """A snapshot that is not processed, with the reason and a detail for the dead letter."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Limits:
    """What a snapshot may be and how large it is worked on."""

    max_bytes: int = 2 * 1024 * 1024
    max_pixels: int = 4096 * 4096
    decode_max_pixels: int = 4_194_304  # 2560×1600, 12 MB decoded
    privacy_max_width: int = 1920
    thumbnail_width: int = 320
    jpeg_quality: int = 85


@dataclass(frozen=True, slots=True)
class Encoded:
    """A JPEG we made, with its size in pixels."""

    data: bytes
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class Processed:
    """Everything learnt from one snapshot and the images to store."""

    declared: JpegInfo
    privacy: Encoded
    thumbnail: Encoded
    quality: Quality
    boxes: list[Box] = field(default_factory=list)
    qr_texts: list[str] = field(default_factory=list)

    @property
    def faces(self) -> int:
        """Faces blurred."""
        return sum(1 for b in self.boxes if b.kind == FACE)

    @property
    def people(self) -> int:
        """People blurred."""
        return sum(1 for b in self.boxes if b.kind == PERSON)


class Processor:
    """Runs the pipeline; holds OpenCV's detectors, so one per worker thread."""

    def __init__(self, limits: Limits | None = None, detectors: DetectorSettings | None = None):
        self.limits = limits or Limits()
        self._privacy = PrivacyDetector(detectors)
        self._qr = QrReader()

    def check(self, data: bytes) -> JpegInfo:
        """The declared frame, or ``Refused`` for what must not be decoded."""
        limits = self.limits
        if len(data) > limits.max_bytes:
            raise Refused(Reason.TOO_LARGE, f"{len(data)} bytes > {limits.max_bytes}")
        try:
            info = inspect_jpeg(data)
        except TruncatedJpeg as exc:
            raise Refused(Reason.TRUNCATED, str(exc)) from None
        except NotAJpeg as exc:
            raise Refused(Reason.NOT_JPEG, str(exc)) from None
        if info.pixels > limits.max_pixels or max(info.width, info.height) > MAX_SIDE:
            detail = f"declares {info.width}×{info.height} (limit {limits.max_pixels} pixels)"
            raise Refused(Reason.TOO_MANY_PIXELS, detail)
        return info

    def process(self, data: bytes, thresholds: QualityThresholds | None = None) -> Processed:
        """Check, decode and examine one snapshot; ``Refused`` says why it was not."""
        info = self.check(data)
        frame = self._decode(data, info)
        limits = self.limits
        if frame.shape[1] > limits.privacy_max_width:
            frame = _resize_to_width(frame, limits.privacy_max_width)
        gray = np.asarray(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), np.uint8)
        quality = measure(gray, thresholds or QualityThresholds())
        boxes = self._privacy.detect(gray)
        qr_texts = self._qr.read(gray)
        private = blur_regions(frame, boxes)
        thumbnail = _resize_to_width(private, limits.thumbnail_width)
        return Processed(
            declared=info,
            privacy=_encode(private, limits.jpeg_quality),
            thumbnail=_encode(thumbnail, limits.jpeg_quality),
            quality=quality,
            boxes=boxes,
            qr_texts=qr_texts,
        )

    def _decode(self, data: bytes, info: JpegInfo) -> Image:
        """Decode at the least DCT reduction that keeps the frame within ``decode_max_pixels``."""
        reduction = next(
            (k for k in _REDUCED if info.pixels / (k * k) <= self.limits.decode_max_pixels), 8
        )
        buffer = np.frombuffer(data, np.uint8)
        try:
            frame = cv2.imdecode(buffer, _REDUCED[reduction])
        except cv2.error as exc:  # libjpeg gave up on a corrupt file in a way OpenCV raises
            raise Refused(Reason.UNDECODABLE, str(exc).strip()[-200:]) from None
        if frame is None:
            raise Refused(Reason.UNDECODABLE, "OpenCV could not decode the image")
        # libjpeg rounds reduced sizes up; any other size means the header lied.
        expected = (-(-info.height // reduction), -(-info.width // reduction))
        if frame.shape[:2] != expected and frame.shape[:2] != expected[::-1]:
            got = f"{frame.shape[1]}×{frame.shape[0]}"
            detail = f"decoded {got}, the header said {info.width}×{info.height}"
            raise Refused(Reason.UNDECODABLE, detail)
        return np.asarray(frame, np.uint8)


def _resize_to_width(image: Image, width: int) -> Image:
    h, w = image.shape[:2]
    if w <= width:
        return image
    size = (width, max(1, round(h * width / w)))
    return np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.uint8)


def _encode(image: Image, quality: int) -> Encoded:
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    return Encoded(buffer.tobytes(), image.shape[1], image.shape[0])
