"""Imagery: snapshots handled per second on one core, and the process's peak memory.

Each measurement runs in a fresh process (``cv2.setNumThreads(1)``) that
handles every frame exactly as the service does (``ImageryService.handle_batch``:
header check, decoding, quality, faces and people blurred, QR codes, privacy
version and thumbnail encoded, three files written, the row and camera state
added to the transaction), minus MQTT. Frames go in batches of
``GW_IMAGERY_INFLIGHT`` (8), as the worker takes them from a full queue: the
batch's files are synced and its rows committed to SQLite once. Frames are
read from files a batch at a time, so the peak RSS is the service's, not the
test set's.

Two sets per size:

- ``synthetic``: the robot simulator's night scenes (``imagery.synthetic``),
  with its mix of dark and blurred frames and a checkpoint QR code in one frame of five;
- ``photo``: scikit-image's astronaut photograph (a face, a busy scene)
  scaled to the size: the detectors' worst case.

    .venv/bin/python bench/imagery_throughput.py   # prints the table
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent
ROBOT = "bench-robot-1"
SIZES = ((640, 480), (1920, 1080))
FRAMES = {640: 150, 1920: 40}  # frames per run
DEFAULT_FACE_WIDTH = 240  # GW_IMAGERY_FACE_WIDTH's default
FAST_FACE_WIDTH = 160
SCENES = (
    "garbage_overflow",
    "fire_lane_blocked",
    "ebike_indoor_charging",
    "smoke_fire",
    "waterlogging",
    "facility_damage",
    "loitering",
)


@dataclass(frozen=True, slots=True)
class Result:
    """One run: snapshots per wall second and per CPU second, peak RSS in MiB."""

    rate: float
    cpu_rate: float
    peak_mib: float


def write_frames(directory: Path, kind: str, width: int, height: int, count: int) -> list[Path]:
    """The test set as JPEG files."""
    import cv2

    from imagery.synthetic import pick_condition, synthetic_snapshot

    paths = []
    photo = None
    if kind == "photo":
        path = importlib.metadata.distribution("scikit-image").locate_file(
            "skimage/data/astronaut.png"
        )
        original = cv2.imread(str(path))
        if original is None:
            raise FileNotFoundError(path)
        photo = cv2.resize(original, (width, height), interpolation=cv2.INTER_AREA)
    for i in range(count):
        if photo is not None:
            data = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 85 + i % 10])[1].tobytes()
        else:
            plate = "gridwatch:cp:bench:night-a:cp-01" if i % 5 == 0 else None
            data = synthetic_snapshot(
                i,
                SCENES[i % len(SCENES)],
                width=width,
                height=height,
                condition=pick_condition(i),
                checkpoint_qr=plate,
            )
        target = directory / f"{i:04d}.jpg"
        target.write_bytes(data)
        paths.append(target)
    return paths


def measure(frames: Path, face_width: int = DEFAULT_FACE_WIDTH) -> Result:
    """Handle the frames in ``frames`` in a fresh single-threaded process."""
    with tempfile.TemporaryDirectory(prefix="gridwatch-bench-imagery-") as scratch:
        run = subprocess.run(
            [sys.executable, __file__, "--child", str(frames), scratch, str(face_width)],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        return Result(**json.loads(run.stdout.strip().splitlines()[-1]))


def _child(frames: Path, scratch: Path, face_width: int) -> None:
    """Handle every frame as the service would; print the rates and the peak RSS."""
    import time

    import cv2

    cv2.setNumThreads(1)
    from broker.address import BrokerAddress
    from devices.contract import DeviceRecord
    from gridwatch.clock import WallClock
    from imagery.files import ImageFiles
    from imagery.privacy import DetectorSettings
    from imagery.service import ImageryConfig, ImageryService
    from ingest.directory import StaticDevices
    from registry.db import make_engine, make_sessionmaker, migrate

    url = f"sqlite:///{scratch}/gridwatch.db"
    migrate(url)
    robot = DeviceRecord(
        ROBOT,
        "bench",
        "patrol_robot",
        "巡逻车",
        attributes={"routes": [{"id": "night-a", "checkpoints": [{"id": "cp-01"}]}]},
    )

    class Discard:
        def publish(self, topic: str, payload: bytes) -> None:
            """Events are not what is measured."""

    service = ImageryService(
        ImageryConfig(
            broker=BrokerAddress.from_url("mqtt://127.0.0.1:9"),
            detectors=DetectorSettings.widths(face_width),  # as imagery/main.py does
        ),
        make_sessionmaker(make_engine(url)),
        StaticDevices({ROBOT: robot}),
        ImageFiles(scratch / "imagery"),
        Discard(),
        WallClock(),
    )
    paths = sorted(frames.glob("*.jpg"))
    topic = f"sc/bench/patrol_robot/{ROBOT}/snapshot/"
    clock = WallClock()
    for path in paths[:3]:  # warm up: cascades loaded, SQLite file created
        service.handle(topic + "warm-" + path.stem, path.read_bytes(), clock.now_ms())
    size = service.config.inflight
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(paths), size):
        batch = [(topic + p.stem, p.read_bytes()) for p in paths[start : start + size]]
        service.handle_batch(batch, clock.now_ms())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak_kib = next(
        int(line.split()[1])
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("VmHWM:")
    )
    result = {"rate": len(paths) / wall, "cpu_rate": len(paths) / cpu, "peak_mib": peak_kib / 1024}
    print(json.dumps(result))


def runs(reps: int) -> Iterator[tuple[str, int, int, int, list[Result]]]:
    """Every set at every size, ``reps`` runs each on the same frames.

    The synthetic 640×480 set is also run with faces searched at 160 px
    (GW_IMAGERY_FACE_WIDTH=160): faster, but faces under about 100 px are missed.
    """
    for width, height in SIZES:
        for kind in ("synthetic", "photo"):
            with tempfile.TemporaryDirectory(prefix="gridwatch-bench-frames-") as frames:
                write_frames(Path(frames), kind, width, height, FRAMES[width])
                face_widths = [DEFAULT_FACE_WIDTH]
                if (kind, width) == ("synthetic", 640):
                    face_widths.append(FAST_FACE_WIDTH)
                for face_width in face_widths:
                    results = [measure(Path(frames), face_width) for _ in range(reps)]
                    yield kind, width, height, face_width, results


def main() -> None:
    """One run of every set, as a table."""
    print("| set | size | faces at | snapshots/s | per CPU second | peak RSS |")
    print("| --- | --- | --- | --- | --- | --- |")
    for kind, width, height, face_width, (r,) in runs(1):
        rates = f"{r.rate:.1f} | {r.cpu_rate:.1f}"
        print(f"| {kind} | {width}×{height} | {face_width} px | {rates} | {r.peak_mib:.0f} MiB |")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        _child(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
