"""Video pipeline: probing, swapping with timing/audio/metadata kept, cancel and failures.

Test videos are made here from the stills in shared/media/faces: a pan over
obama-720p.jpg (the face stays in view) with a sine-tone audio track, small and short so
the suite stays fast on two cores.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from inference.config import EngineConfig
from inference.errors import (
    Cancelled,
    ImagePixelExceed,
    InferenceError,
    VideoDecodeFailed,
    VideoTooLong,
)
from inference.faces import YuNetDetector
from inference.media import sniff
from inference.runtime import get_session
from inference.video import ffmpeg_exe, probe, swap_video, sweep_stale_workdirs

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
MODELS_DIR = Path(os.environ.get("SWAPMETER_MODELS_DIR", SHARED / "models"))
FACES_DIR = SHARED / "media" / "faces"
STILL = FACES_DIR / "obama-720p.jpg"
FACE_BOX_720P = (581, 59, 747, 271)  # the face in obama-720p.jpg (x1, y1, x2, y2)
PAN_FROM, PAN_BY = 344, 160  # crop window x at t=0 and how far it pans over the clip


def make_video(
    out: Path,
    *,
    seconds: float = 2.0,
    fps: int = 30,
    size: tuple[int, int] = (320, 180),
    audio: bool = True,
    pix_fmt: str = "yuv420p",
) -> Path:
    """A pan over obama-720p.jpg: 640x360 window moving right, scaled to ``size``."""
    w, h = size
    vf = (
        f"crop=640:360:x='{PAN_FROM}+{PAN_BY}*t/{seconds}':y=0,"
        f"scale={w}:{h},setsar=1,format={pix_fmt}"
    )
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y"]
    cmd += ["-loop", "1", "-framerate", str(fps), "-t", str(seconds), "-i", str(STILL)]
    if audio:
        cmd += ["-f", "lavfi", "-t", str(seconds), "-i", "sine=frequency=440:sample_rate=44100"]
    cmd += ["-vf", vf, "-c:v", "libx264", "-preset", "ultrafast", "-g", str(fps)]
    if audio:
        cmd += ["-c:a", "aac", "-b:a", "64k"]
    cmd += [str(out)]
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)
    return out


def read_frames(path: Path) -> np.ndarray:
    info = probe(path)
    raw = subprocess.run(
        [
            ffmpeg_exe(),
            "-loglevel",
            "error",
            "-i",
            str(path),
            "-f",
            "rawvideo",
            "-pix_fmt",
            "bgr24",
            "-",
        ],
        check=True,
        capture_output=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, info.height, info.width, 3)


def container_comment(path: Path) -> str | None:
    text = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True
    ).stderr
    for line in text.splitlines():
        key, _, value = line.strip().partition(":")
        if key.strip() == "comment":
            return value.strip()
    return None


def container_seconds(path: Path) -> float:
    """The whole file's length as ffmpeg reports it (its longest stream, audio included)."""
    run = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-i", str(path)],
        capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    found = re.search(r"Duration: (\d+):(\d+):(\d+\.\d+)", run.stderr)
    assert found, run.stderr
    hours, minutes, seconds = found.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def ffmpeg_children() -> list[int]:
    """Live child processes of this test process (ffmpeg must never outlive a call)."""
    me = str(os.getpid())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        command = stat.split("(", 1)[1].rsplit(")", 1)[0]
        fields = stat.rsplit(")", 1)[1].split()
        # Only ffmpeg: on a machine without servers the test session's own embedded
        # PostgreSQL and Redis are children of this process too.
        if fields[1] == me and fields[0] != "Z" and "ffmpeg" in command:
            found.append(int(entry.name))
    return found


class FaceBoxPainter:
    """A FrameSwapper stand-in: paints detected face boxes solid green."""

    def __init__(self, detector: YuNetDetector, fail_after: int | None = None) -> None:
        self.detector = detector
        self.faces_swapped_frames = 0
        self.seen = 0
        self.fail_after = fail_after

    def process(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for frame in frames:
            self.seen += 1
            if self.fail_after is not None and self.seen > self.fail_after:
                raise RuntimeError("model crashed")
            frame = frame.copy()
            faces = self.detector.detect(frame)
            for face in faces:
                x1, y1, x2, y2 = face.box.astype(int)
                cv2.rectangle(frame, (x1, y1), (x2, y2), (0, 255, 0), -1)
            self.faces_swapped_frames += bool(faces)
            out.append(frame)
        return out


@pytest.fixture(scope="module")
def detector() -> YuNetDetector:
    config = EngineConfig()
    return YuNetDetector(get_session(MODELS_DIR / "face_detection_yunet_2023mar.onnx", config))


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("clips") / "pan.mp4", seconds=2.0)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    return d


