"""A JupyterLab explorer of attribution maps (paper 003's Streamlit app, rebuilt with ipywidgets): a grid of
patches with overlays; method and target switches; filters on ground truth, Δ and rΔ; alpha, colour map and
pages. The filtering is a plain function (:func:`filter_patches`), tested without a browser."""
from __future__ import annotations

import numpy as np


def patch_table(y_true, y_pred, targets, ids=None):
    """One row per patch: for every target its ground truth, prediction, Δ = ŷ − y (eq. 3.3) and
    rΔ = (ŷ / y − 1) · 100 % (eq. 3.4)."""
    import pandas as pd

    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    if y_true.shape != y_pred.shape or y_true.ndim != 2 or y_true.shape[1] != len(targets):
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} must both be N × {len(targets)} "
                         f"(one column per target {list(targets)}).")
    table = pd.DataFrame(index=np.arange(len(y_true)) if ids is None else np.asarray(ids))
    for j, t in enumerate(targets):
        table[f"{t}_true"] = y_true[:, j]
        table[f"{t}_pred"] = y_pred[:, j]
        table[f"{t}_delta"] = y_pred[:, j] - y_true[:, j]
        with np.errstate(divide="ignore", invalid="ignore"):
            table[f"{t}_rdelta"] = (y_pred[:, j] / y_true[:, j] - 1) * 100
    return table


def filter_patches(table, target: str, truth=None, delta=None, rdelta=None) -> np.ndarray:
    """Row labels of ``table`` whose ``target`` lies in the given (low, high) ranges of ground truth, Δ and rΔ
    (None = no limit on that quantity; bounds are inclusive)."""
    column = f"{target}_true"
    if column not in table:
        targets = sorted({c.rsplit("_", 1)[0] for c in table.columns})
        raise ValueError(f"unknown target {target!r}; the table has {', '.join(targets)}.")
    keep = np.ones(len(table), bool)
    for name, bounds in (("true", truth), ("delta", delta), ("rdelta", rdelta)):
        if bounds is None:
            continue
        low, high = bounds
        if low is not None and high is not None and low > high:
            raise ValueError(f"{name} range ({low}, {high}) is empty: the lower bound exceeds the upper bound.")
        values = table[f"{target}_{name}"].to_numpy()
        if low is not None:
            keep &= values >= low
        if high is not None:
            keep &= values <= high
    return table.index.to_numpy()[keep]


def build_explorer(images, maps: dict, table, targets, per_page: int = 12, ncols: int = 4, draw_now: bool = False):
    """The widget: ``maps[(method, target)]`` holds N × H × W attribution maps aligned with ``images`` and the rows
    of ``table``. Returns the ipywidgets box (display it in JupyterLab). The grid is drawn when a control changes
    or "show" is pressed; ``draw_now`` draws it at once (headless runs under papermill hung on a large figure
    inside the Output widget, so the default is not to)."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    methods = sorted({m for m, _ in maps})
    method = w.Dropdown(options=methods, description="method")
    target = w.Dropdown(options=list(targets), description="target")

    def span(t, kind):
        v = table[f"{t}_{kind}"].to_numpy()
        v = v[np.isfinite(v)]
        return (float(v.min()), float(v.max())) if len(v) else (0.0, 1.0)

    truth = w.FloatRangeSlider(description="y", readout_format=".3g")
    delta = w.FloatRangeSlider(description="Δ", readout_format=".3g")
    rdelta = w.FloatRangeSlider(description="rΔ %", readout_format=".3g")
    alpha = w.FloatSlider(value=0.6, min=0, max=1, step=0.05, description="alpha")
    cmap = w.Dropdown(options=["viridis", "magma", "jet", "Greens"], value="viridis", description="colours")
    page = w.IntText(value=0, description="page")
    show = w.Button(description="show")
    out = w.Output()

    resetting = [False]

    def reset_ranges(*_):
        # one redraw after all sliders moved, not one per intermediate min / max / value change
        resetting[0] = True
        try:
            for slider, kind in ((truth, "true"), (delta, "delta"), (rdelta, "rdelta")):
                low, high = span(target.value, kind)
                slider.min, slider.max = min(low, slider.max), max(high, slider.min)
                slider.min, slider.max, slider.value = low, high, (low, high)
                slider.step = (high - low) / 100 or 0.01
        finally:
            resetting[0] = False

    def redraw(*_):
        if resetting[0]:
            return
        rows = filter_patches(table, target.value, truth.value, delta.value, rdelta.value)
        pos = [table.index.get_loc(r) for r in rows]
        shown = pos[page.value * per_page: (page.value + 1) * per_page]
        with out:
            out.clear_output()   # wait=True makes nbclient (papermill) hang on the Output widget
            print(f"{len(rows)} patches match; page {page.value} shows {len(shown)}")
            if not shown:
                return
            nrows = int(np.ceil(len(shown) / ncols))
            fig, axes = plt.subplots(nrows, ncols, figsize=(3 * ncols, 3.2 * nrows), squeeze=False)
            for ax in axes.flat:
                ax.axis("off")
            t = target.value
            for ax, i in zip(axes.flat, shown):
                ax.imshow(images[i])
                ax.imshow(maps[(method.value, t)][i], cmap=cmap.value, alpha=alpha.value)
                r = table.iloc[i]
                ax.set_title(f"{table.index[i]}: y {r[f'{t}_true']:.3g} ŷ {r[f'{t}_pred']:.3g}\n"
                             f"Δ {r[f'{t}_delta']:+.3g} rΔ {r[f'{t}_rdelta']:+.1f} %", fontsize=8)
            fig.tight_layout()
            plt.show()
            plt.close(fig)

    target.observe(lambda change: (reset_ranges(), redraw()), names="value")
    for widget in (method, truth, delta, rdelta, alpha, cmap, page):
        widget.observe(redraw, names="value")
    show.on_click(lambda _: redraw())
    reset_ranges()
    if draw_now:
        redraw()
    controls = w.VBox([w.HBox([method, target, cmap]), w.HBox([truth, delta, rdelta]), w.HBox([alpha, page, show])])
    return w.VBox([controls, out])
