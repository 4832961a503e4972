"""The decode and encode stages: threads moving raw frames through ffmpeg's pipes.

A reader thread cuts the decoder's stdout into batches of frames; a writer thread feeds
swapped batches to the encoder's stdin. Both stop when the run's ``stop`` event is set and
report a failure through the run's ``errors`` list, which the calling thread re-raises.
"""

from __future__ import annotations

import queue
import subprocess
import threading
from typing import Any

import numpy as np

from inference.errors import InferenceError

EOF_MARK = object()
QUEUE_BATCHES = 2  # batches buffered between stages: enough to overlap, bounded memory
POLL_S = 0.1
BATCH_BYTES = 64 << 20  # raw frames per batch, at most


def batch_frames(wanted: int, shape: tuple[int, int, int]) -> int:
    """Frames per batch: ``wanted``, fewer for large frames.

    Bound a batch's memory too: a few 4K frames weigh as much as dozens of 720p ones.
    """
    frame_bytes = shape[0] * shape[1] * shape[2]
    return max(1, min(int(wanted), BATCH_BYTES // frame_bytes))


def put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put unless the pipeline is stopping; a full queue never blocks shutdown."""
    while not stop.is_set():
        try:
            q.put(item, timeout=POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _read_exact(stream: Any, buf: bytearray) -> int:
    view = memoryview(buf)
    got = 0
    while got < len(buf):
        n = stream.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def reader(
    proc: subprocess.Popen[bytes],
    shape: tuple[int, int, int],
    batch_size: int,
    out: queue.Queue[Any],
    stop: threading.Event,
    errors: list[BaseException],
) -> None:
    frame_bytes = shape[0] * shape[1] * shape[2]
    batch: list[np.ndarray] = []
    try:
        assert proc.stdout is not None
        while not stop.is_set():
            # A fresh bytearray per frame gives the swapper writable arrays it may keep.
            buf = bytearray(frame_bytes)
            got = _read_exact(proc.stdout, buf)
            if got < frame_bytes:
                break  # end of stream (a torn last frame is dropped)
            batch.append(np.frombuffer(buf, dtype=np.uint8).reshape(shape))
            if len(batch) >= batch_size:
                if not put(out, batch, stop):
                    return
                batch = []
        if batch:
            put(out, batch, stop)
    except BaseException as exc:  # reported to the calling thread
        errors.append(exc)
        stop.set()
    finally:
        put(out, EOF_MARK, stop)


def writer(
    proc: subprocess.Popen[bytes],
    inbox: queue.Queue[Any],
    stop: threading.Event,
    errors: list[BaseException],
) -> None:
    try:
        assert proc.stdin is not None
        while True:
            try:
                item = inbox.get(timeout=POLL_S)
            except queue.Empty:
                if stop.is_set():
                    return
                continue
            if item is EOF_MARK:
                return
            for frame in item:
                proc.stdin.write(np.ascontiguousarray(frame, dtype=np.uint8).data)
    except BaseException as exc:  # BrokenPipe when the encoder died: reported upstream
        errors.append(exc)
        stop.set()
    finally:
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        # ValueError: ``reap`` closed stdin at the same moment (a cancel).
        except (OSError, ValueError):
            pass


def raise_first(errors: list[BaseException], details: dict[str, Any]) -> None:
    """Re-raise a worker thread's failure in the calling thread as a typed error."""
    if not errors:
        return
    exc = errors[0]
    if isinstance(exc, InferenceError | BrokenPipeError | ConnectionResetError):
        raise exc
    raise InferenceError(f"video pipeline failed: {exc}", **details) from exc
