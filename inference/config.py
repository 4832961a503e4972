"""Engine configuration: a plain dataclass, filled from app settings by the caller."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class EngineConfig:
    models_dir: Path = Path("models")
    # ONNX Runtime execution providers in order of preference: "tensorrt", "cuda", "cpu".
    providers: tuple[str, ...] = ("cpu",)
    intra_op_threads: int = 0  # 0 lets ONNX Runtime choose
    inter_op_threads: int = 1
    ort_spinning: bool = False  # let idle ORT threads busy-wait (lower latency, more CPU)
    allow_noncommercial_models: bool = False
    # Where `models fetch` downloads from: None uses each model's catalogue URL; a base URL
    # (an internal mirror) is joined with the model's file name.
    models_base_url: str | None = None

    detector: str = "yunet"  # "yunet" or "scrfd_2.5g" when installed
    swapper: str = "classic"  # "classic" or "inswapper_128" when installed
    enhancer: str = "gfpgan_1.4"
    detection_score_threshold: float = 0.6
    min_face_size: int = 24  # pixels, shorter side of the face box
    detector_input_size: int = 640  # long side fed to a dynamic-shape detector (yunet_dynamic)
    source_cache_size: int = 16  # source images whose face analysis an Engine keeps
    enhancer_strength: float = 0.8  # 1.0: restored face only; less keeps original texture

    # Input safety
    max_image_side: int = 8000
    max_image_pixels: int = 40_000_000
    max_video_seconds: float = 600.0
    max_video_side: int = 4096

    # AI-generated label
    label_enabled: bool = True
    label_text: str = "AI-generated"
    label_position: str = "bottom-right"  # top-left, top-right, bottom-left, bottom-right
    metadata_tag: str = "SwapMeter AI-generated"

    # Video
    video_batch_frames: int = 8
    # Between detections, faces are tracked by optical flow; re-detect at least this often
    # and as soon as a tracked face moved more than this fraction of its size.
    video_redetect_every: int = 5
    video_track_max_shift: float = 0.1
    video_crf: int = 20
    video_preset: str = "veryfast"
    # Batches swapped at once, each lane on its own thread with its own face tracker;
    # 0 means one per core (at most 4).
    video_workers: int = 0
    temp_dir: Path | None = None  # None: the system temp dir

    extra: dict[str, str] = field(default_factory=dict)
