"""The ROS-free core: the shared vocabulary at this level, and three groups below it.

This level holds what every part speaks: :mod:`.config` (every default), :mod:`.results` (frames,
labels, detections), :mod:`.errors` and :mod:`.devices`; it imports nothing else of the package.
The groups, each importing only the ones before it:

* :mod:`.imaging`: image plumbing (message encodings, files, device-side preprocessing, drawing);
* :mod:`.models`: model engines (CLIP, PaliGemma and their fast paths, test models, the embedded
  model);
* :mod:`.perception`: what turns model outputs into results (pipeline, grounding, tracking, 3D).

Nothing in the core imports rclpy, any ROS message package, or a package outside ``core``.
"""
