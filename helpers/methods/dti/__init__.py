"""Paper 003 (explaining CNNs that regress DTI measures from histology), notebook 06.

- :mod:`.diffusion` — the diffusion tensor fit and MD / FA from its eigenvalues (the regression targets' meaning)
- :mod:`.explorer` — patch tables, filters and the JupyterLab explorer of attribution maps
The regression networks are trained by :func:`helpers.recipes.ensure_regression_model`.
"""
