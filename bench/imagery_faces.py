"""Imagery: how many faces the privacy blur finds, by size, and what the search costs.

scikit-image's LFW faces (``skimage.data.lfw_subset``, 100 faces of 25×25 px)
are scaled to 64, 96 and 128 px and pasted at random places into the robot
simulator's night scenes (640×480); a face counts as found when a face box
holds its centre. Turned faces: the only one at hand, the cameraman of
``skimage.data.camera`` (a three-quarter view that the profile cascade finds
in the photograph), cut out with his surroundings, 60 times per size, every
other one mirrored. The same detectors also run over 100 scenes without a
face (false boxes blur what need not be). Time is CPU time of the face
search per frame, on one thread.

    .venv/bin/python bench/imagery_faces.py            # the defaults (faces at 240 px)
    .venv/bin/python bench/imagery_faces.py 160        # GW_IMAGERY_FACE_WIDTH=160
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imagery.privacy import DetectorSettings, PrivacyDetector
from imagery.synthetic import pick_condition, synthetic_frame

Gray = npt.NDArray[np.uint8]
SIZES = (64, 96, 128)
SCENES = ("garbage_overflow", "fire_lane_blocked", "smoke_fire", "waterlogging", "loitering")


def with_faces(size: int) -> list[tuple[Gray, tuple[float, float]]]:
    """Night scenes with one LFW face of ``size`` px each, and the face's centre."""
    import skimage.data

    rng = np.random.default_rng(size)
    out = []
    for i, face in enumerate(skimage.data.lfw_subset()[:100]):
        image = cv2.cvtColor(synthetic_frame(1000 + i, "loitering"), cv2.COLOR_BGR2GRAY)
        pixels = cv2.resize(
            (face * 255).astype(np.uint8), (size, size), interpolation=cv2.INTER_CUBIC
        )
        h, w = image.shape
        x, y = int(rng.integers(0, w - size)), int(rng.integers(0, h - size))
        image[y : y + size, x : x + size] = pixels
        out.append((np.asarray(image, np.uint8), (x + size / 2, y + size / 2)))
    return out


def with_turned_faces(size: int) -> list[tuple[Gray, tuple[float, float]]]:
    """Night scenes with the cameraman's turned face of ``size`` px, and its centre."""
    import skimage.data

    # The face the profile cascade finds at (146, 81, 122, 122), with 1.6 times its
    # size around it: the cascade needs the head's outline.
    head = skimage.data.camera()[45:240, 110:305]
    patch = round(size * 1.6)
    rng = np.random.default_rng(size)
    out = []
    for i in range(60):
        image = cv2.cvtColor(synthetic_frame(2000 + i, "loitering"), cv2.COLOR_BGR2GRAY)
        pixels = cv2.resize(head, (patch, patch), interpolation=cv2.INTER_AREA)
        if i % 2:
            pixels = pixels[:, ::-1]
        h, w = image.shape
        x, y = int(rng.integers(0, w - patch)), int(rng.integers(0, h - patch))
        image[y : y + patch, x : x + patch] = pixels
        out.append((np.asarray(image, np.uint8), (x + patch / 2, y + patch / 2)))
    return out


def without_faces() -> list[Gray]:
    """The simulator's scenes as they come (with its dark and blurred ones)."""
    return [
        np.asarray(
            cv2.cvtColor(
                synthetic_frame(5000 + i, SCENES[i % len(SCENES)], condition=pick_condition(i)),
                cv2.COLOR_BGR2GRAY,
            ),
            np.uint8,
        )
        for i in range(100)
    ]


def found(
    detector: PrivacyDetector, frames: list[tuple[Gray, tuple[float, float]]]
) -> tuple[float, float]:
    """The share of frames (%) whose face a face box holds, and ms of search per frame."""
    hits, cpu = 0, 0.0
    for gray, (cx, cy) in frames:
        started = time.process_time()
        boxes = detector.faces(gray)
        cpu += time.process_time() - started
        hits += any(b.x <= cx <= b.x + b.w and b.y <= cy <= b.y + b.h for b in boxes)
    return 100 * hits / len(frames), 1000 * cpu / len(frames)


def main() -> None:
    """One line per face size, then the false boxes."""
    cv2.setNumThreads(1)
    face_width = int(sys.argv[1]) if len(sys.argv) > 1 else DetectorSettings().face_width
    detector = PrivacyDetector(DetectorSettings.widths(face_width))
    print(f"faces searched at {face_width} px (profiles at {detector.settings.profile_width})")
    print("| face size | frontal found | turned found | ms per frame |")
    print("| --- | --- | --- | --- |")
    for size in SIZES:
        frontal, frontal_ms = found(detector, with_faces(size))
        turned, _ = found(detector, with_turned_faces(size))
        print(f"| {size} px | {frontal:.0f} % | {turned:.0f} % | {frontal_ms:.1f} |")
    false = sum(len(detector.faces(gray)) for gray in without_faces())
    print(f"false face boxes in 100 scenes without a face: {false}")


if __name__ == "__main__":
    main()
