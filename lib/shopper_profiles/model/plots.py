"""Diagnostic plots logged with every model: calibration of the probability heads and confusion
matrices of the demographic heads (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def calibration_plot(heads: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, bins: int = 10) -> None:
    """Observed positive rate per predicted-probability decile bin, one line per head."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(4.5, 4))
    axis.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    edges = np.linspace(0.0, 1.0, bins + 1)
    for name, (labels, probabilities) in heads.items():
        which = np.clip(np.digitize(probabilities, edges[1:-1]), 0, bins - 1)
        xs, ys = [], []
        for b in range(bins):
            members = which == b
            if members.any():
                xs.append(float(np.mean(probabilities[members])))
                ys.append(float(np.mean(np.asarray(labels)[members])))
        axis.plot(xs, ys, marker="o", label=name)
    axis.set_xlabel("predicted probability")
    axis.set_ylabel("observed rate")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def confusion_plot(labels: np.ndarray, predicted: np.ndarray, classes: list[str], title: str, path: Path) -> None:
    plt = _pyplot()
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predicted)), 1)
    figure, axis = plt.subplots(figsize=(1.2 + 0.6 * len(classes), 1 + 0.6 * len(classes)))
    axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axis.set_yticks(range(len(classes)), classes)
    for i in range(len(classes)):
        for j in range(len(classes)):
            axis.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8)
    axis.set_xlabel("predicted")
    axis.set_ylabel("stated")
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def scaling_plot(sizes: list[int], ratios: dict[str, list[float | None]], intervals: dict[str, list[tuple[float, float] | None]],
                 path: Path) -> None:
    """Model / best traditional ratio per task against the number of simulated shoppers (log x),
    with the 95 % bootstrap interval as error bars; 1.0 = parity. Each task its own colour, the
    planted phenomena (reported, not targets) dashed, the legend beside the axes, not over them."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(9.5, 4.6))
    axis.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    colours = plt.get_cmap("tab20").colors  # pairs (dark, light): the ten dark ones first, then the light
    for i, (task, values) in enumerate(ratios.items()):
        points = [(s, v, iv) for s, v, iv in zip(sizes, values, intervals[task], strict=True) if v is not None]
        if not points:
            continue
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        low = [y - (p[2][0] if p[2] else y) for y, p in zip(ys, points, strict=True)]
        high = [(p[2][1] if p[2] else y) - y for y, p in zip(ys, points, strict=True)]
        axis.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=3, label=task, color=colours[(2 * i + i // 10) % 20],
                      linestyle="--" if task.startswith("planted_") else "-")
    axis.set_xscale("log")
    axis.minorticks_off()
    axis.set_xticks(sizes, [f"{s:,}" for s in sizes])
    axis.set_xlabel("simulated shoppers")
    axis.set_ylabel("profile model / best traditional")
    axis.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def headline_plot(heads: list[dict[str, Any]], path: Path) -> None:
    """Model vs the best traditional method per task, as the ratio with its 95 % interval: the
    evaluation's answer at a glance in the MLflow UI (1.0 = a tie; left of it the rules win)."""
    plt = _pyplot()
    rows = [h for h in heads if h.get("ratio") is not None]
    figure, axis = plt.subplots(figsize=(6, 1 + 0.35 * max(len(rows), 1)))
    names = [f"{h['task']} ({h['best_traditional']})" for h in rows]
    ratios = [h["ratio"] for h in rows]
    colours = ["tab:green" if r >= 1 else "tab:red" for r in ratios]
    axis.barh(range(len(rows)), ratios, color=colours)
    for i, h in enumerate(rows):
        low_high = h.get("intervals", {}).get("ratio")
        if low_high:
            axis.plot(low_high, [i, i], color="black", linewidth=1)
    axis.axvline(1.0, color="grey", linestyle="--", linewidth=1)
    axis.set_yticks(range(len(rows)), names, fontsize=8)
    axis.invert_yaxis()
    axis.set_xlabel("profile model / best traditional")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
