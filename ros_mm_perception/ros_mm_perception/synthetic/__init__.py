"""The rendered world: scenes of coloured shapes with ground truth, and the embedded model's training.

The demo, the evaluation, the training entry point and the tests use it; perception never does.
May import the core; the core, messages and the node layer never import it.
"""
