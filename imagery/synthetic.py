"""Synthetic patrol-camera frames: plausible night scenes drawn with OpenCV, as JPEG bytes.

The robot simulator publishes these as the snapshots behind its detections,
so the whole imagery path (decode, quality checks, blurring, checkpoint QR
codes, storage) runs in CI without a camera. A frame is a function of its
seed and arguments: the same call gives the same bytes.

What is drawn: a night street (sky, buildings with lit windows, a lamp and its
glow, asphalt), the scene's subject (bins and bags, a car across a fire lane,
an e-bike on a cable at a door, flames and smoke, a puddle, an open manhole,
a person standing about), the camera's caption, sensor noise, and optionally a
checkpoint plate with its QR code. ``condition`` spoils the frame the way
cameras fail: too dark, out of focus, or the lens covered.
"""

from __future__ import annotations

import zlib
from datetime import datetime
from typing import Final, Literal, get_args
from zoneinfo import ZoneInfo

import cv2
import numpy as np
import numpy.typing as npt

Condition = Literal["normal", "dark", "blurred", "obstructed"]
CONDITIONS: Final[tuple[Condition, ...]] = get_args(Condition)
Image = npt.NDArray[np.uint8]
Floats = npt.NDArray[np.float32]
Color = tuple[int, int, int]

FONT = cv2.FONT_HERSHEY_SIMPLEX
# How often a frame is spoiled, for simulators that want "sometimes dark or blurred".
DEFAULT_CONDITION_WEIGHTS: Final[dict[Condition, float]] = {
    "normal": 0.85,
    "dark": 0.08,
    "blurred": 0.07,
    "obstructed": 0.0,
}


