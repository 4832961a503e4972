"""inference.video.probe: size, rate, audio, and the length (billed) measured from the
video stream's packets, whatever the container's header claims."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from inference.config import EngineConfig
from inference.errors import ImagePixelExceed, VideoDecodeFailed, VideoTooLong
from inference.media import sniff
from inference.video import ffmpeg_exe, probe, swap_video
from tests.inference.video.clips import STILL, Identity, clip_with_a_12s_soundtrack, make_video


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


def test_the_length_billed_is_the_video_streams_not_a_longer_audio_tracks(
    tmp_path: Path,
) -> None:
    """A 2 s clip with a 12 s soundtrack: the container says 12 s, the swap processes 2 s
    of video, and 2 s is what is measured (so priced), also under a 5 s limit."""
    long_audio = clip_with_a_12s_soundtrack(tmp_path)
    info = probe(long_audio, EngineConfig(max_video_seconds=5))
    assert info.duration == pytest.approx(2.0, abs=0.05) and info.frame_count == 60


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
