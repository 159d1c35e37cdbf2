"""The plain-text summary printed at the end of an offline run."""

from __future__ import annotations

from ros_mm_perception.offline.runner import Summary


def format_summary(summary: Summary, outputs: bool = True) -> str:
    """Frames, skips, time, what was damaged, a per-phrase table (detections, distinct tracks, mean
    score) and the outputs."""
    rate = summary.frames / summary.seconds if summary.seconds > 0 else 0.0
    lines = [
        f"frames      {summary.frames} processed, {summary.skipped} skipped",
        f"detections  {summary.detections}",
        f"time        {summary.seconds:.1f} s ({rate:.1f} frames/s)",
    ]
    if summary.aux_skipped:
        lines.append(f"unusable depth/camera_info messages: {summary.aux_skipped}")
    lines.extend(f"damaged     {note}" for note in summary.damaged)
    if summary.transforms_rejected:
        from ros_mm_perception.offline.bag_transforms import rejection_text

        lines.append(f"transforms  {sum(summary.transforms_rejected.values())} rejected "
                     f"({rejection_text(summary.transforms_rejected)})")
    rows = summary.rows()
    if rows:
        width = max(len("phrase"), *(len(r[0]) for r in rows))
        lines.append("")
        lines.append(f"{'phrase':<{width}}  detections  tracks  mean score")
        for phrase, count, tracks, mean in rows:
            lines.append(f"{phrase:<{width}}  {count:>10}  {tracks:>6}  {mean:>10.2f}")
    if outputs and summary.outputs:
        lines.append("")
        lines.extend(f"wrote {path}" for path in summary.outputs)
    return "\n".join(lines)
