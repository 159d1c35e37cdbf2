"""The pipeline sections of ``bench``: image messages in, and a frame through the whole pipeline.

``image_conversion`` times the message decoders a frame meets first; ``pipeline`` times
``PerceptionPipeline.process`` with labels only and with labels and PaliGemma detection.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Dict

from ros_mm_perception.commands.bench.harness import VOCABULARY, Harness

PIPELINE_PATHS = ("off", "graph")
PIPELINE_FIGURES = ("labels_ms", "labels_and_detect_ms")
CONVERSION_FIGURES = ("rgb8_to_rgb_ms", "bgr8_to_rgb_ms", "yuv422_to_rgb_ms",
                      "rgb_to_image_msg_ms", "jpeg_to_rgb_ms")


def empty_pipeline() -> Dict:
    """The ``pipeline`` and ``image_conversion`` sections with every figure ``null``."""
    return {
        "pipeline": {"paligemma": None, "detect_tokens": None,
                     "paths": {name: dict.fromkeys(PIPELINE_FIGURES) for name in PIPELINE_PATHS}},
        "image_conversion": dict.fromkeys(CONVERSION_FIGURES),
    }


class PipelineBench(Harness):
    """Fills ``image_conversion`` and ``pipeline``."""

    def conversion(self) -> None:
        import cv2

        from ros_mm_perception.core.imaging.image_codec import (compressed_to_rgb, image_to_rgb,
                                                                numpy_to_image)

        out = self.result["image_conversion"]

        def msg(array, encoding):
            return numpy_to_image(array, encoding, msg_factory=SimpleNamespace)

        rgb, bgr = msg(self.frame, "rgb8"), msg(self.frame[..., ::-1], "bgr8")
        yuv = msg(cv2.cvtColor(self.frame, cv2.COLOR_RGB2YUV_YUYV), "yuv422_yuy2")
        ok, jpeg = cv2.imencode(".jpg", self.frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        compressed = SimpleNamespace(format="jpeg", data=jpeg.tobytes())
        calls = [("rgb8_to_rgb_ms", lambda: image_to_rgb(rgb)),
                 ("bgr8_to_rgb_ms", lambda: image_to_rgb(bgr)),
                 ("yuv422_to_rgb_ms", lambda: image_to_rgb(yuv)),
                 ("rgb_to_image_msg_ms", lambda: msg(self.frame, "rgb8")),
                 ("jpeg_to_rgb_ms", lambda: compressed_to_rgb(compressed))]
        for key, fn in calls:
            self.measure(out, key, f"image_conversion.{key}",
                         lambda fn=fn: self.timed(fn, max(self.repeats, 20)))

    def pipeline(self, clip, engine, key: str) -> None:
        """Labels, and labels with detection by the PaliGemma engine of ``key``, per path."""
        from ros_mm_perception.core.config import PerceptionConfig
        from ros_mm_perception.core.models.fast_clip import enable_fast_clip
        from ros_mm_perception.core.perception.pipeline import PerceptionPipeline
        from ros_mm_perception.core.results import Frame, Stamp

        section = self.result["pipeline"]
        section["paligemma"] = self.result[key]["architecture"]
        config = PerceptionConfig(device=str(self.device), labels=VOCABULARY[:8],
                                  detect_phrases=["person", "cup"],
                                  grounding_source="paligemma", max_new_tokens=32)
        stamps = iter(range(10 ** 9))

        def frame():
            return Frame(image=self.frame, camera="camera", stamp=Stamp(next(stamps), 0))

        for path in PIPELINE_PATHS:
            out = section["paths"][path]
            name = f"pipeline.paths.{path}"
            try:
                enable_fast_clip(clip, path)
                engine.fast_path = path
                labels = PerceptionPipeline(config.replace(grounding_source="off"), clip=clip,
                                            paligemma=engine)
                both = PerceptionPipeline(config, clip=clip, paligemma=engine)
                self.measure(out, "labels_ms", f"{name}.labels_ms",
                             lambda: self.timed(lambda: labels.process(frame())))
                self.measure(out, "labels_and_detect_ms", f"{name}.labels_and_detect_ms",
                             lambda: self.timed(lambda: both.process(frame()),
                                                max(1, self.repeats // 2)))
                if section["detect_tokens"] is None:
                    prompt = "detect " + " ; ".join(config.detect_phrases)
                    gen = engine._generate([self.frame], [prompt])[0]
                    section["detect_tokens"] = len(gen.logprobs)
                if path != "off" and (engine.fast_path != path or clip.fast_encoder is None):
                    self.fell_back(out, name)
            except Exception as err:  # record and go on with the next path
                self.error(name, err)
            finally:
                enable_fast_clip(clip, "off")
                engine.fast_path = "off"
