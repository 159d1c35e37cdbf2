"""An object memory built from a recording: each processed frame folded in, with the bag's /tf.

:class:`MemoryOutput` is an output of :func:`~.runner.process_input`: for every frame that ran
detection and has intrinsics, it looks up the camera's pose in the memory frame at the image's
stamp (the recording's ``/tf`` and ``/tf_static``, interpolated as tf2 does), and updates the
memory with the frame's detections, depth and the phrases it looked for. Frames without that
transform are counted and reported once per link, never guessed. The memory file is written as it
changes (not staged): running ``bag`` again with the same file extends it, and a run that stops
half-way keeps what it had folded in. With ``scene`` (the run's
:class:`~.mcap_output.ResultsMcap`), the first frame folded in (so an extended memory shows from
the start) and each frame that changed the memory also write the memory's records to the MCAP
file as a Foxglove SceneUpdate at that frame's recording time.
"""

from __future__ import annotations

from typing import Callable, Dict

from ros_mm_perception.core.config import PerceptionConfig
from ros_mm_perception.core.errors import UserError
from ros_mm_perception.core.memory.objects import ObjectMemory
from ros_mm_perception.core.memory.text import embedding_model_id
from ros_mm_perception.core.memory.views import CameraView, check_memory_frame
from ros_mm_perception.core.perception.transforms import TransformTree, frame_name
from ros_mm_perception.core.results import FrameResult
from ros_mm_perception.offline.input_frame import InputFrame


def memory_frame(config: PerceptionConfig) -> str:
    """The memory's frame: ``memory_frame``, else ``target_frame``."""
    frame = config.memory_frame or config.target_frame
    if not frame:
        raise UserError("the object memory needs a fixed frame: give --memory-frame or "
                        "--target-frame (e.g. map or odom)")
    return frame


def open_memory(config: PerceptionConfig, path: str) -> ObjectMemory:
    """The memory file ``path`` (created when missing) in the config's memory frame."""
    return ObjectMemory(memory_frame(config), config, path=path,
                        embedding_model=embedding_model_id(config))


class MemoryOutput:
    """Folds each processed frame of a recording into ``memory`` (see the module docstring)."""

    def __init__(self, memory: ObjectMemory, tree: TransformTree, phrases,
                 warn: Callable[[str], None] = lambda _m: None, scene=None):
        self.memory = memory
        self.tree = tree
        self.phrases = list(phrases)
        self.warn = warn
        self.scene = scene
        self._written = -1
        self.frames = 0
        self.missing: Dict[str, int] = {}
        self._checked = set()
        self._warned = set()

    def add(self, item: InputFrame, result: FrameResult) -> None:
        frame = item.frame
        if not result.detections_ran or frame is None:
            return
        if frame.intrinsics is None or frame.depth is None:
            if result.camera not in self._warned:
                self._warned.add(result.camera)
                self.warn(f"{result.camera}: frames without a depth image and its camera_info "
                          f"place no objects in the object memory")
            if frame.intrinsics is None:
                return
        camera = frame_name(result.frame_id)
        if camera not in self._checked:
            check_memory_frame(self.memory.frame, camera, self.tree)
            self._checked.add(camera)
        stamp = result.stamp.to_ns()
        lookup = self.tree.lookup(self.memory.frame, camera, stamp)
        if not lookup.found:
            key = f"{camera} -> {self.memory.frame}"
            if key not in self.missing:
                self.warn(f"{result.camera}: frames without the transform {key} are left out "
                          f"of the object memory: {lookup.missing}")
            self.missing[key] = self.missing.get(key, 0) + 1
            return
        view = CameraView(camera_to_memory=lookup.transform, intrinsics=frame.intrinsics,
                          image_hw=frame.image.shape[:2], stamp_ns=stamp, phrases=self.phrases,
                          depth=frame.depth)
        self.memory.update(result, view)
        self.frames += 1
        if self.scene is not None and self.memory.revision != self._written:
            self._written = self.memory.revision
            self.scene.add_object_scene(self.memory, item.log_time_ns)

    def finish(self) -> None:
        """Close the memory (every update is already written; its file is then one file, no
        WAL)."""
        self.memory.close()
