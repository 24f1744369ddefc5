"""Cohort statistics of paper 004 §5: demographics by cluster (its Table 2) and associations of the clusters
with clinical outcomes adjusted for demographics (its Fig. 10), with scipy and statsmodels."""
from __future__ import annotations

import numpy as np


def _check(table, labels):
    labels = np.asarray(labels)
    if len(labels) != len(table):
        raise ValueError(f"{len(labels)} cluster labels for {len(table)} subjects; give one label per row.")
    if len(np.unique(labels)) < 2:
        raise ValueError("all subjects are in one cluster; associations need at least two clusters.")
    return labels


TABLE_2 = {"continuous": ("age", "bmi", "height_in"), "binary": ("male", "white", "hispanic"),
           "categorical": ("scanner", "scadding")}


def demographics_by_cluster(table, labels, continuous=None, binary=None, categorical=None):
    """Table 2 analogue: per cluster mean (sd) of continuous columns, n (%) of binary ones and the levels of
    categorical ones (n (%) per level), with p-values (one-way ANOVA; chi-square of the contingency table).
    Columns left as None default to paper 004's Table 2 rows (:data:`TABLE_2`) that the table has; columns named
    explicitly must exist."""
    import pandas as pd
    from scipy import stats

    labels = _check(table, labels)
    chosen = {}
    for kind, given in (("continuous", continuous), ("binary", binary), ("categorical", categorical)):
        if given is None:
            chosen[kind] = tuple(c for c in TABLE_2[kind] if c in table)
        else:
            missing = [c for c in given if c not in table]
            if missing:
                raise ValueError(f"{kind} column(s) {missing} are not in the table (columns: {list(table.columns)}).")
            chosen[kind] = tuple(given)
    continuous, binary, categorical = chosen["continuous"], chosen["binary"], chosen["categorical"]
    clusters = np.unique(labels)
    rows = [{"variable": "n", "overall": str(len(table)),
             **{f"cluster {c + 1}": str(int((labels == c).sum())) for c in clusters}, "p": np.nan}]
    for col in continuous:
        values = table[col].to_numpy(float)
        groups = [values[labels == c] for c in clusters]
        rows.append({"variable": f"{col} mean (sd)", "overall": f"{values.mean():.2f} ({values.std(ddof=1):.2f})",
                     **{f"cluster {c + 1}": f"{g.mean():.2f} ({g.std(ddof=1):.2f})" for c, g in zip(clusters, groups)},
                     "p": float(stats.f_oneway(*groups).pvalue)})
    for col in tuple(binary) + tuple(categorical):
        cont = pd.crosstab(table[col], labels)
        p = float(stats.chi2_contingency(cont.to_numpy())[1]) if cont.shape[0] > 1 else np.nan
        if col in binary:
            values = table[col].to_numpy(int)
            rows.append({"variable": f"{col} n (%)", "overall": f"{values.sum()} ({100 * values.mean():.1f})",
                         **{f"cluster {c + 1}": f"{values[labels == c].sum()} ({100 * values[labels == c].mean():.1f})"
                            for c in clusters}, "p": p})
        else:
            rows.append({"variable": f"{col} (χ²)", "overall": f"{cont.shape[0]} levels",
                         **{f"cluster {c + 1}": "" for c in clusters}, "p": p})
            values = table[col].to_numpy()
            for level in cont.index:
                rows.append({"variable": f"  {col} {level} n (%)",
                             "overall": f"{int((values == level).sum())} ({100 * np.mean(values == level):.1f})",
                             **{f"cluster {c + 1}": f"{int((values[labels == c] == level).sum())} "
                                f"({100 * np.mean(values[labels == c] == level):.1f})" for c in clusters}, "p": np.nan})
    return pd.DataFrame(rows).set_index("variable")


