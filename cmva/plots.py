"""Evaluation plots (PNG, matplotlib Agg): ROUGE bars, agent conformity, profile following per value."""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROUGE_LABELS = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "rougeLsum": "ROUGE-Lsum"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_rouge(rouge: dict, path: Path) -> None:
    plt = _plt()
    systems = list(rouge)
    keys = list(ROUGE_LABELS)
    x = np.arange(len(keys))
    width = 0.8 / len(systems)
    fig, ax = plt.subplots(figsize=(9.5, 3.6))
    for i, s in enumerate(systems):
        ax.bar(x + i * width, [rouge[s][k] for k in keys], width, label=s)
    ax.set_xticks(x + 0.4 - width / 2, list(ROUGE_LABELS.values()))
    ax.set_ylabel("F1"), ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never hides a bar
    ax.set_title("CMVA-GS vs baselines (MIC ground truth)")
    _save(plt, fig, path)


def _save(plt, fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _bar_pairs(ax, labels: list[str], left: list[float], right: list[float], names: tuple[str, str]) -> None:
    """Two bars per label (e.g. PT model vs agent), on a 0–1 reward axis."""
    x = np.arange(len(labels))
    ax.bar(x - 0.2, left, 0.4, label=names[0])
    ax.bar(x + 0.2, right, 0.4, label=names[1])
    ax.set_xticks(x, labels, rotation=30 if len(labels) > 4 else 0), ax.set_ylim(0, 1), ax.grid(axis="y", alpha=0.3)


def plot_conformity(conformity: dict, path: Path) -> None:
    plt = _plt()
    vals = list(conformity)
    fig, ax = plt.subplots(figsize=(7, 3.4))
    pt, agent = [conformity[v]["pt"] for v in vals], [conformity[v]["agent"] for v in vals]
    _bar_pairs(ax, vals, pt, agent, ("PT model", "moral agent"))
    ax.set_ylabel("mean reward (P follows value)"), ax.legend(), ax.set_title("Conformity of each agent to its value")
    _save(plt, fig, path)


def plot_profile_following(paired: dict, path: Path) -> None:
    """Per value, the mean score of answers asked for that value (one-hot e_v) vs answers asked for another."""
    plt = _plt()
    systems = list(paired)
    fig, axes = plt.subplots(1, max(len(systems), 1), figsize=(4.2 * max(len(systems), 1), 3.4), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, s in zip(axes, systems, strict=False):
        by_value = paired[s]["by_value"]
        vals = list(by_value)
        asked, others = [by_value[v]["asked"] for v in vals], [by_value[v]["others"] for v in vals]
        _bar_pairs(ax, vals, asked, others, ("asked for this value", "asked for another value"))
        ax.set_title(f"{s}: win rate {paired[s]['win_rate']:.2f}", fontsize=9)
    axes[0].set_ylabel("mean reward of the value")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="upper right", ncol=2, fontsize=8)  # never on a bar
    fig.suptitle("Does the answer move toward the requested value?", fontsize=10, x=0.02, ha="left")
    _save(plt, fig, path)


def plot_specialisation(matrix: dict, path: Path) -> None:
    """Heat-map of S[i][j] = P[r_i(agent i) > r_i(agent j)] (rows: value i's agent; diagonal blank)."""
    plt = _plt()
    names = list(matrix)
    arr = np.array([[np.nan if matrix[i][j] is None else matrix[i][j] for j in names] for i in names], dtype=float)
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    im = ax.imshow(arr, vmin=0, vmax=1, cmap="RdYlGn")
    for a in range(len(names)):
        for b in range(len(names)):
            if not np.isnan(arr[a, b]):
                ax.text(b, a, f"{arr[a, b]:.2f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=30), ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("compared with agent j"), ax.set_ylabel("agent i, judged by reward i")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title("Agent specialisation P[r_i(agent i) > r_i(agent j)]", fontsize=9)
    _save(plt, fig, path)
