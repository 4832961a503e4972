"""Video: probe an upload, swap faces frame by frame, re-encode it to an H.264 MP4.

- ``probe``: streams, size, rate, and the length (billed) measured from the packets;
- ``ffmpeg``: every ffmpeg command line (decoder, encoder, audio) and child handling;
- ``pipeline``: ``swap_video``, the run that ties the stages and lanes together;
- ``stages``: the reader and writer threads on ffmpeg's pipes;
- ``lanes``: batches swapped on one thread per FrameSwapper, in order;
- ``workdir``: each swap's work folder, and the sweep of those a dead process left.
"""

from __future__ import annotations

from inference.video.ffmpeg import ffmpeg_exe
from inference.video.lanes import FrameSwapperLike, processing_lanes
from inference.video.pipeline import CancelCheck, ProgressCallback, VideoResult, swap_video
from inference.video.probe import VideoInfo, probe
from inference.video.workdir import sweep_stale_workdirs

__all__ = [
    "CancelCheck",
    "FrameSwapperLike",
    "ProgressCallback",
    "VideoInfo",
    "VideoResult",
    "ffmpeg_exe",
    "probe",
    "processing_lanes",
    "sweep_stale_workdirs",
    "swap_video",
]
