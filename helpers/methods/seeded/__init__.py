"""Paper 002 (seeded iterative clustering of whole-slide patches), notebook 04.

- :mod:`.sic` — seeded k-means, the iterative splitting (Algorithm 1) and the simulated-click protocol
- :mod:`.baselines` — other ways to turn the same clicks into a region, and the corrective-click curve
- :mod:`.embeddings` — patch encoders, per-slide Zarr stores of embeddings, extraction on Dask workers, UMAP
- :mod:`.simclr` — the self-supervised encoder (SimCLR) trained on the slides' own patches
"""
