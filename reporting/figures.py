"""Matplotlib figures with one style; every figure has a title, axis labels and units."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

STYLE = {"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False, "font.size": 9}
plt.rcParams.update(STYLE)


def gan_loss_curves(history: Mapping[str, Sequence[float]], title: str = "DCGAN losses", window: int | None = None):
    """D and G loss per epoch: the epoch mean (solid) and the last batch's value (dotted; what the paper
    plotted). Labels are the right way round — the paper's own figures swap D and G."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    epochs = np.arange(1, len(history["g_loss_epoch"]) + 1)
    for net, colour in (("d", "tab:blue"), ("g", "tab:orange")):
        name = "discriminator (D)" if net == "d" else "generator (G)"
        ax.plot(epochs, history[f"{net}_loss_epoch"], color=colour, label=f"{name}, epoch mean")
        ax.plot(epochs, history[f"{net}_loss_last"], color=colour, linestyle=":", alpha=0.8, label=f"{name}, last batch")
    if window and len(epochs) > 1:
        ax.axvspan(max(1, len(epochs) - window + 1), len(epochs), color="grey", alpha=0.12, label=f"fluctuation window ({window} epochs)")
    ax.set(title=title, xlabel="epoch", ylabel="loss (sigmoid cross-entropy, nats)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig
