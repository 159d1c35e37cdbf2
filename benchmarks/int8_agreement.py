"""Agreement of the embedded detector in int8 with fp32 on the evaluation scenes of eval-grounding.

For each scene set (``own``, ``unseen``): recall and precision of OWL grounding through the
pipeline in each precision (as ``eval-grounding --sources owl --precision P``), and per patch that
fp32 makes a detection of (score above the OWL threshold) whether int8 gives it the same phrase
(top-1 agreement), the largest score difference and the least cosine of the class embeddings.
Prints one JSON object. Run with one thread; add ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2
FBGEMM_ENABLE_INSTRUCTIONS=AVX2`` to take an AVX2-only CPU's int8 kernels.
"""

import argparse
import json

import torch

from ros_mm_perception.commands.bench.harness import cpu_info
from ros_mm_perception.commands.eval_grounding import EVAL_SEED, evaluate, evaluation_scenes
from ros_mm_perception.core.config import PerceptionConfig
from ros_mm_perception.core.models.owl import EMBEDDED
from ros_mm_perception.core.perception.pipeline import PerceptionPipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sets = {kind: evaluation_scenes(kind, EVAL_SEED, args.scenes) for kind in ("own", "unseen")}
    base = PerceptionConfig(device="cpu", owl_model=EMBEDDED, grounding_source="owl",
                            clip_model="", enable_labels=False)
    pipelines = {p: PerceptionPipeline(base.replace(precision=p)) for p in ("fp32", "int8")}
    out = {"cpu": cpu_info(), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "precisions": {p: pl.owl.precision for p, pl in pipelines.items()}, "sets": {}}
    threshold = pipelines["fp32"].detection_threshold()
    for kind, scenes in sets.items():
        row = {p: evaluate(pl, scenes, None) for p, pl in pipelines.items()}
        agree = total = 0
        score_diff, cosine = 0.0, 1.0
        for scene, present, absent in scenes:
            phrases = present + [absent]
            encodings = []
            for pl in pipelines.values():
                owl = pl.owl
                pixels = owl.preprocessor([torch.from_numpy(scene.image).permute(2, 0, 1)])
                enc = owl.encode_image(pixels)
                logits = owl.decode(enc, owl.encode_text(phrases))[0]
                encodings.append((enc.class_embeds[0], torch.sigmoid(logits.max(-1).values),
                                  logits.argmax(-1)))
            (emb_a, score_a, top_a), (emb_b, score_b, top_b) = encodings
            keep = score_a > threshold
            agree += int((top_a[keep] == top_b[keep]).sum())
            total += int(keep.sum())
            score_diff = max(score_diff, float((score_a - score_b).abs().max()))
            cosine = min(cosine, float(torch.nn.functional.cosine_similarity(emb_a, emb_b).min()))
        row["detected_patches"] = total
        row["top1_agreement"] = round(agree / max(1, total), 4)
        row["max_score_diff"] = round(score_diff, 5)
        row["class_embedding_cosine_min"] = round(cosine, 5)
        out["sets"][kind] = row
    print(json.dumps(out))


if __name__ == "__main__":
    main()
