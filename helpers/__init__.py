"""Helpers for the notebooks: the compute-heavy, reusable and tested part of the collection.

One module per concern (see README.md): ``env`` (device, seeding, versions), ``report`` (metrics.json,
figures), ``synth`` (simulated H&E with ground truth), ``data`` (tiling, caches, real bundled data,
loaders for the papers' formats).
"""

__version__ = "0.1.0"
