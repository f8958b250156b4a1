"""Dataset and model plots stay readable with many classes."""

import numpy as np
import pytest

from ciml.testing import make_dataset


@pytest.fixture
def captured(monkeypatch):
    """The figures the plot functions save, kept open for inspection."""
    from ciml.dataset import plot as plot_mod

    figures = []

    def keep(fig, path):
        fig.canvas.draw()
        figures.append(fig)
        return path

    monkeypatch.setattr(plot_mod, "_save", keep)
    yield figures
    import matplotlib.pyplot as plt

    for fig in figures:
        plt.close(fig)


def test_multiclass_distributions_are_side_by_side_not_overlaid(data_path, tmp_path,
                                                                 captured):
    from matplotlib.collections import LineCollection
    from matplotlib.patches import Rectangle

    from ciml.dataset import Dataset
    from ciml.dataset.plot import plot_distributions

    make_dataset(data_path, "prov", n=80, class_label="node_provider_all")
    ds = Dataset.open(data_path, "prov")
    assert len(ds.classes) >= 5
    values = np.concatenate([ds.split(s).X[:, 0, :] for s in ds.splits])
    codes = np.concatenate([ds.split(s).y for s in ds.splits])
    plot_distributions(ds, tmp_path, values, codes, "mean")
    (fig,) = captured
    (ax,) = fig.axes
    # No histogram bars: the only rectangles are the shaded row bands.
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(bars) <= (len(ds.features) + 1) // 2
    # Each class has its own rows: no y position is shared by two classes.
    rows = {}
    for coll in ax.collections:
        if isinstance(coll, LineCollection) and coll.get_segments():
            ys = {round(float(seg[0][1]), 6) for seg in coll.get_segments()}
            color = tuple(np.round(coll.get_colors()[0], 3))
            rows.setdefault(color, set()).update(ys)
    assert len(rows) == len(ds.classes)
    seen = set()
    for ys in rows.values():
        assert not ys & seen
        seen |= ys
    # The legend sits beside the plot, over no data.
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1 - 1


def test_multiclass_pr_legend_does_not_cover_the_curves(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from ciml import model_plot

    classes = ["a", "b", "c", "d", "e", "f"]
    rng = np.random.default_rng(0)
    rows = []
    for i in range(120):
        p = rng.dirichlet(np.ones(len(classes)))
        rows.append({"true": classes[i % len(classes)],
                     **{f"p_{c}": str(v) for c, v in zip(classes, p)}})
    kept = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: kept.append(fig))
    model_plot.plot_pr(rows, classes, tmp_path / "pr.png", "pr")
    monkeypatch.setattr(plt, "close", real_close)
    (fig,) = kept
    ax = fig.axes[0]
    fig.canvas.draw()
    legend = ax.get_legend()
    assert legend.get_window_extent().x0 >= ax.get_window_extent().x1 - 1
    # One entry per class plus one for all the prevalence lines.
    assert len(legend.get_texts()) == len(classes) + 1
    assert (tmp_path / "pr.png").stat().st_size > 1000
    plt.close(fig)
