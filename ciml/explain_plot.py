"""Pictures of why: reliability curve, feature importance, and one run against typical runs."""

import pathlib
import re

import numpy as np

from ciml import explain


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out):
    fig.savefig(out, dpi=100)
    _pyplot().close(fig)


def plot_reliability(calibration, out, title):
    """Confidence against accuracy per bin: on the diagonal, a 0.8 comes true 80% of the time."""
    _save(reliability_figure(calibration, title), out)


def reliability_figure(calibration, title):
    """:func:`plot_reliability`'s figure."""
    plt = _pyplot()
    bins = calibration.get("reliability") or []
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    if bins:
        conf = [b["confidence"] for b in bins]
        acc = [b["accuracy"] for b in bins]
        sizes = [20 + 200 * b["n"] / max(x["n"] for x in bins) for b in bins]
        ax.plot(conf, acc, marker="o", label=f"model ({calibration.get('method')})")
        ax.scatter(conf, acc, s=sizes, alpha=0.3)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("predicted probability of the top class")
    ax.set_ylabel("share that was right")
    brier, ece = calibration.get("brier"), calibration.get("ece")
    ax.set_title(f"{title}\nBrier {brier:.3f}, ECE {ece:.3f}" if brier is not None
                 and ece is not None else title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_importance(table, out, title, top=20):
    _save(importance_figure(table, title, top), out)


def importance_figure(table, title, top=20, width=7):
    """The ``top`` features of an importance table as horizontal bars, largest on top."""
    plt = _pyplot()
    items = list(table or [])[:top][::-1]
    fig, ax = plt.subplots(figsize=(width, max(3, 0.3 * len(items) + 1.5)))
    ax.barh([i["feature"] for i in items], [i["importance"] for i in items])
    ax.set_xlabel("share of importance")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def model_plots(folder, metrics, out, name):
    """The model plots this module adds: reliability curve and feature importance."""
    written = []
    calib = (metrics.get("operating_point") or {}).get("calibration")
    if calib:
        path = out / "reliability.png"
        plot_reliability(calib, path, f"{name}: reliability ({metrics.get('split')} split)")
        written.append(path)
    table = explain.load_importance(folder)
    if table:
        path = out / "feature_importance.png"
        plot_importance(table, path, f"{name}: global feature importance")
        written.append(path)
    return written


def _safe(text):
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text))[:80] or "run"


def plot_run(model, example, length, record, out):
    """Write :func:`run_figure` as ``RUN_ID.png`` under the folder ``out``; returns its path."""
    fig = run_figure(model, example, length, record)
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{_safe(record.get('run_id'))}.png"
    _save(fig, path)
    return path


def _aggregate_panels(fig, axes, items, title):
    """One row per top feature: the run's value against the passed runs' range.

    Each row has an axis of its own: the features are in different units
    (bytes beside percentages), and one shared axis would flatten all but
    the largest to a point.
    """
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    for ax, item in zip(axes[:, 0], items):
        lo, hi = item.get("typical_low"), item.get("typical_high")
        typical, value = item.get("typical"), item.get("value")
        if lo is not None and hi is not None:
            ax.axvspan(lo, hi, alpha=0.3, color="tab:green", label="passed runs (p10-p90)")
        if typical is not None:
            ax.axvline(typical, color="tab:green", linewidth=1.5,
                       label="passed runs (median)")
        if value is not None:
            ax.plot([value], [0], "o", color="tab:red", markersize=8, label="this run")
        shown = [v for v in (lo, hi, typical, value) if v is not None]
        digits = 4
        if shown:
            left, right = min(shown), max(shown)
            pad = (right - left) * 0.15 or abs(right) * 0.1 or 1.0
            ax.set_xlim(left - pad, right + pad)
            # Enough digits to tell the ticks apart when the range is narrow
            # for its magnitude (2.0392e+09 beside 2.0394e+09).
            size = max(abs(left), abs(right))
            if right > left and size > 0:
                digits = int(min(10, max(4, np.ceil(np.log10(size / (right - left))) + 2)))
        ax.set_ylim(-1, 1)
        ax.set_yticks([0], [item["feature"]])
        # Plain numbers: an offset ("1e6+2.04e9") is unreadable at a glance.
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.xaxis.set_major_formatter(FuncFormatter(
            lambda v, _pos, digits=digits: f"{v:.{digits}g}"))
        ax.grid(axis="x", alpha=0.3)
    axes[0, 0].set_title(title)
    if items:
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    # Room at the bottom for the legend, whatever the figure's height.
    fig.tight_layout(rect=(0, 0.35 / fig.get_figheight(), 1, 1))


