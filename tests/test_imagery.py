"""The imagery pipeline on real images: headers, hostile inputs, faces blurred, QR codes, quality.

The face photograph is scikit-image's ``astronaut.png`` (NASA, public domain),
read from the installed wheel: nothing is downloaded.
"""

from __future__ import annotations

import importlib.metadata
import json
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagery.checkpoints import (
    CheckpointCode,
    checkpoint_qr_text,
    on_robot_route,
    parse_checkpoint_qr,
)
from imagery.jpeg import inspect_jpeg
from imagery.pipeline import Limits, Processor, Reason, Refused
from imagery.privacy import FACE, Box, blur_regions
from imagery.synthetic import (
    CONDITIONS,
    detection_snapshot,
    pick_condition,
    synthetic_frame,
    synthetic_snapshot,
)

Image = npt.NDArray[np.uint8]
SCENES = ["garbage_overflow", "fire_lane_blocked", "loitering", "smoke_fire", "waterlogging"]
# Where the astronaut's face is in the 512×512 photograph (between the eyes).
FACE_POINT = (222, 112)
CORRUPTIBLE = synthetic_snapshot(11, "loitering")
ROUTES = {"routes": [{"id": "night-a", "checkpoints": [{"id": "cp-07"}, {"id": "gate:1"}]}]}


def astronaut() -> Image:
    """The photograph, as BGR."""
    path = importlib.metadata.distribution("scikit-image").locate_file("skimage/data/astronaut.png")
    image = cv2.imread(str(path))
    assert image is not None, f"{path} missing: is the dev extra installed?"
    return np.asarray(image, np.uint8)


def jpeg(image: Image, quality: int = 95) -> bytes:
    """``image`` as JPEG bytes."""
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return data.tobytes()


def decode(data: bytes) -> Image:
    """JPEG bytes to BGR."""
    return np.asarray(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), np.uint8)


def with_declared_size(data: bytes, width: int, height: int) -> bytes:
    """The same JPEG with its SOF header claiming another frame size."""
    sof = data.index(b"\xff\xc0")
    out = bytearray(data)
    struct.pack_into(">HH", out, sof + 5, height, width)
    return bytes(out)


@pytest.fixture(scope="module")
def processor() -> Processor:
    return Processor()


# --- headers and hostile inputs -----------------------------------------------------------


def test_the_header_gives_the_declared_frame() -> None:
    info = inspect_jpeg(synthetic_snapshot(1, "loitering", width=1280, height=720))
    assert (info.width, info.height, info.components, info.progressive) == (1280, 720, 3, False)