def outcome_associations(table, labels, outcomes, covariates=("age", "male", "height_in", "bmi"),
                         compare_with: str | None = None, n_permutations: int = 0, seed: int = 0):
    """For each outcome: OLS outcome ~ cluster + covariates (statsmodels). Returns a DataFrame with the cluster
    effect(s) (largest cluster as reference), its 95 % CI, the p-value of the cluster term (F-test over its
    levels), and the R² with and without the cluster term, and the adjusted R² with it. ``compare_with`` (e.g.
    "scadding"): an existing classification entered the same way instead of the clusters, its R² and adjusted R²
    beside theirs (paper 004: the clusters "explained more variation than Scadding"; Scadding's five stages spend four
    degrees of freedom where two clusters spend one, which the adjusted R² charges for). ``n_permutations`` > 0 adds
    ``p_permutation``: the cluster term's F statistic against the same statistic with the cluster labels shuffled
    among the subjects (covariates kept), p = (1 + as large or larger) / (1 + permutations)."""
    import pandas as pd
    import statsmodels.formula.api as smf

    labels = _check(table, labels)
    if compare_with is not None and compare_with not in table:
        raise ValueError(f"compare_with={compare_with!r} is not a column of the table.")
    data = table.copy()
    reference = int(np.bincount(labels).argmax())
    data["cluster"] = pd.Categorical(labels)
    base_terms = " + ".join(covariates) if covariates else "1"
    rows = []
    for outcome in outcomes:
        if outcome not in data:
            raise ValueError(f"outcome {outcome!r} is not a column of the table.")
        full = smf.ols(f"{outcome} ~ C(cluster, Treatment({reference})) + {base_terms}", data).fit()
        base = smf.ols(f"{outcome} ~ {base_terms}", data).fit()
        terms = [t for t in full.params.index if t.startswith("C(cluster")]
        p = float(full.f_test(" = ".join(terms) + " = 0" if len(terms) == 1 else ", ".join(f"{t} = 0" for t in terms)
                              ).pvalue)
        effect = terms[0]
        ci = full.conf_int().loc[effect]
        row = {"outcome": outcome, "effect": float(full.params[effect]), "ci_low": float(ci[0]),
               "ci_high": float(ci[1]), "p": p, "r2_demographics": float(base.rsquared),
               "r2_with_cluster": float(full.rsquared), "r2_adjusted_with_cluster": float(full.rsquared_adj),
               "contrast": effect}
        if compare_with is not None:
            other = smf.ols(f"{outcome} ~ C({compare_with}) + {base_terms}", data).fit()
            row[f"r2_with_{compare_with}"] = float(other.rsquared)
            row[f"r2_adjusted_with_{compare_with}"] = float(other.rsquared_adj)
        if n_permutations > 0:
            row["p_permutation"] = _permutation_p(np.asarray(full.model.endog, float), np.asarray(base.model.exog, float),
                                                  labels[_rows_used(full, data)], n_permutations, seed)
        rows.append(row)
    return pd.DataFrame(rows).set_index("outcome")


def _rows_used(fit, data) -> np.ndarray:
    """Positions of the rows a statsmodels formula fit kept (rows with a missing value are dropped)."""
    return data.index.get_indexer(fit.model.data.row_labels)


def _cluster_f(y, base_x, labels) -> float:
    """F statistic of adding cluster dummies (first cluster as reference) to the base design."""
    levels = np.unique(labels)
    dummies = (labels[:, None] == levels[None, 1:]).astype(float)
    full_x = np.hstack([base_x, dummies])
    rss = [float(np.sum((y - x @ np.linalg.lstsq(x, y, rcond=None)[0]) ** 2)) for x in (base_x, full_x)]
    q, dof = dummies.shape[1], len(y) - np.linalg.matrix_rank(full_x)
    return ((rss[0] - rss[1]) / q) / (rss[1] / dof)


def _permutation_p(y, base_x, labels, n_permutations: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    observed = _cluster_f(y, base_x, labels)
    shuffled = [_cluster_f(y, base_x, rng.permutation(labels)) for _ in range(int(n_permutations))]
    return float((1 + np.sum(np.asarray(shuffled) >= observed - 1e-12)) / (1 + len(shuffled)))
