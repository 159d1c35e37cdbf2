"""Image plumbing: message encodings to and from numpy, image files, device-side preprocessing,
drawing.

Changes here follow camera formats and model input conventions. May import only the core's root
(config, results, errors, devices) and this group.
"""