def pick_condition(
    seed: int, weights: dict[Condition, float] = DEFAULT_CONDITION_WEIGHTS
) -> Condition:
    """A condition drawn from ``weights`` (deterministic from ``seed``)."""
    rng = np.random.default_rng([seed, 0x51])
    names = list(weights)
    p = np.array([weights[n] for n in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def detection_snapshot(
    device_id: str,
    seq: int,
    scene: str,
    ts_ms: int,
    *,
    checkpoint_qr: str | None = None,
    timezone: str = "Asia/Shanghai",
    condition: Condition | None = None,
) -> bytes:
    """The frame a simulated robot sends behind its detection number ``seq``.

    Deterministic from the robot and ``seq`` (a replay sends the same bytes);
    sometimes dark or blurred (``pick_condition``) unless ``condition`` says how
    it is (a scripted camera fault); captioned with the robot and the local
    time, as a camera's on-screen display is.
    """
    seed = zlib.crc32(f"{device_id}:{seq}".encode())
    local = datetime.fromtimestamp(ts_ms / 1000, ZoneInfo(timezone))
    return synthetic_snapshot(
        seed,
        scene,
        condition=condition or pick_condition(seed),
        checkpoint_qr=checkpoint_qr,
        caption=f"{device_id} {local:%Y-%m-%d %H:%M:%S}",
    )


def synthetic_snapshot(
    seed: int,
    scene: str,
    *,
    width: int = 640,
    height: int = 480,
    condition: Condition = "normal",
    checkpoint_qr: str | None = None,
    caption: str = "",
    quality: int = 85,
) -> bytes:
    """A JPEG of ``scene`` (a patrol_robot scene name; others draw only the street)."""
    image = synthetic_frame(
        seed,
        scene,
        width=width,
        height=height,
        condition=condition,
        checkpoint_qr=checkpoint_qr,
        caption=caption,
    )
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV could not encode the synthetic frame")
    return encoded.tobytes()


def synthetic_frame(
    seed: int,
    scene: str,
    *,
    width: int = 640,
    height: int = 480,
    condition: Condition = "normal",
    checkpoint_qr: str | None = None,
    caption: str = "",
) -> Image:
    """The frame of ``synthetic_snapshot`` as a BGR array, before JPEG encoding."""
    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {CONDITIONS}")
    rng = np.random.default_rng(seed)
    image = _street(rng, width, height)
    _SCENES.get(scene, _nothing)(image, rng)
    if checkpoint_qr is not None:
        _checkpoint_plate(image, rng, checkpoint_qr)
    if caption:
        scale = height / 900
        cv2.putText(
            image,
            caption,
            (int(width * 0.02), int(height * 0.06)),
            FONT,
            scale,
            (235, 235, 235),
            max(1, round(scale * 2)),
            cv2.LINE_AA,
        )
    image = _to_uint8(image + _noise(rng, image.shape, 3.0))
    return _spoil(image, rng, condition)


# --- the street ------------------------------------------------------------------------


def _street(rng: np.random.Generator, w: int, h: int) -> Image:
    horizon = int(h * rng.uniform(0.42, 0.52))
    image = np.empty((h, w, 3), np.uint8)
    sky = np.linspace(0.0, 1.0, horizon)[:, None]
    image[:horizon] = (np.array([38, 22, 12]) + sky * np.array([40, 30, 22]))[:, None, :]
    ground = np.linspace(0.0, 1.0, h - horizon)[:, None]
    image[horizon:] = (np.array([62, 62, 66]) + ground * np.array([30, 30, 30]))[:, None, :]
    x = 0
    while x < w:
        bw, bh = int(w * rng.uniform(0.12, 0.25)), int(horizon * rng.uniform(0.45, 0.9))
        _box(image, x, horizon - bh, bw, bh, (52, 50, 58))
        for wy in range(horizon - bh + 8, horizon - 14, max(12, h // 24)):
            for wx in range(x + 6, x + bw - 12, max(14, w // 32)):
                if rng.random() < 0.35:
                    _box(image, wx, wy, max(6, w // 80), max(6, h // 60), (90, 190, 230))
        x += bw + int(w * rng.uniform(0.0, 0.04))
    lamp_x = int(w * rng.uniform(0.1, 0.9))
    cv2.line(
        image,
        (lamp_x, horizon + h // 10),
        (lamp_x, horizon - h // 4),
        (40, 40, 40),
        max(2, w // 200),
    )
    spot = np.zeros((h, w), np.float32)
    cv2.circle(spot, (lamp_x, horizon - h // 4), max(4, w // 25), 1.0, -1)
    glow = _soft(spot, w / 30)
    image[:] = _to_uint8(image + glow[..., None] * np.array([300, 500, 640], np.float32))
    cv2.line(
        image,
        (0, horizon + (h - horizon) // 2),
        (w, horizon + (h - horizon) // 3),
        (150, 150, 150),
        max(1, w // 320),
    )
    return image


def _box(image: Image, x: int, y: int, w: int, h: int, color: Color) -> None:
    cv2.rectangle(image, (x, y), (x + w, y + h), color, -1)


def _ground_point(image: Image, rng: np.random.Generator) -> tuple[int, int, float]:
    """A spot on the ground and how large things are drawn there (nearer is lower and larger)."""
    h, w = image.shape[:2]
    y = int(h * rng.uniform(0.7, 0.9))
    return int(w * rng.uniform(0.2, 0.8)), y, w / 640 * (0.6 + y / h)


# --- the scenes -------------------------------------------------------------------------


def _garbage(image: Image, rng: np.random.Generator) -> None:
    x, y, s = _ground_point(image, rng)
    for i in range(int(rng.integers(2, 4))):
        bx = x + int(i * 55 * s)
        _box(image, bx, y - int(80 * s), int(45 * s), int(80 * s), (40, 110, 30))
        _box(image, bx - 3, y - int(88 * s), int(51 * s), int(10 * s), (30, 80, 20))
    for _ in range(int(rng.integers(4, 9))):
        cx, cy = x + int(rng.uniform(-40, 180) * s), y + int(rng.uniform(-10, 20) * s)
        axes = (int(rng.uniform(14, 26) * s), int(rng.uniform(10, 18) * s))
        cv2.ellipse(image, (cx, cy), axes, 0, 0, 360, (25, 25, 25), -1)


def _fire_lane(image: Image, rng: np.random.Generator) -> None:
    x, y, s = _ground_point(image, rng)
    for i in range(6):
        x0 = int(x - 150 * s + i * 50 * s)
        pts = np.array(
            [
                [x0, y + 30 * s],
                [x0 + 25 * s, y + 30 * s],
                [x0 + 45 * s, y - 5 * s],
                [x0 + 20 * s, y - 5 * s],
            ],
            np.int32,
        )
        cv2.fillPoly(image, [pts], (30, 200, 230))
    body = rng.integers(60, 200, 3)
    color: Color = (int(body[0]), int(body[1]), int(body[2]))
    _box(image, x - int(110 * s), y - int(60 * s), int(220 * s), int(55 * s), color)
    _box(image, x - int(60 * s), y - int(95 * s), int(120 * s), int(38 * s), color)
    _box(image, x - int(52 * s), y - int(90 * s), int(104 * s), int(28 * s), (70, 60, 50))
    for wx in (x - int(70 * s), x + int(70 * s)):
        cv2.circle(image, (wx, y), int(22 * s), (15, 15, 15), -1)
    cv2.putText(
        image,
        "FIRE LANE",
        (x - int(90 * s), y + int(60 * s)),
        FONT,
        0.8 * s,
        (30, 200, 230),
        max(1, int(2 * s)),
        cv2.LINE_AA,
    )


def _ebike(image: Image, rng: np.random.Generator) -> None:
    x, y, s = _ground_point(image, rng)
    _box(image, x + int(80 * s), y - int(170 * s), int(70 * s), int(170 * s), (110, 170, 200))
    for wx in (x - int(40 * s), x + int(40 * s)):
        cv2.circle(image, (wx, y), int(24 * s), (20, 20, 20), max(2, int(5 * s)))
    frame = np.array([[x - 40 * s, y], [x, y - 35 * s], [x + 40 * s, y], [x + 5 * s, y]], np.int32)
    cv2.polylines(image, [frame], True, (40, 40, 200), max(2, int(4 * s)))
    cv2.line(image, (x, y - int(35 * s)), (x + int(115 * s), y - int(90 * s)), (10, 10, 10), 2)


def _smoke_fire(image: Image, rng: np.random.Generator) -> None:
    x, y, s = _ground_point(image, rng)
    for _ in range(5):
        cx = x + int(rng.uniform(-50, 50) * s)
        r = int(rng.uniform(35, 60) * s)
        cv2.circle(image, (cx, y - int(rng.uniform(120, 200) * s)), r, (120, 120, 125), -1)
    for color, size in (((0, 80, 230), 1.0), ((0, 170, 255), 0.7), ((120, 240, 255), 0.4)):
        tips = [
            (x + int(dx * s * size), y - int(rng.uniform(60, 140) * s * size))
            for dx in (-40, -15, 10, 35)
        ]
        pts = np.array([(x - int(55 * s * size), y), *tips, (x + int(55 * s * size), y)], np.int32)
        cv2.fillPoly(image, [pts], color)


def _waterlogging(image: Image, rng: np.random.Generator) -> None:
    x, y, s = _ground_point(image, rng)
    cv2.ellipse(image, (x, y), (int(170 * s), int(38 * s)), 0, 0, 360, (95, 80, 60), -1)
    cv2.ellipse(
        image,
        (x + int(30 * s), y - int(5 * s)),
        (int(40 * s), int(6 * s)),
        0,
        0,
        360,
        (150, 210, 240),
        -1,
    )


def _facility_damage(image: Image, rng: np.random.Generator) -> None:
    x, y, s = _ground_point(image, rng)
    cv2.ellipse(image, (x, y), (int(50 * s), int(18 * s)), 0, 0, 360, (8, 8, 8), -1)
    cone = np.array(
        [[x + 80 * s, y + 10 * s], [x + 120 * s, y + 10 * s], [x + 100 * s, y - 60 * s]], np.int32
    )
    cv2.fillPoly(image, [cone], (0, 110, 255))
    cv2.line(
        image,
        (x - int(200 * s), y - int(20 * s)),
        (x - int(60 * s), y - int(90 * s)),
        (60, 60, 60),
        max(3, int(8 * s)),
    )


def _loitering(image: Image, rng: np.random.Generator) -> None:
    x, y, s = _ground_point(image, rng)
    height = int(170 * s)
    coat = rng.integers(20, 90, 3)
    color: Color = (int(coat[0]), int(coat[1]), int(coat[2]))
    head = height // 8
    cv2.circle(image, (x, y - height + head), head, (120, 150, 180), -1)
    _box(image, x - head, y - height + 2 * head, 2 * head, height // 2, color)
    for dx in (-head // 2, head // 2):
        cv2.line(image, (x + dx, y - height // 3), (x + dx, y), (30, 30, 40), max(3, head // 2))


def _nothing(image: Image, rng: np.random.Generator) -> None:
    """A frame of the street alone."""


_SCENES = {
    "garbage_overflow": _garbage,
    "fire_lane_blocked": _fire_lane,
    "ebike_indoor_charging": _ebike,
    "smoke_fire": _smoke_fire,
    "waterlogging": _waterlogging,
    "facility_damage": _facility_damage,
    "loitering": _loitering,
}


# --- checkpoint plate and spoiled frames -----------------------------------------------


def _checkpoint_plate(image: Image, rng: np.random.Generator, text: str) -> None:
    """A white plate on a wall with the checkpoint's QR code, large enough to decode."""
    h, w = image.shape[:2]
    code = cv2.QRCodeEncoder.create().encode(text)
    module = max(3, w // 160)
    # The encoder's output has a 2-module quiet zone; the plate adds 2 more.
    side = code.shape[0] * module
    qr = cv2.resize(code, (side, side), interpolation=cv2.INTER_NEAREST)
    pad = 2 * module
    x = int(rng.uniform(0.05, 0.95) * (w - side - 2 * pad))
    y = int(rng.uniform(0.05, 0.3) * h)
    _box(image, x, y, side + 2 * pad, side + 2 * pad, (245, 245, 245))
    image[y + pad : y + pad + side, x + pad : x + pad + side] = qr[..., None]


def _spoil(image: Image, rng: np.random.Generator, condition: Condition) -> Image:
    if condition == "dark":
        return _to_uint8(image * np.float32(0.08) + _noise(rng, image.shape, 1.5))
    if condition == "blurred":
        return _to_uint8(_soft(image.astype(np.float32), image.shape[1] / 90))
    if condition == "obstructed":
        # Something over most of the lens (mud, a leaf, a hand): near-uniform, out of focus.
        h, w = image.shape[:2]
        lens = np.zeros((h, w), np.float32)
        cv2.ellipse(
            lens,
            (int(w * rng.uniform(0.4, 0.6)), int(h * 0.55)),
            (int(w * 0.62), int(h * 0.7)),
            0,
            0,
            360,
            1.0,
            -1,
        )
        mask = _soft(lens, w / 40)[..., None]
        cover = np.array([30, 45, 55], np.float32) + _noise(rng, image.shape, 1.0)
        return _to_uint8(image * (1 - mask) + cover * mask)
    return image


def _soft(image: Floats, sigma: float) -> Floats:
    """A Gaussian blur of large ``sigma``, done at a reduced scale: the same look, far cheaper."""
    h, w = image.shape[:2]
    factor = max(1, int(sigma // 4))
    small = cv2.resize(
        image, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_AREA
    )
    blurred = cv2.GaussianBlur(small, (0, 0), sigma / factor)
    return np.asarray(cv2.resize(blurred, (w, h), interpolation=cv2.INTER_LINEAR), np.float32)


def _noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> Floats:
    """Sensor noise, in float32 (a 1920×1080 frame's worth in float64 is slow to work with)."""
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma)


def _to_uint8(image: Floats) -> Image:
    """Rounded and saturated to 0–255."""
    return np.asarray(cv2.convertScaleAbs(np.maximum(image, 0)), np.uint8)
