"""swap_video keeps picture and sound together: the soundtrack cut to the video, variable
rates resampled in step, delays kept, and sound the AAC encoder cannot carry mixed down."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from inference.config import EngineConfig
from inference.video import ffmpeg_exe, probe, swap_video
from tests.inference.video.clips import (
    Identity,
    beep_seconds,
    clip_with_a_12s_soundtrack,
    container_seconds,
    flash_and_beep,
    flash_seconds,
)


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
