"""Training of the embedded models, outside the installed package (developer tooling).

Run by ``scripts/train_embedded_clip.py`` and ``scripts/train_embedded_owl.py`` from a checkout,
with the ``ml`` and ``photos`` extras installed; the tests import it from the repository root. It
draws its scenes from :mod:`ros_mm_perception.synthetic.scenes`, which stays in the package (the
demo and the evaluations use it).
"""
