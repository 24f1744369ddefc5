"""The papers' own methods, one module or subpackage per paper (the notebooks that use them in brackets):

- :mod:`.concepts` — paper 000: NMF concept discovery on a layer's activations, concept maps, surrogates (03)
- :mod:`.seeded` — paper 002: seeded iterative clustering, patch embeddings (Dask, Zarr), SimCLR (04)
- :mod:`.dti` — paper 003: diffusion tensors (MD, FA) and the explorer of attribution maps (06)
- :mod:`.sarcoidosis` — paper 004: CAE + DEC deep clustering, CLAM, registration and cohort statistics (07)
"""
