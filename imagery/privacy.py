"""Faces and people found and blurred, with the detectors that ship inside OpenCV's 4.x wheel.

- faces: the Haar cascades ``haarcascade_frontalface_alt2`` and
  ``haarcascade_profileface`` (run on the frame and on its mirror image, since
  the profile cascade only knows faces turned one way);
- people: the HOG descriptor with OpenCV's default people detector.

Haar cascades cost time in proportion to the pixels they scan, so every
detector runs on a grey copy scaled down to a working width and its boxes are
mapped back. That sets the smallest face and person found: 20 px (frontal and
profile) and 64×128 px (HOG) at the working width, times ``frame width /
working width`` in the frame. The defaults (frontal faces at 240 px, profiles
at 200, people at 320) find frontal faces from 53 px, profiles from 64 px and
people from 256 px tall in a 640×480 frame; the README of this package gives
the trade-off with speed.

Blurring averages the box down to about ten blocks across and scales that back
up smoothly: what was in it cannot be read back, the rest of the frame is untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import cv2.data
import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]
FACE, PERSON = "face", "person"
# Boxes grow by this share of their size before blurring: hair, ears and the edges
# the detectors cut tight.
FACE_MARGIN = 0.25
PERSON_MARGIN = 0.08
BLUR_BLOCKS = 10
FRONTAL_CASCADE = "haarcascade_frontalface_alt2.xml"


@dataclass(frozen=True, slots=True)
class Box:
    """A region to blur, in frame pixels."""

    kind: str
    x: int
    y: int
    w: int
    h: int


@dataclass(frozen=True, slots=True)
class DetectorSettings:
    """Working widths, scale steps and neighbours: how thorough the search is, and so how fast.

    Measured on scikit-image's LFW faces pasted into the simulator's night scenes
    (``bench/imagery_faces.py``): the ``alt2`` frontal cascade with 2 neighbours at
    scale step 1.25 finds more faces of every size than the default cascade with 4
    at 1.2 did (64 px: 78 % against 43 %; 96 px: 83 / 82; 128 px: 98 / 93), in
    three quarters of the time, and no face in 100 scenes without one. Profiles
    likewise with 2 neighbours instead of 4: the one turned face at hand (the
    cameraman of ``skimage.data.camera``) is found at 128 px 75 % of the time
    against 48 %, at the same cost, still with no false box in those scenes.
    """

    face_width: int = 240
    # Profiles at five sixths of it: at 160 px the two passes (the frame and its
    # mirror) would cost 9 ms instead of 13, but the turned face at 128 px was found
    # 3 % of the time instead of 75 % (bench/imagery_faces.py).
    profile_width: int = 200
    person_width: int = 320
    face_scale_step: float = 1.25
    profile_scale_step: float = 1.3
    person_scale_step: float = 1.2
    face_neighbours: int = 2
    profile_neighbours: int = 2

    @classmethod
    def widths(cls, face_width: int, person_width: int = 320) -> DetectorSettings:
        """The defaults at another face search width (profiles in the same proportion)."""
        return cls(
            face_width=face_width, profile_width=face_width * 5 // 6, person_width=person_width
        )


class PrivacyDetector:
    """Finds faces and people in a grey frame; one per thread (OpenCV's detectors keep state)."""

    def __init__(self, settings: DetectorSettings | None = None) -> None:
        self.settings = settings or DetectorSettings()
        self._frontal = _cascade(FRONTAL_CASCADE)
        self._profile = _cascade("haarcascade_profileface.xml")
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(
            np.asarray(cv2.HOGDescriptor.getDefaultPeopleDetector(), np.float32)
        )

    def detect(self, gray: npt.NDArray[np.uint8]) -> list[Box]:
        """Faces and people in ``gray``, in its pixels."""
        return self.faces(gray) + self.people(gray)

    def faces(self, gray: npt.NDArray[np.uint8]) -> list[Box]:
        """Frontal faces and profiles turned either way."""
        s = self.settings
        # Not histogram-equalised: the cascades normalise each window's contrast already,
        # and equalising a night frame cost a third of the recall on faces of 64-96 px
        # (scikit-image's LFW faces pasted into synthetic night scenes) and time.
        small, scale = _scaled(gray, s.face_width)
        found = self._frontal.detectMultiScale(small, s.face_scale_step, s.face_neighbours)
        boxes = [_box(FACE, r, scale, FACE_MARGIN, gray.shape) for r in found]
        small, scale = _scaled(gray, s.profile_width)
        width = small.shape[1]
        step, neighbours = s.profile_scale_step, s.profile_neighbours
        mirrored = self._profile.detectMultiScale(
            np.ascontiguousarray(small[:, ::-1]), step, neighbours
        )
        profiles = [
            *self._profile.detectMultiScale(small, step, neighbours),
            *((width - x - w, y, w, h) for x, y, w, h in mirrored),
        ]
        return boxes + [_box(FACE, r, scale, FACE_MARGIN, gray.shape) for r in profiles]

    def people(self, gray: npt.NDArray[np.uint8]) -> list[Box]:
        """Whole people (standing or walking) seen by the HOG detector."""
        small, scale = _scaled(gray, self.settings.person_width)
        if small.shape[0] < 128 or small.shape[1] < 64:
            return []
        rects, _weights = self._hog.detectMultiScale(
            small, winStride=(8, 8), scale=self.settings.person_scale_step
        )
        return [_box(PERSON, r, scale, PERSON_MARGIN, gray.shape) for r in rects]


def blur_regions(image: Image, boxes: list[Box]) -> Image:
    """A copy of ``image`` with every box mosaicked and smoothed; other pixels unchanged."""
    out = image.copy()
    for box in boxes:
        region = out[box.y : box.y + box.h, box.x : box.x + box.w]
        if region.size == 0:
            continue
        block = max(2, max(box.w, box.h) // BLUR_BLOCKS)
        small = cv2.resize(
            region,
            (max(1, box.w // block), max(1, box.h // block)),
            interpolation=cv2.INTER_AREA,
        )
        # Scaled back up smoothly: as a mosaic then a Gaussian of the block's size would
        # look, at a fraction of the cost for a large box.
        region[:] = cv2.resize(small, (box.w, box.h), interpolation=cv2.INTER_LINEAR)
    return out


def scale_boxes(boxes: list[Box], factor: float, shape: tuple[int, ...]) -> list[Box]:
    """Boxes found on one copy of a frame, in the pixels of a copy ``factor`` times as wide."""
    scaled = (
        Box(
            b.kind,
            round(b.x * factor),
            round(b.y * factor),
            round(b.w * factor),
            round(b.h * factor),
        )
        for b in boxes
    )
    return [_clip(box, shape) for box in scaled]


def _cascade(name: str) -> cv2.CascadeClassifier:
    path = Path(cv2.data.haarcascades) / name
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise RuntimeError(f"OpenCV's {name} is missing or unreadable at {path}")
    return cascade


def _scaled(gray: npt.NDArray[np.uint8], width: int) -> tuple[npt.NDArray[np.uint8], float]:
    """``gray`` scaled down to ``width`` (never up), and the factor back to its pixels."""
    h, w = gray.shape[:2]
    if w <= width:
        return gray, 1.0
    size = (width, max(1, round(h * width / w)))
    return np.asarray(cv2.resize(gray, size, interpolation=cv2.INTER_AREA), np.uint8), w / width


def _box(
    kind: str, rect: npt.ArrayLike, scale: float, margin: float, shape: tuple[int, ...]
) -> Box:
    x, y, w, h = (float(v) * scale for v in np.asarray(rect).ravel()[:4])
    dx, dy = w * margin, h * margin
    grown = Box(kind, round(x - dx), round(y - dy), round(w + 2 * dx), round(h + 2 * dy))
    return _clip(grown, shape)


def _clip(box: Box, shape: tuple[int, ...]) -> Box:
    height, width = shape[0], shape[1]
    x0, y0 = max(0, box.x), max(0, box.y)
    x1, y1 = min(width, box.x + box.w), min(height, box.y + box.h)
    return Box(box.kind, x0, y0, max(0, x1 - x0), max(0, y1 - y0))
