"""Plots of a dataset (PNG, matplotlib Agg): sizes, class balance, features, unusual runs.

Examples are read chunk by chunk and summarized per example (n, feature),
so plotting a large dataset does not load it whole.
"""

import pathlib

import numpy as np

from ciml.dataset import Dataset, iter_batches

MAX_DIST_FEATURES = 36
MAX_SCATTER_2D = 16
MAX_SCATTER_3D = 9


def default_plot_dir(data_path, name):
    from ciml.paths import DataPath
    from ciml.storage import local_output

    root = data_path.root if isinstance(data_path, DataPath) else pathlib.Path(data_path)
    return local_output(root / "plots" / "datasets" / name)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(n):
    plt = _pyplot()
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _summaries(ds, split):
    """Per example: ``(n, steps, f)`` for aggregates, else the mean over its real length."""
    sp = ds.split(split)
    parts = []
    start = 0
    for x, _ in iter_batches(sp.X):
        if ds.axis == "aggregate":
            parts.append(x)
        else:
            lengths = np.clip(sp.lengths[start:start + len(x)], 1, x.shape[1])
            mask = np.arange(x.shape[1])[None, :] < lengths[:, None]
            parts.append(((x * mask[..., None]).sum(axis=1) / lengths[:, None])[:, None, :])
        start += len(x)
    if not parts:
        return np.zeros((0, len(ds.steps) if ds.axis == "aggregate" else 1,
                         len(ds.features)), dtype="float32")
    return np.concatenate(parts)


