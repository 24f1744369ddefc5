"""Paper 004 (cluster activation mapping, sarcoidosis CT), notebook 07.

- :mod:`.dec` — the convolutional autoencoder and DEC deep clustering, K chosen by silhouette, the scenarios of §4
- :mod:`.clam` — cluster activation maps (CLAM), group averages and activated areas
- :mod:`.registration` — study template and registration of 3-D volumes with ANTs (§5)
- :mod:`.cohort` — demographics by cluster and outcome associations (§5)
"""