def hostile_inputs() -> list[tuple[str, bytes, Reason]]:
    good = jpeg(astronaut())
    png = cv2.imencode(".png", astronaut())[1].tobytes()
    rng = np.random.default_rng(3)
    # A 3 MiB JPEG that is a real image: refused for its size alone.
    big = jpeg(rng.integers(0, 256, (1500, 2000, 3), dtype=np.uint8), quality=100)
    assert len(big) > 3 * 2**20
    return [
        ("truncated", good[: len(good) // 2], Reason.TRUNCATED),
        ("header only", good[:400], Reason.TRUNCATED),
        ("png", png, Reason.NOT_JPEG),
        ("random bytes", rng.bytes(50_000), Reason.NOT_JPEG),
        ("empty", b"", Reason.NOT_JPEG),
        ("3 MiB", big, Reason.TOO_LARGE),
        ("bomb 60000x60000", with_declared_size(good, 60_000, 60_000), Reason.TOO_MANY_PIXELS),
        ("bomb 65535x1", with_declared_size(good, 65_535, 300), Reason.TOO_MANY_PIXELS),
        ("zero height", with_declared_size(good, 512, 0), Reason.NOT_JPEG),
    ]


@pytest.mark.parametrize(("name", "data", "reason"), hostile_inputs(), ids=lambda v: str(v)[:20])
def test_hostile_inputs_are_refused_with_their_reason(
    processor: Processor, name: str, data: bytes, reason: Reason
) -> None:
    with pytest.raises(Refused) as refused:
        processor.process(data)
    assert refused.value.reason is reason, name


def test_a_bomb_is_refused_before_any_decoding_and_a_large_frame_decodes_reduced(
    tmp_path: Path,
) -> None:
    """In a fresh process: the bomb costs no memory; a 4096×4096 frame is decoded at 1/2."""
    bomb = tmp_path / "bomb.jpg"
    bomb.write_bytes(with_declared_size(jpeg(astronaut()), 60_000, 60_000))
    large = tmp_path / "large.jpg"
    # Smooth content: a 16-megapixel JPEG of a few hundred KiB, as a camera could send.
    large.write_bytes(jpeg(np.asarray(cv2.resize(astronaut(), (4096, 4096)), np.uint8), quality=70))
    script = """
import json, resource, sys
from pathlib import Path
from imagery.pipeline import Processor, Refused
p = Processor()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    p.process(Path(sys.argv[1]).read_bytes())
    bomb = "accepted"
except Refused as exc:
    bomb = exc.reason.value
after_bomb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = p.process(Path(sys.argv[2]).read_bytes())
after_large = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"bomb": bomb, "bomb_kib": after_bomb - before, "large_kib": after_large - before,
                  "privacy": [out.privacy.width, out.privacy.height]}))
"""
    run = subprocess.run(
        [sys.executable, "-c", script, str(bomb), str(large)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent.parent,
        timeout=120,
    )
    result = json.loads(run.stdout)
    assert result["bomb"] == "too_many_pixels"
    assert result["bomb_kib"] < 8 * 1024  # nothing was allocated for 3.6 billion pixels
    # Decoded at 2048×2048 (1/2, from the DCT: 12 MB), not 48 MB of full-size pixels and copies;
    # the privacy version is at most 1920 wide.
    assert result["large_kib"] < 150 * 1024
    assert result["privacy"] == [1920, 1920]


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    edits=st.lists(st.tuples(st.integers(0, 60_000), st.integers(0, 255)), max_size=30),
    cut=st.one_of(st.none(), st.integers(0, 60_000)),
)
def test_corrupted_jpegs_are_processed_or_refused_never_crash(
    processor: Processor, edits: list[tuple[int, int]], cut: int | None
) -> None:
    """Bytes changed anywhere (header included) and files cut anywhere: a result or a reason."""
    data = bytearray(CORRUPTIBLE)
    for position, value in edits:
        data[position % len(data)] = value
    if cut is not None:
        data = data[: cut % len(data)]
    try:
        result = processor.process(bytes(data))
    except Refused as refused:
        assert refused.reason in set(Reason)
    else:
        assert result.privacy.width <= Limits().privacy_max_width


# --- faces and people blurred ---------------------------------------------------------------


def test_faces_in_a_photograph_are_found_and_blurred_and_nothing_else_changes(
    processor: Processor,
) -> None:
    original = astronaut()
    result = processor.process(jpeg(original))
    faces = [b for b in result.boxes if b.kind == FACE]
    assert any(_contains(b, FACE_POINT) for b in faces), faces
    private = decode(result.privacy.data).astype(np.int16)
    # The same JPEG losses as the privacy version (decoded, encoded again), without the blurring.
    reference = decode(jpeg(decode(jpeg(original)), Limits().jpeg_quality)).astype(np.int16)
    inside = np.zeros(original.shape[:2], bool)
    for box in result.boxes:
        inside[box.y : box.y + box.h, box.x : box.x + box.w] = True
    diff = np.abs(private - reference).mean(axis=2)
    assert diff[inside].mean() > 12  # the face is gone
    assert diff[~inside].mean() < 0.5  # the rest is the photograph, up to JPEG's 8×8 blocks
    face = next(b for b in faces if _contains(b, FACE_POINT))
    crop = private[face.y : face.y + face.h, face.x : face.x + face.w]
    # What was a face with eyes and mouth is now smooth: little edge energy left.
    edges = cv2.Laplacian(crop.astype(np.uint8), cv2.CV_64F).var()
    before = cv2.Laplacian(
        reference[face.y : face.y + face.h, face.x : face.x + face.w].astype(np.uint8), cv2.CV_64F
    ).var()
    assert edges < before / 10
    assert (result.thumbnail.width, result.thumbnail.height) == (320, 320)


def test_blurring_changes_the_boxes_and_not_one_pixel_outside() -> None:
    image = synthetic_frame(5, "loitering")
    boxes = [Box(FACE, 100, 80, 60, 60), Box("person", 400, 200, 80, 200)]
    out = blur_regions(image, boxes)
    mask = np.zeros(image.shape[:2], bool)
    for b in boxes:
        mask[b.y : b.y + b.h, b.x : b.x + b.w] = True
        assert (
            out[b.y : b.y + b.h, b.x : b.x + b.w] != image[b.y : b.y + b.h, b.x : b.x + b.w]
        ).any()
    assert np.array_equal(out[~mask], image[~mask])


def test_the_thumbnail_is_made_from_the_privacy_version(processor: Processor) -> None:
    result = processor.process(jpeg(astronaut()))
    thumb = decode(result.thumbnail.data)
    from_private = cv2.resize(decode(result.privacy.data), (320, 320), interpolation=cv2.INTER_AREA)
    from_original = cv2.resize(astronaut(), (320, 320), interpolation=cv2.INTER_AREA)
    face = (slice(25, 110), slice(95, 185))  # the face, at thumbnail scale
    assert np.abs(thumb[face].astype(int) - from_private[face]).mean() < 4
    assert np.abs(thumb[face].astype(int) - from_original[face]).mean() > 8


# --- checkpoint QR codes --------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), [(640, 480), (1920, 1080)])
def test_checkpoint_qr_codes_are_read_in_synthetic_frames(
    processor: Processor, width: int, height: int
) -> None:
    text = checkpoint_qr_text("zjxc", "night-a", "cp-07")
    for seed, scene in enumerate(SCENES if width == 640 else SCENES[:2]):
        data = synthetic_snapshot(seed, scene, width=width, height=height, checkpoint_qr=text)
        assert processor.process(data).qr_texts == [text], (seed, scene)
    assert processor.process(synthetic_snapshot(9, "loitering")).qr_texts == []


def soft_plate_frame(seed: int, module: int, interpolation: int, blur: float) -> Image:
    """A night scene with a checkpoint code whose modules have soft edges, as a lens draws them."""
    rng = np.random.default_rng(seed)
    image = synthetic_frame(seed, "loitering")
    code = cv2.QRCodeEncoder.create().encode(checkpoint_qr_text("zjxc", "night-a", "cp-07"))
    side = code.shape[0] * module
    plate = cv2.resize(code, (side, side), interpolation=interpolation).astype(np.float32)
    if blur:
        plate = np.asarray(cv2.GaussianBlur(plate, (0, 0), blur), np.float32)
    x, y = int(rng.integers(0, 640 - side)), int(rng.integers(0, 480 - side))
    image[y : y + side, x : x + side] = np.clip(plate, 0, 255).astype(np.uint8)[..., None]
    return image


@pytest.mark.parametrize(
    ("module", "interpolation", "blur"),
    [(3, cv2.INTER_LINEAR, 0.0), (4, cv2.INTER_LINEAR, 0.0), (4, cv2.INTER_NEAREST, 1.2)],
)
def test_checkpoint_codes_with_soft_edges_are_read(
    processor: Processor, module: int, interpolation: int, blur: float
) -> None:
    # The ArUco-based detector alone read none of these (it finds them, and fails to decode).
    text = checkpoint_qr_text("zjxc", "night-a", "cp-07")
    frames = [soft_plate_frame(seed, module, interpolation, blur) for seed in range(10)]
    read = sum(processor.process(jpeg(frame)).qr_texts == [text] for frame in frames)
    assert read >= 9


def test_the_checkpoint_code_format() -> None:
    text = checkpoint_qr_text("zjxc", "night-a", "gate:1")
    assert text == "gridwatch:cp:zjxc:night-a:gate:1"
    code = parse_checkpoint_qr(text)
    assert code == CheckpointCode("zjxc", "night-a", "gate:1")
    assert str(code) == text
    assert on_robot_route(code, "zjxc", ROUTES)
    assert not on_robot_route(code, "dgxq", ROUTES)  # a plate from another community
    assert not on_robot_route(CheckpointCode("zjxc", "night-b", "cp-07"), "zjxc", ROUTES)
    assert not on_robot_route(CheckpointCode("zjxc", "night-a", "cp-99"), "zjxc", ROUTES)
    for other in ("https://example.cn/cp-07", "gridwatch:cp:zjxc:night-a", "cp-07", ""):
        assert parse_checkpoint_qr(other) is None
    with pytest.raises(ValueError, match="not a valid checkpoint code"):
        checkpoint_qr_text("ZJXC", "night a", "cp-07")


# --- quality ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), [(640, 480), (1920, 1080)])
def test_quality_flags_dark_blurred_and_obstructed_frames_and_only_those(
    processor: Processor, width: int, height: int
) -> None:
    expected = {
        "normal": [],
        "dark": ["dark"],
        "blurred": ["blurred"],
        "obstructed": ["obstructed"],
    }
    seeds = range(3 if width == 640 else 1)  # 1920×1080 frames are slow to draw
    for seed in seeds:
        for i, condition in enumerate(CONDITIONS):
            scene = SCENES[(seed + i) % len(SCENES)]
            data = synthetic_snapshot(seed, scene, width=width, height=height, condition=condition)
            flags = processor.process(data).quality.flags
            assert flags == expected[condition], (seed, scene, condition)
    assert processor.process(jpeg(astronaut())).quality.flags == []


def test_a_mildly_soft_photograph_is_not_called_blurred(processor: Processor) -> None:
    soft = np.asarray(cv2.GaussianBlur(astronaut(), (0, 0), 1.0), np.uint8)
    assert not processor.process(jpeg(soft)).quality.blurred
    very_soft = np.asarray(cv2.GaussianBlur(astronaut(), (0, 0), 6.0), np.uint8)
    assert processor.process(jpeg(very_soft)).quality.blurred


# --- synthetic frames ---------------------------------------------------------------------------


def test_synthetic_snapshots_are_deterministic_jpegs_of_the_asked_size() -> None:
    a = synthetic_snapshot(42, "smoke_fire", checkpoint_qr="gridwatch:cp:zjxc:night-a:cp-01")
    assert a == synthetic_snapshot(
        42, "smoke_fire", checkpoint_qr="gridwatch:cp:zjxc:night-a:cp-01"
    )
    assert a != synthetic_snapshot(
        43, "smoke_fire", checkpoint_qr="gridwatch:cp:zjxc:night-a:cp-01"
    )
    info = inspect_jpeg(synthetic_snapshot(1, "waterlogging", width=1280, height=720))
    assert (info.width, info.height) == (1280, 720)
    assert len(a) < Limits().max_bytes


def test_a_detection_snapshot_is_the_same_for_the_same_robot_and_detection() -> None:
    plate = checkpoint_qr_text("zjxc", "night-a", "cp-02")
    a = detection_snapshot("zjxc-robot-1", 17, "smoke_fire", 1_795_000_000_000, checkpoint_qr=plate)
    assert a == detection_snapshot(
        "zjxc-robot-1", 17, "smoke_fire", 1_795_000_000_000, checkpoint_qr=plate
    )
    assert a != detection_snapshot("zjxc-robot-1", 18, "smoke_fire", 1_795_000_000_000)
    assert Processor().process(a).qr_texts == [plate]


def test_pick_condition_is_deterministic_and_mostly_normal() -> None:
    picks = [pick_condition(seed) for seed in range(2000)]
    assert picks == [pick_condition(seed) for seed in range(2000)]
    share = {c: picks.count(c) / len(picks) for c in CONDITIONS}
    assert 0.80 < share["normal"] < 0.90
    assert 0.05 < share["dark"] < 0.11 and 0.04 < share["blurred"] < 0.10
    assert share["obstructed"] == 0


def _contains(box: Box, point: tuple[int, int]) -> bool:
    x, y = point
    return box.x <= x < box.x + box.w and box.y <= y < box.y + box.h
