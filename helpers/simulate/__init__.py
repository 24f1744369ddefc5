"""The simulators: data with the ground truth real data sets lack.

- :mod:`.histology` — H&E patches and slides (nuclei, glands, tumour regions, artefacts; paper 000–003's data)
- :mod:`.ct` — CT: lung slices with a varying abnormality (paper 004 §4) and 3-D cohorts with outcomes (§5)
- :mod:`.datasets` — the simulated data sets of the notebooks, rendered once and cached under ``DATA_DIR/cache``
"""