def run_figure(model, example, length, record, title=None):
    """The run's top features over time against the passed runs' typical band.

    The band is the 10th-90th percentile of the reference (passed training
    runs) per time step, the line their median; the windows that mattered
    are shaded.  Aggregate datasets have no time axis: their top cells are
    drawn as the run's value against the typical range.
    """
    plt = _pyplot()
    ds = model.dataset
    why = record.get("explanation") or {}
    reference = explain.load_reference(model.path)
    unscale = explain.unscaler(ds)
    undo = unscale or (lambda a: np.asarray(a, np.float64))
    raw = undo(example)
    med, low, high = (undo(reference[k]) for k in ("median", "low", "high"))
    items = (why.get("features") or [])[:explain.TOP]
    if title is None:
        title = (f"{record.get('run_id')}: predicted {record.get('predicted')} "
                 f"({why.get('method', '')})")
    if ds.axis == "aggregate" or not items:
        rows = max(1, len(items))
        fig, axes = plt.subplots(rows, 1, figsize=(7, 1.0 + 0.85 * rows), squeeze=False)
        _aggregate_panels(fig, axes, items, title)
    else:
        interval = explain.step_seconds(ds)
        t = np.arange(ds.example_shape[0]) * interval
        steps = max(1, min(int(length or len(t)), len(t)))
        fig, axes = plt.subplots(len(items), 1, figsize=(8, 2.4 * len(items)), sharex=True,
                                 squeeze=False)
        # The band stops where the last reference run ends (older models: drawn whole).
        covered = reference.get("covered")
        band = len(t) if covered is None else max(1, int(np.count_nonzero(covered)))
        for ax, item in zip(axes[:, 0], items):
            j = ds.features.index(item["feature"])
            ax.fill_between(t[:band], low[:band, j], high[:band, j], alpha=0.25,
                            color="tab:green", label="passed runs (p10-p90)")
            ax.plot(t[:band], med[:band, j], color="tab:green", linewidth=1,
                    label="passed runs (median)")
            ax.plot(t[:steps], raw[:steps, j], color="tab:red", linewidth=1.2,
                    label="this run")
            for w in why.get("windows") or []:
                ax.axvspan(w["start_s"], w["end_s"], color="orange", alpha=0.15)
            ax.set_ylabel(item["feature"])
            ax.grid(alpha=0.3)
        axes[0, 0].set_title(title + " — shaded: windows that mattered")
        axes[0, 0].legend(fontsize=7, loc="upper right")
        axes[-1, 0].set_xlabel("seconds into the run")
        fig.tight_layout()
    return fig


def plot_records(predictor, records, frames, out):
    """``ciml predict --plot``: one picture per predicted run; returns the paths.

    ``frames`` are the runs' metrics frames as :func:`ciml.online.predict_runs`
    read them (in the order of ``records``): a looked-up run is never
    fetched twice.
    """
    from ciml.errors import CimlError

    model = predictor.model
    paths = []
    for record, frame in zip(records, frames):
        if record.get("error") or not record.get("explanation") or frame is None:
            continue
        try:
            example, length = model.dataset.example_from_frame(frame, with_length=True)
        except CimlError as exc:
            record.setdefault("plot_error", str(exc))
            continue
        paths.append(plot_run(model, example, length, record, out))
    return paths
