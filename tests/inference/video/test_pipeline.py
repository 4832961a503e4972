"""swap_video: timing, audio, size and the AI tag kept; cancel, failures and clean-up;
rotation and pixel shape."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from inference.config import EngineConfig
from inference.errors import Cancelled, InferenceError, VideoDecodeFailed
from inference.faces import YuNetDetector
from inference.video import ffmpeg_exe, probe, swap_video
from tests.inference.video.clips import (
    FACES_DIR,
    FaceBoxPainter,
    Identity,
    container_comment,
    face_region,
    ffmpeg_children,
    make_video,
    read_frames,
)


def test_swapped_video_keeps_timing_audio_and_carries_the_ai_tag(
    clip: Path, tmp_path: Path, workdir: Path, config: EngineConfig, detector: YuNetDetector
) -> None:
    seen: list[tuple[int, int]] = []
    out = tmp_path / "out.mp4"
    result = swap_video(
        FaceBoxPainter(detector),
        None,
        clip,
        out,
        config=config,
        progress=lambda done, total: seen.append((done, total)),
    )
    src, dst = probe(clip), probe(out)
    assert dst.fps == pytest.approx(src.fps)
    assert abs(dst.frame_count - src.frame_count) <= 1
    assert dst.duration == pytest.approx(src.duration, abs=0.1)
    assert dst.has_audio and dst.codec == "h264"
    assert container_comment(out) == config.metadata_tag
    assert result.frames == src.frame_count and result.has_audio
    assert result.seconds_done == pytest.approx(2.0, abs=0.05)
    assert result.faces_swapped_frames == src.frame_count
    assert seen[-1] == (src.frame_count, src.frame_count)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)

    before, after = read_frames(clip), read_frames(out)
    for i in (0, 30, 59):
        ys, xs = face_region(i, 30, 2.0)
        face = after[i][ys, xs].astype(int)
        assert face[..., 1].mean() > 200 and face[..., 2].mean() < 60  # painted green
        assert np.abs(face - before[i][ys, xs].astype(int)).mean() > 40
    # Outside the face the picture is the source's, up to re-encoding loss.
    assert np.abs(after[0][:, :40].astype(int) - before[0][:, :40].astype(int)).mean() < 6
    assert list(workdir.iterdir()) == []
    assert ffmpeg_children() == []


def test_swap_without_audio_and_with_odd_frame_size(
    tmp_path: Path, workdir: Path, config: EngineConfig
) -> None:
    # 4:4:4 chroma lets H.264 carry odd sides, as phones' and editors' exports can.
    src = make_video(tmp_path / "odd.mp4", seconds=1.0, size=(241, 135), pix_fmt="yuv444p")
    out = tmp_path / "out.mp4"

    result = swap_video(Identity(), None, src, out, keep_audio=False, config=config)
    info = probe(out)
    assert (info.width, info.height) == (240, 134) == (result.width, result.height)
    assert not info.has_audio and not result.has_audio
    assert info.frame_count == 30
    assert list(workdir.iterdir()) == []


def test_keep_fps_false_resamples_fast_sources(
    tmp_path: Path, workdir: Path, config: EngineConfig
) -> None:
    src = make_video(tmp_path / "fast.mp4", seconds=1.0, fps=60, size=(160, 90))

    result = swap_video(Identity(), None, src, tmp_path / "o.mp4", keep_fps=False, config=config)
    info = probe(tmp_path / "o.mp4")
    assert info.fps == pytest.approx(25.0)
    assert abs(info.frame_count - 25) <= 1 and result.frames == info.frame_count
    assert info.duration == pytest.approx(1.0, abs=0.1) and info.has_audio


def test_a_resampled_video_one_rounded_frame_short_is_still_complete(
    tmp_path: Path, config: EngineConfig
) -> None:
    """61 frames at 60 fps (1.017 s) resampled to 25 fps come out as 25 frames (1.0 s):
    rounding, not a damaged upload, so the swap counts as complete (billed its probed
    2 started seconds, not the 1 s that frames / fps would say)."""
    src = make_video(tmp_path / "fast.mp4", seconds=1.01, fps=60, size=(160, 90), audio=False)
    assert probe(src).frame_count == 61

    result = swap_video(Identity(), None, src, tmp_path / "o.mp4", keep_fps=False, config=config)
    assert result.frames == 25 and result.seconds_done == pytest.approx(1.0)
    assert result.complete


def test_cancel_part_way_raises_cancelled_and_leaves_nothing_behind(
    clip: Path, tmp_path: Path, workdir: Path, config: EngineConfig, detector: YuNetDetector
) -> None:
    stop = threading.Event()

    def progress(done: int, total: int) -> None:
        if done >= 24:
            stop.set()

    out = tmp_path / "out.mp4"
    with pytest.raises(Cancelled) as err:
        swap_video(
            FaceBoxPainter(detector), None, clip, out, config=config, progress=progress, cancel=stop
        )
    assert 0 < err.value.frames_done < 60
    assert err.value.details["frames_done"] == err.value.frames_done
    assert err.value.details["seconds_done"] == pytest.approx(err.value.frames_done / 30)
    assert err.value.code == "Canceled"
    assert not out.exists()
    assert list(workdir.iterdir()) == []
    assert ffmpeg_children() == []


def test_cancel_accepts_a_callable(clip: Path, tmp_path: Path, config: EngineConfig) -> None:
    calls = iter(range(1000))

    with pytest.raises(Cancelled) as err:
        swap_video(
            Identity(),
            None,
            clip,
            tmp_path / "o.mp4",
            config=config,
            cancel=lambda: next(calls) >= 3,
        )
    assert 0 < err.value.frames_done < 60


def test_a_failing_frame_swapper_reports_frames_done_and_cleans_up(
    clip: Path, tmp_path: Path, workdir: Path, config: EngineConfig, detector: YuNetDetector
) -> None:
    out = tmp_path / "out.mp4"
    with pytest.raises(InferenceError) as err:
        swap_video(FaceBoxPainter(detector, fail_after=20), None, clip, out, config=config)
    assert err.value.details["frames_done"] == 16  # two whole batches of eight
    assert "model crashed" in err.value.message
    assert not out.exists()
    assert list(workdir.iterdir()) == []
    assert ffmpeg_children() == []


@pytest.mark.parametrize("content", [b"", b"not a video at all\n" * 50])
def test_swap_video_rejects_undecodable_files_without_leftovers(
    tmp_path: Path, workdir: Path, config: EngineConfig, content: bytes
) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)

    with pytest.raises(VideoDecodeFailed):
        swap_video(Identity(), None, bad, tmp_path / "out.mp4", config=config)
    assert not (tmp_path / "out.mp4").exists()
    assert list(workdir.iterdir()) == []
    assert ffmpeg_children() == []


def test_a_truncated_upload_fails_as_a_decode_error(
    clip: Path, tmp_path: Path, workdir: Path, config: EngineConfig
) -> None:
    # Cut the file after its (faststart-less) media data: the index at the end is gone.
    data = clip.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])

    with pytest.raises(VideoDecodeFailed):
        swap_video(Identity(), None, cut, tmp_path / "out.mp4", config=config)
    assert list(workdir.iterdir()) == []
    assert ffmpeg_children() == []


def test_real_engine_swaps_the_face_in_a_small_video(
    clip: Path, tmp_path: Path, workdir: Path, config: EngineConfig
) -> None:
    engine_module = pytest.importorskip("inference.engine")
    engine = engine_module.Engine(config)
    if not hasattr(engine, "frame_swapper"):
        pytest.skip("Engine.frame_swapper is not available yet")
    out = tmp_path / "swapped.mp4"
    result = swap_video(
        engine,
        (FACES_DIR / "biden.jpg").read_bytes(),
        clip,
        out,
        faces="largest",
        config=config,
    )
    src, dst = probe(clip), probe(out)
    assert abs(dst.frame_count - src.frame_count) <= 1
    assert dst.fps == pytest.approx(src.fps) and dst.has_audio
    assert container_comment(out) == config.metadata_tag
    assert result.faces_swapped_frames >= src.frame_count - 2
    before, after = read_frames(clip), read_frames(out)
    for i in (0, 30, 59):
        ys, xs = face_region(i, 30, 2.0)
        diff = np.abs(after[i][ys, xs].astype(int) - before[i][ys, xs].astype(int)).mean()
        assert diff > 8, f"frame {i}: face region barely changed ({diff:.1f})"
    assert list(workdir.iterdir()) == []
    assert ffmpeg_children() == []


def test_phone_videos_with_a_rotation_flag_come_out_upright(
    tmp_path: Path, workdir: Path, config: EngineConfig
) -> None:
    flat = make_video(tmp_path / "flat.mp4", seconds=1.0, size=(160, 90), audio=False)
    rotated = tmp_path / "rotated.mp4"
    subprocess.run(
        [ffmpeg_exe(), "-loglevel", "error", "-display_rotation", "90", "-i", str(flat)]
        + ["-c", "copy", str(rotated)],
        check=True,
    )
    info = probe(rotated)
    assert (info.width, info.height, info.rotation) == (90, 160, 90)

    class Identity:
        def process(self, frames: list[np.ndarray]) -> list[np.ndarray]:
            assert frames[0].shape == (160, 90, 3)
            return frames

    out = tmp_path / "out.mp4"
    swap_video(Identity(), None, rotated, out, config=config)
    upright = probe(out)
    assert (upright.width, upright.height, upright.rotation) == (90, 160, 0)


@pytest.mark.parametrize(
    ("rotation", "shape", "sar", "dar"),
    [(0, (320, 240), "4/3", "16:9"), (90, (240, 320), "3/4", "9:16")],
    ids=["upright", "rotated"],
)
def test_anamorphic_video_keeps_its_pixel_shape(
    tmp_path: Path,
    config: EngineConfig,
    rotation: int,
    shape: tuple[int, int],
    sar: str,
    dar: str,
) -> None:
    """320x240 stored, with pixels 4/3 wide: shown 16:9. Re-encoded without its pixel
    shape it came back squeezed to 4:3. Turned by a rotation flag, each pixel turns too."""
    stored = tmp_path / "stored.mp4"
    subprocess.run(
        [ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
         "-t", "0.4", "-vf", "setsar=4/3", "-c:v", "libx264", "-preset", "ultrafast",
         "-pix_fmt", "yuv420p", str(stored)],
        check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    anamorphic = tmp_path / "anamorphic.mp4"
    subprocess.run(
        [ffmpeg_exe(), "-loglevel", "error", "-display_rotation", str(rotation),
         "-i", str(stored), "-c", "copy", str(anamorphic)],
        check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    out = tmp_path / "out.mp4"
    swap_video(Identity(), None, anamorphic, out, config=config)
    stream = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-i", str(out)],
        capture_output=True, text=True, stdin=subprocess.DEVNULL,
    ).stderr  # fmt: skip
    assert f"{shape[0]}x{shape[1]} [SAR {sar.replace('/', ':')} DAR {dar}]" in stream
    assert probe(anamorphic).sample_aspect == sar
