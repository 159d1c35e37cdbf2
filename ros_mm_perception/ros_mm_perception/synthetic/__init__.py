"""The rendered world: scenes of coloured shapes with ground truth, and their evaluation.

The demo, the evaluation, the training of the embedded models (``training/`` in the checkout, not
installed) and the tests use it; perception never does.
May import the core; the core, messages and the node layer never import it.
"""
