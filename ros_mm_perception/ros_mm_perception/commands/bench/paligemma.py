"""The PaliGemma sections of ``bench``: one answer, eight questions, each fast path.

Timed as users call it (``PaliGemmaEngine.answer``/``ask_many``); ``versus_plain`` times the
processor and transformers' ``generate`` on the same weights beside the static path.
"""

from __future__ import annotations

import os
import time
from typing import Dict, List

from ros_mm_perception.commands.bench.harness import Harness, precision_name

PALIGEMMA_PATHS = ("off", "static", "graph", "compile")
PALIGEMMA_FIGURES = ("prefill_ms", "answer_20_ms", "answer_tokens", "eight_questions_ms",
                     "answers_equal_static", "prepare_s")
PALIGEMMA_MODELS = {"paligemma": "paligemma-3b-224", "paligemma2": "paligemma2-3b-224"}
"""Result key → real-size architecture in
:data:`~ros_mm_perception.core.models.random_models.PALIGEMMA_SIZES`."""
VERSUS_PLAIN = {
    "paligemma.answer_20": "one answer of up to 20 tokens: processor + transformers generate, vs "
                           "PaliGemmaEngine.answer on the static path",
    "paligemma2.answer_20": "the same on PaliGemma 2",
}
"""The PaliGemma figures timed beside their plain-library equivalent (key → what is compared)."""
NEW_TOKENS = 20
QUESTIONS = ["what color is the mug on the table?", "is the door on the left open?",
             "how many people are there?", "what is the person holding?",
             "is there a robot in the room?", "what is on the shelf?", "is the floor empty?",
             "where is the red box?"]


def empty_paligemma() -> Dict:
    """One section per :data:`PALIGEMMA_MODELS` key with every figure ``null``."""
    return {key: {"architecture": None, "params_M": None, "precision": None, "attention": None,
                  "paths": {name: dict.fromkeys(PALIGEMMA_FIGURES) for name in PALIGEMMA_PATHS}}
            for key in PALIGEMMA_MODELS}


class PaliGemmaBench(Harness):
    """Fills ``paligemma`` and ``paligemma2`` and their ``versus_plain`` figures."""

    def load_paligemma(self, key: str):
        """The engine of ``key`` (``None``, skipped, when no model is given); fills its head."""
        from ros_mm_perception.core.models.paligemma import load_paligemma
        from ros_mm_perception.core.models.random_models import build_random_paligemma

        section = self.result[key]
        index = list(PALIGEMMA_MODELS).index(key)
        if self.args.random_weights:
            size = PALIGEMMA_MODELS[key] if self.sizes == "real" else "tiny"
            folder = build_random_paligemma(os.path.join(self.workdir, key), size)
            engine = load_paligemma(str(folder), str(self.device),
                                    random_weights=self.sizes == "real",
                                    max_new_tokens=NEW_TOKENS, fast_path="off")
        elif index < len(self.args.paligemma):
            size = self.args.paligemma[index]
            engine = load_paligemma(size, str(self.device), max_new_tokens=NEW_TOKENS,
                                    fast_path="off")
        else:
            self.skip(key, "no --paligemma-model given (or use --random-weights)")
            return None
        params = sum(p.numel() for p in engine.model.parameters())
        section.update(architecture=size, params_M=round(params / 1e6, 1),
                       precision=str(engine.dtype).replace("torch.", ""),
                       attention=str(engine.model.config._attn_implementation))
        return engine

    def paligemma_path(self, key: str, engine, path: str, answers: Dict[str, List[str]]) -> None:
        out = self.result[key]["paths"][path]
        name = f"{key}.paths.{path}"
        question = QUESTIONS[0]
        # The compile path prepares batch 1 first; batch 8 compiles on its first call, if time
        # allows.
        batches = [1] if path == "compile" else [1, len(QUESTIONS)]
        start = time.perf_counter()
        try:
            engine.fast_path = path
            engine.max_new_tokens = NEW_TOKENS
            engine.warm_up(batches)
            engine.answer(self.frame, question)
            self.sync()
            out["prepare_s"] = round(time.perf_counter() - start, 2)
        except Exception as err:  # e.g. a failed capture or compile: record it, no figures
            self.error(name, err)
            engine.fast_path = "off"
            return
        slow = max(1, self.repeats // 2) if path in ("off", "static") else None
        try:
            engine.max_new_tokens = 1
            self.measure(out, "prefill_ms", f"{name}.prefill_ms",
                         lambda: self.timed(lambda: engine.answer(self.frame, question), slow))
            engine.max_new_tokens = NEW_TOKENS
            self.measure(out, "answer_20_ms", f"{name}.answer_20_ms",
                         lambda: self.timed(lambda: engine.answer(self.frame, question), slow))
            prompt = f"answer {engine.language} {question}"
            self.measure(out, "answer_tokens", f"{name}.answer_tokens",
                         lambda: len(engine._generate([self.frame], [prompt])[0].logprobs))
            if path == "compile" and self.elapsed() > self.args.budget_s:
                self.skip(f"{name}.eight_questions_ms",
                          f"time budget of {self.args.budget_s:.0f} s spent")
                return
            self.measure(out, "eight_questions_ms", f"{name}.eight_questions_ms",
                         lambda: self.timed(lambda: engine.ask_many(self.frame, QUESTIONS), slow,
                                            warmup=1))
            answers[path] = engine.ask_many(self.frame, QUESTIONS)
            if engine.fast_path != path:
                self.fell_back(out, name)
            elif path not in ("off", "static") and "static" in answers:
                out["answers_equal_static"] = answers[path] == answers["static"]
        finally:
            engine.fast_path = "off"

    def paligemma_versus_plain(self, key: str, engine) -> None:
        """``versus_plain[key.answer_20]``: processor + transformers ``generate`` against the
        static path."""
        from PIL import Image

        from ros_mm_perception.core.models.paligemma import IMAGE_TOKEN

        torch, processor, model = self.torch, engine.processor, engine.model
        question = QUESTIONS[0]

        def plain():
            inputs = processor(images=Image.fromarray(self.frame),
                               text=f"{IMAGE_TOKEN}answer en {question}",
                               return_tensors="pt").to(self.device)
            inputs["pixel_values"] = inputs["pixel_values"].to(engine.dtype)
            with torch.inference_mode():
                out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
            return processor.decode(out[0, inputs["input_ids"].shape[1]:],
                                    skip_special_tokens=True)

        try:
            engine.fast_path = "static"
            engine.max_new_tokens = NEW_TOKENS
            engine.warm_up([1])
            precision = precision_name(engine.dtype)
            repeats = max(1, self.repeats // 2) if self.sizes == "real" else None
            self.versus(f"{key}.answer_20", plain, lambda: engine.answer(self.frame, question),
                        repeats, plain_precision=precision, ours_precision=precision,
                        ours_fast_path=engine.fast_path)
        finally:
            engine.fast_path = "off"
