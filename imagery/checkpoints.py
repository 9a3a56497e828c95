"""Checkpoint plates: the QR code on each patrol checkpoint (巡更点), and reading it in a frame.

A plate's QR code holds ``gridwatch:cp:{community}:{route_id}:{checkpoint_id}``,
e.g. ``gridwatch:cp:zjxc:night-a:cp-07``. The community and route make a plate
mean one checkpoint of one route only: a plate carried to another community,
or a route's ids reused on another route, is not evidence. The checkpoint id
is the registry's (``[A-Za-z0-9_.:-]{1,64}``, so it may itself hold colons: it
is everything after the fourth colon).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

PREFIX = "gridwatch:cp:"
_CODE = re.compile(
    r"^gridwatch:cp:(?P<community>[a-z0-9-]{2,32}):(?P<route>[A-Za-z0-9_-]{1,32})"
    r":(?P<checkpoint>[A-Za-z0-9_.:-]{1,64})$"
)
# QR modules need about 3 pixels to decode; a 1920-wide frame read at this width
# still resolves a plate that fills a twentieth of it.
QR_READ_WIDTH = 960
# A QR code's three finder patterns are squares nested three deep (black, white,
# black); decoding is tried only where at least this many are seen (two: one may
# be lost to glare or an angle).
MIN_FINDERS = 2
MIN_FINDER_PX = 7
Gray = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class CheckpointCode:
    """What a checkpoint plate says."""

    community: str
    route: str
    checkpoint_id: str

    def __str__(self) -> str:
        return f"{PREFIX}{self.community}:{self.route}:{self.checkpoint_id}"


def checkpoint_qr_text(community: str, route: str, checkpoint_id: str) -> str:
    """The text to print in a checkpoint's QR code; ``ValueError`` for ids outside the format."""
    text = f"{PREFIX}{community}:{route}:{checkpoint_id}"
    if not _CODE.match(text):
        raise ValueError(f"not a valid checkpoint code: {text!r}")
    return text


def parse_checkpoint_qr(text: str) -> CheckpointCode | None:
    """The checkpoint a QR text names, or None if it is not a checkpoint plate's."""
    match = _CODE.match(text)
    if match is None:
        return None
    return CheckpointCode(match["community"], match["route"], match["checkpoint"])


def on_robot_route(code: CheckpointCode, community: str, attributes: Mapping[str, Any]) -> bool:
    """True if ``code`` names a checkpoint of one of this robot's registered routes."""
    if code.community != community:
        return False
    for route in attributes.get("routes", ()):
        if route.get("id") == code.route:
            return any(cp.get("id") == code.checkpoint_id for cp in route.get("checkpoints", ()))
    return False


class QrReader:
    """Finds and decodes every QR code in a grey frame (one per thread).

    A lens renders a plate's modules with soft edges, which the ArUco-based detector
    (best on small and tilted codes) often finds and cannot decode. The same part of
    the frame is then tried binarised with Otsu's threshold, and last with the classic
    detector. Codes of 3-4 px modules drawn soft (linear interpolation, or a Gaussian
    of 1.2 px) in night scenes, JPEG-compressed: the first alone read 2 of 30, the three
    30 of 30 (``tests/test_imagery.py``). Only frames showing finder patterns pay for
    the second and third tries: 3 in 200 of the simulator's frames without a plate.
    """

    def __init__(self) -> None:
        aruco, classic = cv2.QRCodeDetectorAruco(), cv2.QRCodeDetector()
        self._attempts: tuple[Callable[[Gray], list[str]], ...] = (
            lambda crop: _decode_all(aruco, crop),
            lambda crop: _decode_all(aruco, _otsu(crop)),
            lambda crop: _decode_all(classic, crop),
        )

    def read(self, gray: npt.NDArray[np.uint8]) -> list[str]:
        """The non-empty texts of the QR codes found."""
        h, w = gray.shape[:2]
        if w > QR_READ_WIDTH:
            size = (QR_READ_WIDTH, max(1, round(h * QR_READ_WIDTH / w)))
            gray = np.asarray(cv2.resize(gray, size, interpolation=cv2.INTER_AREA), np.uint8)
        boxes = finder_patterns(gray)
        if len(boxes) < MIN_FINDERS:
            return []
        # Decoded around the finder patterns only: the detector's cost grows with the
        # area it searches (26 ms on a whole 640×480 frame, a few on a plate's surroundings).
        x0, y0, x1, y1 = _around(boxes, gray.shape)
        crop = np.ascontiguousarray(gray[y0:y1, x0:x1])
        for attempt in self._attempts:
            texts = attempt(crop)
            if texts:
                return texts
        return []


def _decode_all(detector: cv2.GraphicalCodeDetector, gray: Gray) -> list[str]:
    found, texts, _points, _straight = detector.detectAndDecodeMulti(gray)
    return [t for t in texts if t] if found else []


def _otsu(gray: Gray) -> Gray:
    _threshold, binary = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    return np.asarray(binary, np.uint8)


Rect = tuple[int, int, int, int]


def finder_patterns(gray: npt.NDArray[np.uint8]) -> list[Rect]:
    """Square contours holding a contour that holds another: QR finder-pattern candidates.

    A cheap look (a few ms at 960×540) that spares the QR detector, several times
    dearer, the frames that show no code at all: most of them.
    """
    binary = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 31, 7)
    contours, hierarchy = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    tree = hierarchy[0]
    child = tree[:, 2]
    # Nested three deep, found in numpy: a busy frame has thousands of contours.
    nested = np.flatnonzero((child >= 0) & (tree[np.maximum(child, 0), 2] >= 0))
    boxes = []
    for i in nested.tolist():
        x, y, w, h = cv2.boundingRect(contours[i])
        if w >= MIN_FINDER_PX and h >= MIN_FINDER_PX and 0.7 < w / h < 1.4:
            boxes.append((int(x), int(y), int(w), int(h)))
    return boxes


def _around(boxes: list[Rect], shape: tuple[int, ...]) -> Rect:
    """The part of the frame a code with these finder patterns can occupy: (x0, y0, x1, y1).

    Three finders mark three corners of a code; with only two seen, the code may
    reach past them by its own width, about three finder widths (and a quiet zone).
    """
    reach = 4 * max(max(w, h) for _x, _y, w, h in boxes)
    x0 = min(x for x, _y, _w, _h in boxes) - reach
    y0 = min(y for _x, y, _w, _h in boxes) - reach
    x1 = max(x + w for x, _y, w, _h in boxes) + reach
    y1 = max(y + h for _x, y, _w, h in boxes) + reach
    return max(0, x0), max(0, y0), min(shape[1], x1), min(shape[0], y1)