def _save(fig, path):
    fig.savefig(path, dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def plot_sizes(ds, out):
    """sizes_by_result.png: each example's length (time steps) by class."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.6 * len(ds.classes)))
    rng = np.random.default_rng(0)
    colors = _colors(len(ds.classes))
    for split in ds.splits:
        sp = ds.split(split)
        for code in range(len(ds.classes)):
            lengths = sp.lengths[sp.y == code]
            if len(lengths):
                ax.scatter(lengths, code + rng.uniform(-0.25, 0.25, len(lengths)),
                           s=12, alpha=0.6, color=colors[code],
                           marker={"training": "o", "dev": "s", "test": "^"}.get(split, "o"))
    ax.set_yticks(range(len(ds.classes)), ds.classes)
    ax.set_ylim(-0.6, len(ds.classes) - 0.4)
    interval = ds.config.get("sample_interval") or "1s"
    ax.set_xlabel(f"example length (samples at {interval}, before cut/pad)")
    ax.set_ylabel(ds.config.get("class_label", "class"))
    length = ds.config.get("normalized_length")
    if length:
        ax.axvline(length, color="grey", linestyle="--", linewidth=1)
        ax.text(length, 0.98, "fixed length ", transform=ax.get_xaxis_transform(),
                fontsize=8, color="grey", ha="right", va="top")
    ax.set_title(f"{ds.name}: example length by class (o training, s dev, ^ test)")
    return _save(fig, out / "sizes_by_result.png")


def plot_balance(ds, out):
    """class_balance.png: examples per class, per split."""
    plt = _pyplot()
    balance = ds.attrs.get("class_balance", {})
    fig, ax = plt.subplots(figsize=(max(6, 1 + 0.9 * len(ds.classes) * len(ds.splits)), 4))
    width = 0.8 / max(1, len(ds.splits))
    x = np.arange(len(ds.classes))
    for i, split in enumerate(ds.splits):
        counts = [balance.get(split, {}).get(c, 0) for c in ds.classes]
        bars = ax.bar(x + (i - (len(ds.splits) - 1) / 2) * width, counts, width,
                      label=split)
        ax.bar_label(bars, fontsize=8)
    ax.set_xticks(x, ds.classes, rotation=30 if len(ds.classes) > 6 else 0)
    ax.set_ylabel("examples")
    ax.set_title(f"{ds.name}: class balance ({ds.config.get('class_label')})")
    ax.legend()
    return _save(fig, out / "class_balance.png")


def _grid(n):
    cols = int(np.ceil(np.sqrt(n)))
    return int(np.ceil(n / cols)), cols


def _class_percentiles(values, codes, n_classes, qs=(5, 25, 50, 75, 95)):
    """``(class, q, feature)`` percentiles of ``values`` per class (NaN for an absent class)."""
    out = np.full((n_classes, len(qs), values.shape[1]), np.nan)
    for code in range(n_classes):
        part = values[codes == code]
        if len(part):
            out[code] = np.percentile(part, qs, axis=0)
    return out


def plot_distributions(ds, out, values, codes, step_name=None):
    """Each feature's distribution per class, side by side (not overlaid).

    One row per class within each feature's band: a thin line from the 5th
    to the 95th percentile, a thick bar over the middle half (25th-75th), a
    tick at the median.  Unlike overlaid translucent histograms this stays
    readable with ten classes, and draws in a few calls per class, not one
    per feature and class.
    """
    plt = _pyplot()
    features = list(ds.features[:MAX_DIST_FEATURES])
    n_classes = len(ds.classes)
    values = np.asarray(values, dtype=np.float64)[:, :len(features)]
    codes = np.asarray(codes)
    pct = _class_percentiles(values, codes, n_classes)
    counts = np.bincount(codes, minlength=n_classes) if len(codes) else np.zeros(n_classes)
    band = 0.8 / max(1, n_classes)
    height = 1.2 + len(features) * (0.12 + 0.09 * n_classes)
    fig, ax = plt.subplots(figsize=(9, height))
    rows = np.arange(len(features))
    # Every other feature's band shaded, so a row is easy to follow across.
    ax.barh(rows[::2], 1, height=1.0, left=0, color="0.93", zorder=0,
            transform=ax.get_yaxis_transform())
    colors = _colors(n_classes)
    for code, name in enumerate(ds.classes):
        if not counts[code]:
            continue
        y = rows - 0.4 + band * (code + 0.5)
        p5, p25, p50, p75, p95 = pct[code]
        ax.hlines(y, p5, p95, color=colors[code], linewidth=1, zorder=2)
        ax.hlines(y, p25, p75, color=colors[code], linewidth=max(2.0, 60 * band / 4),
                  zorder=3, label=f"{name} ({int(counts[code])})")
        ax.scatter(p50, y, marker="|", color="black", s=30, linewidths=1, zorder=4)
    finite = pct[np.isfinite(pct)]
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        pad = 0.03 * (hi - lo) if hi > lo else 0.5
        ax.set_xlim(lo - pad, hi + pad)
    ax.set_yticks(rows, features, fontsize=8)
    ax.set_ylim(len(features) - 0.5, -0.5)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    what = f"'{step_name}' of each example" if step_name else "mean over each run"
    ax.set_xlabel(f"scaled value ({what}): line 5th-95th percentile, bar 25th-75th, "
                  "| median", fontsize=9)
    ax.set_title(f"{ds.name}: feature distributions by class", fontsize=10)
    ax.legend(title=f"{ds.config.get('class_label', 'class')} (examples)", fontsize=8,
              title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              borderaxespad=0)
    suffix = f"_{step_name}" if step_name else ""
    return _save(fig, out / f"feature_distributions{suffix}.png")


def _separation(values, codes, n_classes):
    """Fisher score per feature column (between-class / within-class variance)."""
    overall = values.mean(axis=0)
    between = np.zeros(values.shape[1])
    within = np.zeros(values.shape[1])
    for c in range(n_classes):
        part = values[codes == c]
        if len(part):
            between += len(part) * (part.mean(axis=0) - overall) ** 2
            within += ((part - part.mean(axis=0)) ** 2).sum(axis=0)
    return between / np.where(within > 0, within, np.inf)


def plot_scatter(ds, out, summaries, codes):
    """For 2 or 3 aggregation functions: examples as points, one panel per feature."""
    plt = _pyplot()
    steps = ds.steps
    three = len(steps) == 3
    limit = MAX_SCATTER_3D if three else MAX_SCATTER_2D
    score = sum(_separation(summaries[:, i, :], codes, len(ds.classes))
                for i in range(len(steps)))
    chosen = [int(i) for i in np.argsort(-score, kind="stable")[:limit]]
    rows, cols = _grid(len(chosen))
    fig = plt.figure(figsize=(3.6 * cols, 3.2 * rows))
    colors = _colors(len(ds.classes))
    for k, f in enumerate(chosen):
        ax = fig.add_subplot(rows, cols, k + 1, projection="3d" if three else None)
        for code, name in enumerate(ds.classes):
            sel = codes == code
            if not sel.any():
                continue
            coords = [summaries[sel, i, f] for i in range(len(steps))]
            ax.scatter(*coords, s=8, alpha=0.6, color=colors[code], label=name)
        ax.set_title(ds.features[f], fontsize=9)
        ax.set_xlabel(steps[0], fontsize=8)
        ax.set_ylabel(steps[1], fontsize=8)
        if three:
            ax.set_zlabel(steps[2], fontsize=8)
        ax.tick_params(labelsize=6)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(f"{ds.name}: {' / '.join(steps)} per example, by class "
                 f"(the {len(chosen)} most class-separating features, scaled)")
    fig.tight_layout()
    return _save(fig, out / f"scatter_{len(steps)}d.png")


def plot_unusual(ds, out):
    """unusual_scores.png: how unusual the dev and test runs are, by class.

    Each held-out run's score against the profile of the passed training
    runs, one row per class; the dashed line is the score above which a
    run is reported unusual (the profiled runs' 99th percentile).
    """
    from ciml.dataset import profile as prof

    profile = ds.profile
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 1.4 + 0.6 * len(ds.classes)))
    rng = np.random.default_rng(0)
    colors = _colors(len(ds.classes))
    for split, marker in (("dev", "s"), ("test", "^")):
        if split not in ds.splits:
            continue
        sp = ds.split(split)
        values, start = [], 0
        for x, _ in iter_batches(sp.X):
            values.append(prof.scores(profile, x, sp.lengths[start:start + len(x)], ds.axis))
            start += len(x)
        values = np.concatenate(values) if values else np.zeros(0)
        for code in range(len(ds.classes)):
            part = values[sp.y == code]
            if len(part):
                ax.scatter(part, code + rng.uniform(-0.25, 0.25, len(part)), s=14,
                           alpha=0.7, color=colors[code], marker=marker)
    line = prof.threshold(profile)
    ax.axvline(line, color="grey", linestyle="--", linewidth=1)
    ax.text(line, 0.98, " unusual", transform=ax.get_xaxis_transform(), fontsize=8,
            color="grey", ha="left", va="top")
    ax.set_xscale("log")
    ax.set_yticks(range(len(ds.classes)), ds.classes)
    ax.set_ylim(-0.6, len(ds.classes) - 0.4)
    ax.set_xlabel(f"score against the {profile['runs']} {profile.get('reference', 'runs')} "
                  "(RMS of z-scores)")
    ax.set_ylabel(ds.config.get("class_label", "class"))
    ax.set_title(f"{ds.name}: how unusual held-out runs are, by class (s dev, ^ test)")
    return _save(fig, out / "unusual_scores.png")


def plot_dataset(data_path, name, output_dir=None):
    """Write the dataset's PNGs; returns their paths."""
    ds = Dataset.open(data_path, name)
    out = pathlib.Path(output_dir) if output_dir else default_plot_dir(data_path, name)
    out.mkdir(parents=True, exist_ok=True)
    paths = [plot_sizes(ds, out), plot_balance(ds, out)]
    summaries = np.concatenate([_summaries(ds, s) for s in ds.splits])
    codes = np.concatenate([ds.split(s).y for s in ds.splits])
    if ds.axis == "aggregate":
        for i, step in enumerate(ds.steps):
            paths.append(plot_distributions(ds, out, summaries[:, i, :], codes, step))
        if len(ds.steps) in (2, 3) and len(codes):
            paths.append(plot_scatter(ds, out, summaries, codes))
    else:
        paths.append(plot_distributions(ds, out, summaries[:, 0, :], codes))
    if ds.profile is not None:
        paths.append(plot_unusual(ds, out))
    return paths
