"""eval-embedded --versus-precision: one model in two precisions compared on rendered and altered
scenes."""

import numpy as np
import torch

from ros_mm_perception.commands.eval_embedded import precision_agreement, unseen_copy
from ros_mm_perception.core.models.clip_model import load_clip
from ros_mm_perception.core.perception.labeler import ClipLabeler
from ros_mm_perception.synthetic.scenes import all_combos, render_scene


def test_unseen_copy_alters_the_scene_repeatably():
    image = render_scene(np.random.default_rng(0), n_objects=1, size=(64, 64)).image
    copies = [unseen_copy(np.random.default_rng(5), image) for _ in range(2)]
    assert copies[0].shape == image.shape and copies[0].dtype == np.uint8
    np.testing.assert_array_equal(copies[0], copies[1])
    assert np.abs(copies[0].astype(int) - image).mean() > 1.0


def test_precision_agreement_reports_both_scene_kinds(tiny_clip_dir):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fp32 = ClipLabeler(load_clip(str(tiny_clip_dir), device="cpu", precision="fp32"))
        bf16 = ClipLabeler(load_clip(str(tiny_clip_dir), device="cpu", precision="bf16"))
        same = precision_agreement(fp32, fp32, seed=1, per_combo=1)
        other = precision_agreement(fp32, bf16, seed=1, per_combo=1)
    finally:
        torch.set_num_threads(threads)
    for report in (same, other):
        assert set(report) == {"rendered", "unseen"}
        assert all(r["n"] == len(all_combos()) for r in report.values())
    assert all(r["top1_agreement"] == 1.0 and r["embedding_cosine_min"] > 0.9999
               for r in same.values())
    assert all(r["top1"] == r["top1_other"] for r in same.values())
    assert all(0.99 < r["embedding_cosine_min"] < 1.0 for r in other.values())
