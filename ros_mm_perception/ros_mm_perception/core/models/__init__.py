"""Model engines: CLIP loading and its fast path, PaliGemma with its parser, fast generation and
mask decoder, CUDA-graph helpers, tiny random test models and the embedded-model locator.

Changes here follow model libraries (open_clip, transformers) and accelerators. May import the
core's root, :mod:`..imaging` and this group; never perception.
"""
