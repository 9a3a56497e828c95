"""Is a frame usable? Brightness, sharpness and how much of it shows nothing.

Measured on a grey copy scaled down to ``MEASURE_WIDTH``, so the numbers mean
the same for a 640×480 and a 1920×1080 camera (the Laplacian's variance shrinks
when an image is scaled down: without a common scale one threshold cannot fit
both).

- brightness: mean grey level, 0–255. A night frame from a working camera
  with its lamp or infrared is well above ``dark_below``.
- sharpness: variance of the Laplacian (edge energy). Defocus, motion blur
  and a fogged lens all remove edges.
- uniform: share of 16×16 blocks that are practically flat (grey-level
  standard deviation under 3). Something over the lens makes most of the
  frame flat while its histogram collapses (low entropy); a blurred frame is
  flat too but keeps its range of levels, and a dark one is judged dark.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import msgspec
import numpy as np
import numpy.typing as npt

MEASURE_WIDTH = 640
BLOCK = 16
FLAT_STD = 3.0

Gray = npt.NDArray[np.uint8]


class QualityThresholds(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """When a frame is flagged; a community may override any of these (``settings.imagery``)."""

    dark_below: float = 35.0
    blur_below: float = 40.0
    obstructed_uniform_above: float = 0.75
    obstructed_entropy_below: float = 5.0


@dataclass(frozen=True, slots=True)
class Quality:
    """The measurements of one frame and the flags they lead to."""

    brightness: float
    sharpness: float
    entropy: float
    uniform: float
    dark: bool
    blurred: bool
    obstructed: bool

    @property
    def bad(self) -> bool:
        """True if any flag is set: the frame counts towards a camera fault."""
        return self.dark or self.blurred or self.obstructed

    @property
    def flags(self) -> list[str]:
        """The names of the flags that are set."""
        names = ("dark", "blurred", "obstructed")
        return [
            n for n, on in zip(names, (self.dark, self.blurred, self.obstructed), strict=True) if on
        ]


def measure(gray: Gray, thresholds: QualityThresholds) -> Quality:
    """Measure a grey frame (any size) and flag it."""
    h, w = gray.shape[:2]
    if w > MEASURE_WIDTH:
        size = (MEASURE_WIDTH, max(BLOCK, round(h * MEASURE_WIDTH / w)))
        gray = np.asarray(cv2.resize(gray, size, interpolation=cv2.INTER_AREA), np.uint8)
    brightness = float(gray.mean())
    _, std = cv2.meanStdDev(cv2.Laplacian(gray, cv2.CV_16S))
    sharpness = float(std[0, 0]) ** 2
    hist = cv2.calcHist([gray], [0], None, [256], [0, 256]).ravel()
    p = hist[hist > 0] / hist.sum()
    entropy = float(-(p * np.log2(p)).sum())
    uniform = _uniform_share(gray)
    dark = brightness < thresholds.dark_below
    obstructed = not dark and (
        uniform > thresholds.obstructed_uniform_above
        and entropy < thresholds.obstructed_entropy_below
    )
    blurred = not dark and not obstructed and sharpness < thresholds.blur_below
    return Quality(brightness, sharpness, entropy, uniform, dark, blurred, obstructed)


def _uniform_share(gray: Gray) -> float:
    """Share of BLOCK×BLOCK blocks whose standard deviation is under FLAT_STD."""
    h, w = gray.shape[:2]
    bh, bw = h // BLOCK, w // BLOCK
    if bh == 0 or bw == 0:
        return 1.0
    pixels = gray[: bh * BLOCK, : bw * BLOCK].astype(np.float32)
    mean = cv2.resize(pixels, (bw, bh), interpolation=cv2.INTER_AREA)
    mean_sq = cv2.resize(pixels * pixels, (bw, bh), interpolation=cv2.INTER_AREA)
    variance = np.maximum(mean_sq - mean * mean, 0.0)
    return float((variance < FLAT_STD * FLAT_STD).mean())