@pytest.fixture
def config(workdir: Path) -> EngineConfig:
    return EngineConfig(models_dir=MODELS_DIR, temp_dir=workdir, video_preset="ultrafast")


def face_region(frame_index: int, fps: float, seconds: float, scale: float = 0.5) -> tuple:
    """Where the face is in frame ``frame_index`` of a make_video clip (y and x slices)."""
    x0 = PAN_FROM + PAN_BY * (frame_index / fps) / seconds
    x1, y1, x2, y2 = FACE_BOX_720P
    return (
        slice(int(y1 * scale) + 4, int(y2 * scale) - 4),
        slice(int((x1 - x0) * scale) + 6, int((x2 - x0) * scale) - 6),
    )


def test_probe_reports_duration_fps_exact_frames_size_and_audio(clip: Path) -> None:
    info = probe(clip)
    assert info.fps == pytest.approx(30.0)
    assert info.frame_count == 60
    assert info.duration == pytest.approx(2.0, abs=0.05)
    assert (info.width, info.height) == (320, 180)
    assert info.has_audio and info.audio_codec == "aac"
    assert info.codec == "h264"


@pytest.mark.parametrize("content", [b"", b"this is a text file, not a video\n" * 20])
def test_probe_rejects_empty_and_non_video_files(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "upload.mp4"
    bad.write_bytes(content)
    with pytest.raises(VideoDecodeFailed):
        probe(bad)


def test_probe_rejects_a_still_image_renamed_mp4(tmp_path: Path) -> None:
    # A JPEG is not in the demuxer whitelist: it is an image, not a video upload.
    bad = tmp_path / "photo.mp4"
    bad.write_bytes(STILL.read_bytes())
    with pytest.raises(VideoDecodeFailed):
        probe(bad)


def test_probe_refuses_videos_longer_than_the_limit(clip: Path) -> None:
    with pytest.raises(VideoTooLong) as err:
        probe(clip, EngineConfig(max_video_seconds=1.5))
    assert err.value.code == "VideoTooLong"


def test_probe_stops_listing_frames_past_the_most_an_accepted_video_can_have(
    clip: Path,
) -> None:
    """At most max_video_seconds x 480 fps frames are listed (here 0.1 s: 48 of the 2 s
    clip's 60), so an upload of countless tiny packets is refused without listing them
    all."""
    with pytest.raises(VideoTooLong, match="more than 48 frames"):
        probe(clip, EngineConfig(max_video_seconds=0.1))


def clip_with_a_12s_soundtrack(tmp_path: Path) -> Path:
    """The 2 s, 60-frame clip with a 12 s sine soundtrack: the container says 12 s."""
    clip = make_video(tmp_path / "clip.mp4", seconds=2.0, audio=False)
    long_audio = tmp_path / "long-audio.mp4"
    subprocess.run(
        [ffmpeg_exe(), "-loglevel", "error", "-i", str(clip), "-f", "lavfi", "-t", "12",
         "-i", "sine=frequency=440", "-c:v", "copy", "-c:a", "aac", str(long_audio)],
        check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return long_audio


def test_the_length_billed_is_the_video_streams_not_a_longer_audio_tracks(
    tmp_path: Path,
) -> None:
    """A 2 s clip with a 12 s soundtrack: the container says 12 s, the swap processes 2 s
    of video, and 2 s is what is measured (so priced), also under a 5 s limit."""
    long_audio = clip_with_a_12s_soundtrack(tmp_path)
    info = probe(long_audio, EngineConfig(max_video_seconds=5))
    assert info.duration == pytest.approx(2.0, abs=0.05) and info.frame_count == 60


def test_a_soundtrack_longer_than_the_video_is_cut_to_the_video(
    tmp_path: Path, config: EngineConfig
) -> None:
    """The 2 s clip with a 12 s soundtrack comes back 2 s long, sound included: not 10 s
    of audio over a frozen last frame, in a file ten times the size."""
    long_audio = clip_with_a_12s_soundtrack(tmp_path)
    out = tmp_path / "out.mp4"

    result = swap_video(Identity(), None, long_audio, out, config=config)
    assert result.has_audio and probe(out).has_audio
    assert container_seconds(long_audio) == pytest.approx(12.0, abs=0.1)
    assert container_seconds(out) == pytest.approx(2.0, abs=0.1)


def test_a_header_that_understates_the_length_is_not_believed(tmp_path: Path) -> None:
    """A 6 s video whose Matroska header was edited to say 1 s is measured as 6 s: it is
    refused over a 5 s limit, and could not be swapped for the price of 1 s."""
    mkv = tmp_path / "six.mkv"
    subprocess.run(
        [ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=10",
         "-t", "6", "-c:v", "libx264", "-preset", "ultrafast", str(mkv)],
        check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    data = bytearray(mkv.read_bytes())
    at = data.find(b"\x44\x89\x88")  # Segment Info Duration, a float64 in milliseconds
    assert at > 0 and struct.unpack(">d", data[at + 3 : at + 11])[0] == pytest.approx(6000)
    data[at + 3 : at + 11] = struct.pack(">d", 1000.0)
    mkv.write_bytes(bytes(data))
    assert (
        "Duration: 00:00:01.00"
        in subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-i", str(mkv)], capture_output=True, text=True
        ).stderr
    )
    assert probe(mkv).duration == pytest.approx(6.0, abs=0.15)
    with pytest.raises(VideoTooLong):
        probe(mkv, EngineConfig(max_video_seconds=5))


def test_a_constant_rate_video_is_measured_to_its_last_frame(tmp_path: Path) -> None:
    """With x264's default B-frames the counting pass ends two frames early: a 5-frame
    video at 1 fps lasts (and is priced) 5 s, not 4."""
    slow = tmp_path / "slow.mp4"
    subprocess.run(
        [ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=1",
         "-t", "5", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(slow)],
        check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    info = probe(slow)
    assert info.frame_count == 5 and info.duration == pytest.approx(5.0)


@pytest.mark.parametrize(
    "signature",
    [b"\0\0\0\x0cftypjp2 ", b"\x1a\x45\xdf\xa3\x84\x42\x82\x81\x78"],
    ids=["iso-box", "ebml"],
)
def test_a_raw_stream_behind_a_container_signature_is_refused(
    tmp_path: Path, signature: bytes
) -> None:
    """Raw H.264 carries no timestamps: read as such, seconds of it measured one frame and
    were priced as one second, past any length limit. An upload is opened only as one of
    the containers the API admits, so this one is unreadable."""
    clip = make_video(tmp_path / "clip.mp4", seconds=4.0, audio=False)
    raw = subprocess.run(
        [ffmpeg_exe(), "-loglevel", "error", "-i", str(clip), "-c", "copy",
         "-bsf:v", "h264_mp4toannexb", "-f", "h264", "-"],
        check=True, capture_output=True, stdin=subprocess.DEVNULL,
    ).stdout  # fmt: skip
    disguised = tmp_path / "disguised.mp4"
    disguised.write_bytes(signature + raw)
    assert sniff(disguised.read_bytes()) == "video"  # what the API takes it for
    with pytest.raises(VideoDecodeFailed):
        probe(disguised, EngineConfig(max_video_seconds=2))


def test_probe_refuses_frames_larger_than_the_limit(clip: Path) -> None:
    with pytest.raises(ImagePixelExceed):
        probe(clip, EngineConfig(max_video_side=200))


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


def test_a_rotation_flag_under_many_metadata_tags_is_still_seen(tmp_path: Path) -> None:
    """Matroska files can carry a dozen tags per stream; ffmpeg prints the rotation after
    them. It must still be read, or the frames come out scrambled."""
    flat = make_video(tmp_path / "flat.mp4", seconds=0.5, size=(160, 90), audio=False)
    tagged = tmp_path / "tagged.mkv"
    tags = [arg for i in range(14) for arg in ("-metadata:s:v:0", f"tag{i}=value {i}")]
    subprocess.run(
        [ffmpeg_exe(), "-loglevel", "error", "-display_rotation", "90", "-i", str(flat),
         "-c", "copy", *tags, str(tagged)],
        check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    info = probe(tagged)
    assert (info.width, info.height, info.rotation) == (90, 160, 90)


def test_a_variable_rate_video_keeps_its_length_and_pace(
    tmp_path: Path, workdir: Path, config: EngineConfig
) -> None:
    """Phones record at a variable rate: 30 frames in the first second, then 20 over two
    more, with 3 s of sound. The swapped video lasts 3 s too (resampled to a constant 30
    fps), rather than playing its 50 frames in 1.7 s ahead of the sound."""
    vfr = tmp_path / "vfr.mkv"
    subprocess.run(
        [ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=30",
         "-f", "lavfi", "-i", "sine=frequency=440", "-t", "3",
         "-vf", "select='lt(n,30)+not(mod(n,3))'", "-fps_mode", "vfr",
         "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(vfr)],
        check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    info = probe(vfr)
    assert info.frame_count == 50 and not info.constant_rate
    assert info.duration == pytest.approx(3.0, abs=0.1)

    out = tmp_path / "out.mp4"
    result = swap_video(Identity(), None, vfr, out, config=config)
    swapped = probe(out)
    assert swapped.duration == pytest.approx(3.0, abs=0.1) and swapped.constant_rate
    assert result.seconds_done == pytest.approx(3.0, abs=0.1)


def test_sound_the_aac_encoder_cannot_carry_is_mixed_down_not_a_failure(
    tmp_path: Path, workdir: Path, config: EngineConfig
) -> None:
    """16-channel PCM (a studio export) is re-encoded for MP4 as stereo AAC, rather than
    failing the whole video as InferenceFailed."""
    studio = tmp_path / "studio.mov"
    subprocess.run(
        [ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=30",
         "-f", "lavfi", "-i", "aevalsrc=sin(440*2*PI*t):c=hexadecagonal:s=44100", "-t", "1",
         "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "pcm_s16le", str(studio)],
        check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert probe(studio).audio_layout == "hexadecagonal"

    out = tmp_path / "out.mp4"
    swap_video(Identity(), None, studio, out, config=config)
    swapped = probe(out)
    assert (swapped.audio_codec, swapped.audio_layout) == ("aac", "stereo")


class _LaneEngine:
    """Engine stand-in: hands out identity FrameSwappers and records how they were used."""

    def __init__(self) -> None:
        self.swappers: list[_LaneSwapper] = []

    def frame_swapper(self, source: bytes, **kwargs: object) -> _LaneSwapper:
        swapper = _LaneSwapper()
        self.swappers.append(swapper)
        return swapper


class _LaneSwapper:
    def __init__(self) -> None:
        self.resets = 0
        self.threads: set[str] = set()
        self.last_faces_swapped: list[int] = []

    def reset(self) -> None:
        self.resets += 1

    def process(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        self.threads.add(threading.current_thread().name)
        self.last_faces_swapped = [1] * len(frames)
        return frames


def test_parallel_lanes_keep_frame_order_and_restart_tracking(
    tmp_path: Path, workdir: Path, config: EngineConfig
) -> None:
    src = tmp_path / "counter.mp4"
    subprocess.run(
        [ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=30"]
        + ["-t", "2", "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", str(src)],
        check=True,
    )
    engine = _LaneEngine()
    out = tmp_path / "out.mp4"
    result = swap_video(engine, b"face", src, out, config=config, lanes=3)
    assert len(engine.swappers) == 3
    assert result.frames == 60 and result.faces_swapped_frames == 60
    # 60 frames in batches of 8 = 8 batches over 3 lanes: every batch after a lane's
    # first restarts its tracking, and each lane stays on one thread.
    assert sum(s.resets for s in engine.swappers) == 8 - 3
    assert all(len(s.threads) == 1 for s in engine.swappers)
    before, after = read_frames(src).astype(int), read_frames(out).astype(int)
    for i in range(60):
        same = np.abs(after[i] - before[i]).mean()
        others = [np.abs(after[i] - before[j]).mean() for j in (i - 1, i + 1) if 0 <= j < 60]
        assert same < min(others), f"frame {i} is out of order"


def test_work_folders_of_dead_processes_are_swept(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"swapmeter-video-{dead.pid}-abc"
    fresh = tmp_path / f"swapmeter-video-{dead.pid}-def"
    mine = tmp_path / f"swapmeter-video-{os.getpid()}-ghi"
    for folder in (stale, fresh, mine):
        folder.mkdir()
        (folder / "output.mp4").write_bytes(b"partial")
    old = time.time() - 3600
    for path in (stale, stale / "output.mp4", mine, mine / "output.mp4"):
        os.utime(path, (old, old))

    assert sweep_stale_workdirs(tmp_path) == 1
    assert not stale.exists()
    assert fresh.exists()  # recently written: maybe a live job of another container
    assert mine.exists()  # this process is alive


class Identity:
    """A FrameSwapper stand-in that hands every frame back as it came."""

    def process(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        return frames


def flash_and_beep(out: Path, *, seconds: float, at: float, select: str = "1") -> Path:
    """A gray 30 fps clip whose top-left corner flashes white while a 1 kHz beep sounds, both
    from ``at`` to ``at + 0.2`` s. ``select`` keeps only some frames (a variable rate), which
    are then stamped with their own times; no B-frames, as phones record."""
    flash = f"drawbox=x=0:y=0:w=32:h=32:color=white:t=fill:enable='between(t,{at},{at + 0.2})'"
    beep = f"aevalsrc='if(between(t,{at},{at + 0.2}),sin(2*PI*1000*t),0)':s=44100:d={seconds}"
    subprocess.run(
        [ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i",
         f"color=c=gray:s=160x90:r=30:d={seconds}", "-f", "lavfi", "-i", beep,
         "-vf", f"format=yuv420p,{flash},select='{select}'", "-fps_mode", "vfr",
         "-c:v", "libx264", "-preset", "ultrafast", "-bf", "0", "-c:a", "aac", str(out)],
        check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return out


def flash_seconds(path: Path) -> float:
    """When the top-left corner first shows white: the first frame's time, as stamped."""
    run = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-i", str(path), "-map", "0:v:0",
         "-vf", "crop=16:16:8:8,showinfo", "-f", "null", "-"],
        capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    for line in run.stderr.splitlines():
        frame = re.search(r"pts_time:\s*(-?[\d.]+).*?mean:\[(\d+)", line)
        if frame and int(frame.group(2)) > 200:
            return float(frame.group(1))
    raise AssertionError(f"{path.name} never flashes")


def beep_seconds(path: Path) -> float:
    """When the sound first gets loud, from the file's start (a delayed track included)."""
    pcm = subprocess.run(
        [ffmpeg_exe(), "-loglevel", "error", "-i", str(path), "-map", "0:a:0",
         "-af", "aresample=async=1:first_pts=0", "-ac", "1", "-ar", "8000", "-f", "f32le", "-"],
        capture_output=True, check=True, stdin=subprocess.DEVNULL,
    ).stdout  # fmt: skip
    loud = np.flatnonzero(np.abs(np.frombuffer(pcm, np.float32)) > 0.3)
    assert loud.size, f"{path.name} never beeps"
    return loud[0] / 8000


def test_a_variable_rate_video_with_b_frames_is_billed_its_own_length(tmp_path: Path) -> None:
    """35 frames over exactly 2 s (10 slow ones, then 25 fast), with x264's B-frames: the
    container's average rate is computed over a longer span than the frames take, so
    frames / fps once measured 2.04 s and billed 3 started seconds. It lasts 2 s."""
    vfr = tmp_path / "vfr.mp4"
    subprocess.run(
        [ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "color=c=gray:s=160x90:r=25",
         "-frames:v", "35", "-vf", "setpts='if(lt(N,10),N*0.1/TB,(1+(N-10)*0.02)/TB)'",
         "-fps_mode", "vfr", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(vfr)],
        check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    info = probe(vfr)
    assert info.duration == pytest.approx(2.0, abs=1e-3) and info.frame_count == 35
    assert not info.constant_rate  # so swapped at an even rate, as long as it lasts


def test_a_variable_rate_video_without_b_frames_keeps_picture_and_sound_in_sync(
    tmp_path: Path, config: EngineConfig
) -> None:
    """30 fps with a 15 fps stretch from 1 s to 2 s, no B-frames: its average rate matches
    its length, yet spacing its frames evenly put the flash at 3.0 s half a second before
    the beep. Resampled instead, the flash comes with the beep."""
    vfr = flash_and_beep(
        tmp_path / "vfr.mp4",
        seconds=4,
        at=3.0,
        select=r"if(between(t\,1\,1.99)\,not(mod(n\,2))\,1)",
    )
    out = tmp_path / "out.mp4"
    swap_video(Identity(), None, vfr, out, config=config)
    assert flash_seconds(out) == pytest.approx(3.0, abs=0.05)
    assert beep_seconds(out) == pytest.approx(3.0, abs=0.05)
    assert probe(out).duration == pytest.approx(4.0, abs=0.05)


def test_a_video_track_that_starts_after_its_sound_stays_in_sync_and_billed_its_length(
    tmp_path: Path, config: EngineConfig
) -> None:
    """The first second of a 3 s clip's video cut off, its sound kept whole: the video
    track starts at 1 s and lasts 2 s. It is billed 2 s (not 3), and the swapped video's
    sound starts where its picture does: the flash and the beep at 2.0 s come out together,
    at 1.0 s."""
    whole = flash_and_beep(tmp_path / "whole.mp4", seconds=3, at=2.0)
    late = tmp_path / "late.mp4"
    subprocess.run(
        [ffmpeg_exe(), "-loglevel", "error", "-i", str(whole), "-vf", "trim=start=1",
         "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "copy", "-fps_mode", "passthrough",
         str(late)],
        check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert probe(late).duration == pytest.approx(2.0)
    out = tmp_path / "out.mp4"
    result = swap_video(Identity(), None, late, out, config=config)
    assert flash_seconds(out) == pytest.approx(1.0, abs=0.05)
    assert beep_seconds(out) == pytest.approx(1.0, abs=0.05)
    assert result.complete and result.seconds_done == pytest.approx(2.0)


def test_sound_that_starts_after_the_picture_keeps_its_delay(
    tmp_path: Path, config: EngineConfig
) -> None:
    """The other way round: a soundtrack delayed by half a second (the beep at 2.5 s, the
    flash at 2.0 s) stays delayed. Reading the sound from the video's start must not pull
    it forward."""
    whole = flash_and_beep(tmp_path / "whole.mp4", seconds=3, at=2.0)
    delayed = tmp_path / "delayed.mp4"
    subprocess.run(
        [ffmpeg_exe(), "-loglevel", "error", "-i", str(whole), "-itsoffset", "0.5",
         "-i", str(whole), "-map", "0:v", "-map", "1:a", "-c", "copy", str(delayed)],
        check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    out = tmp_path / "out.mp4"
    swap_video(Identity(), None, delayed, out, config=config)
    assert flash_seconds(out) == pytest.approx(2.0, abs=0.05)
    assert beep_seconds(out) - flash_seconds(out) == pytest.approx(0.5, abs=0.05)


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


def test_a_clip_cut_without_re_encoding_is_as_long_as_it_plays(tmp_path: Path) -> None:
    """``ffmpeg -ss 9 -c copy`` of a 10 s video with one keyframe keeps all its frames and
    an edit list that shows the last second: held and billed 1 s, not 10, and swapped in
    full (every frame it shows, and only those)."""
    long = tmp_path / "ten.mp4"
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:d=10",
         "-c:v", "libx264", "-preset", "ultrafast", "-g", "250", "-pix_fmt", "yuv420p",
         str(long)],
        check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    cut = tmp_path / "cut.mp4"
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-ss", "9", "-i", str(long), "-c", "copy", str(cut)],
        check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    info = probe(cut)
    assert (info.frame_count, info.start) == (25, 0.0)
    assert info.duration == pytest.approx(1.0)
    result = swap_video(Identity(), None, cut, tmp_path / "out.mp4",
                        config=EngineConfig(temp_dir=tmp_path))  # fmt: skip
    assert result.frames == 25 and result.complete
