"""Plots of trained models: confusion matrix, training curves, PR curve, comparisons."""

import csv
import pathlib

import numpy as np

from ciml import fileutil
from ciml import metrics as metrics_mod
from ciml.errors import ConfigError

#: Metrics ``model compare`` can chart (keys of metrics.json).
COMPARABLE = ("accuracy", "macro_f1", "roc_auc", "pr_auc", "error_rate")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_predictions(path, dataset=None, split="test"):
    with path.open("r", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [r for r in rows
            if r["split"] == split and (dataset is None or r["dataset"] == dataset)]


def plot_confusion(metrics, out, title):
    _save(confusion_figure(metrics, title), out)


def _save(fig, out, **kwargs):
    """Write ``fig`` to ``out`` (a path, or a binary file with ``format=``) and free it."""
    fig.savefig(out, dpi=100, **kwargs)
    _pyplot().close(fig)


def confusion_figure(metrics, title):
    """The confusion matrix as a figure (counts and each true class's shares)."""
    plt = _pyplot()
    cm = np.asarray(metrics["confusion_matrix"], dtype=float)
    classes = metrics["classes"]
    k = len(classes)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    size = max(4.0, 0.6 * k + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{int(cm[i, j])}\n{share[i, j]:.0%}", ha="center", va="center",
                    fontsize=8, color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="share of the true class")
    fig.tight_layout()
    return fig


def plot_history(history, out, title):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    curves = {k: v for k, v in history.items() if isinstance(v, list) and v}
    for key, values in sorted(curves.items()):
        ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=key)
    if "val_loss" in curves:
        best = int(np.argmin(curves["val_loss"])) + 1
        ax.axvline(best, color="grey", linestyle="--", linewidth=1,
                   label=f"best val_loss (epoch {best})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_pr(rows, classes, out, title):
    """Precision-recall of the failed class (binary) or of each class (one-vs-rest)."""
    # Tight: the legend sits beside the axes, outside the figure's own box.
    _save(pr_figure(rows, classes, title), out, bbox_inches="tight")


def pr_figure(rows, classes, title, legend="beside"):
    """:func:`plot_pr`'s figure; rows are the model's predictions.csv rows of one split.

    ``legend`` is ``"beside"`` the axes (a wide picture) or ``"below"`` them
    (a narrow one, for a page's column).
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5) if legend == "beside" else (5.5, 5))
    true = np.array([r["true"] for r in rows])
    targets = [metrics_mod.positive_class(classes)] if len(classes) == 2 else classes
    multiclass = len(targets) > 1
    for cls in targets:
        score = np.array([float(r[f"p_{cls}"]) for r in rows])
        truth = true == cls
        if not truth.any():
            continue
        precision, recall, _ = metrics_mod.pr_curve(truth, score)
        ap = metrics_mod.average_precision(truth, score)
        # Start at recall 0 with the first precision: a step plot from the top threshold.
        ax.step(np.r_[0.0, recall], np.r_[precision[:1], precision], where="post",
                label=f"{cls} (AP {ap:.3f})")
        # Several classes: one legend entry says what the dotted lines are.
        ax.axhline(truth.mean(), linestyle=":", linewidth=1,
                   color=ax.lines[-1].get_color(),
                   label="_nolegend_" if multiclass
                   else f"{cls} baseline (prevalence {truth.mean():.3f})")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if multiclass:
        ax.plot([], [], linestyle=":", color="grey", linewidth=1,
                label="dotted: each class's prevalence (a random model)")
    # Beside or below the plot, never over the curves (they fill the top right).
    if legend == "below":
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12),
                  borderaxespad=0)
    else:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    return fig


def plot_model(data_path, dataset, experiment, output_dir=None):
    """Write the PNGs of one model; returns their paths."""
    from ciml.model import HISTORY_FILE, PREDICTIONS_FILE, model_dir, read_metrics

    folder = model_dir(data_path, dataset, experiment)
    metrics = read_metrics(data_path, dataset, experiment)
    from ciml.storage import local_output

    out = pathlib.Path(output_dir) if output_dir else local_output(folder / "plots")
    out.mkdir(parents=True, exist_ok=True)
    name = f"{dataset}/{experiment}"
    written = []
    if metrics.get("confusion_matrix") is not None:
        path = out / "confusion_matrix.png"
        plot_confusion(metrics, path, f"{name}: {metrics.get('split')} split\n"
                       f"accuracy {metrics['accuracy']:.3f}, baseline "
                       f"{metrics['baseline']['accuracy']:.3f}")
        written.append(path)
    if (folder / HISTORY_FILE).is_file():
        path = out / "training_curves.png"
        plot_history(fileutil.read_json(folder / HISTORY_FILE), path,
                     f"{name}: training curves")
        written.append(path)
    rows = read_predictions(folder / PREDICTIONS_FILE, dataset, metrics.get("split") or "test")
    if rows:
        path = out / "pr_curve.png"
        plot_pr(rows, metrics["classes"], path, f"{name}: precision-recall "
                f"({metrics.get('split')} split)")
        written.append(path)
    from ciml.explain_plot import model_plots

    return written + model_plots(folder, metrics, out, name)


def _value(metrics, key):
    if key == "error_rate":
        acc = metrics.get("accuracy")
        return None if acc is None else 1.0 - acc
    return metrics.get(key)


def compare_models(data_path, entries, key="accuracy", output=None, title=None,
                   set_names=None):
    """A bar chart of one metric across models, each beside its baseline.

    :param entries: a list of sets; each set a list of ``(dataset,
        experiment, label)``.  Bars of the same position in each set are
        grouped (the original's ``--dataset-experiment-comp``).
    :return: ``(rows, output path)``; rows are ``(set, label, dataset,
        experiment, value, baseline)``.
    """
    from ciml.model import read_metrics

    if key not in COMPARABLE:
        raise ConfigError(f"cannot compare {key!r}; choose from " + ", ".join(COMPARABLE))
    entries = [list(s) for s in entries if s]
    if not entries:
        raise ConfigError("nothing to compare: give --dataset-experiment-label "
                          "DATASET EXPERIMENT LABEL at least once")
    set_names = list(set_names or [])
    set_names += [f"set {i + 1}" for i in range(len(set_names), len(entries))]
    rows = []
    for set_name, group in zip(set_names, entries):
        for dataset, experiment, label in group:
            metrics = read_metrics(data_path, dataset, experiment)
            value = _value(metrics, key)
            base = _value(metrics.get("baseline") or {}, key)
            rows.append((set_name, label, dataset, experiment, value, base))

    plt = _pyplot()
    labels = [r[1] for r in rows if r[0] == set_names[0]]
    n_sets = len(entries)
    width = 0.8 / (n_sets + 1)
    positions = np.arange(max(len(g) for g in entries))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(positions) * (n_sets + 1) + 2), 5))
    for s, set_name in enumerate(set_names[:n_sets]):
        values = [r[4] for r in rows if r[0] == set_name]
        shown = [np.nan if v is None else v for v in values]
        bars = ax.bar(positions[:len(values)] + s * width, shown, width,
                      label=set_name if n_sets > 1 else key)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    baselines = [r[5] for r in rows if r[0] == set_names[0]]
    ax.bar(positions[:len(baselines)] + n_sets * width,
           [np.nan if v is None else v for v in baselines], width, color="lightgrey",
           hatch="//", label="majority-class baseline")
    ax.set_xticks(positions + width * n_sets / 2, labels[:len(positions)], rotation=20,
                  ha="right")
    ax.set_ylabel(key)
    ax.set_ylim(0, 1.05)
    ax.set_title(title or f"{key} by model")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    output = pathlib.Path(output or f"{key}_comparison.png")
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return rows, output
