"""Long videos: 81-frame segments with a 5-frame history hand-over (the official plan), plus an optional tail."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Segment:
    start: int  # first driving frame
    length: int  # frames sampled (4k+1), history frames included
    history: int  # leading frames taken from the previous segment's output (0 for the first)
    pad: int  # frames past the end of the driving video (the last driving frame repeated)

    @property
    def new_frames(self) -> int:
        """Frames this segment adds to the output."""
        return self.length - self.history - self.pad


def plan_segments(n_frames: int, segment: int = 81, overlap: int = 5, keep_tail: bool = False) -> list[Segment]:
    """Split a driving clip of `n_frames` into segments.

    Up to `segment` frames: one segment of the largest 4k+1 frames. Longer: segments of `segment` frames with
    stride `segment - overlap`; each later one re-uses the previous one's last `overlap` output frames. The
    official code drops trailing frames that do not fill a segment; `keep_tail=True` adds one more segment,
    padded with the last driving frame, and the padding is trimmed from the output.
    """
    if n_frames < 1:
        raise ValueError("the driving video has no frames")
    if (segment - 1) % 4 or (overlap - 1) % 4 or not 0 < overlap < segment:
        raise ValueError("segment and overlap must be 4k+1 frames, overlap < segment")
    if n_frames <= segment:
        length = ((n_frames - 1) // 4) * 4 + 1
        if keep_tail and length < n_frames:
            return [Segment(0, length + 4, 0, length + 4 - n_frames)]
        return [Segment(0, length, 0, 0)]
    stride = segment - overlap
    plan = [Segment(0, segment, 0, 0)]
    start = stride
    while start + segment <= n_frames:
        plan.append(Segment(start, segment, overlap, 0))
        start += stride
    covered = start + overlap
    if keep_tail and covered < n_frames:
        remaining = n_frames - start  # history frames included
        length = min(segment, ((remaining - 1 + 3) // 4) * 4 + 1)
        plan.append(Segment(start, length, overlap, length - remaining))
    return plan


def output_frames(plan: list[Segment]) -> int:
    return sum(s.new_frames for s in plan)
