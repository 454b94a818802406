"""Grouped matching: items come in groups and are matched only inside their group
(several images and several labels of one product). Pure functions of D."""

from __future__ import annotations

import numpy as np
import torch

from gmatch.assignment import hungarian

__all__ = ["random_groups", "groups_by_label", "grouped_metrics"]


def random_groups(idx: np.ndarray, size: int, seed: int = 0) -> list[np.ndarray]:
    """Split ``idx`` into seeded random groups of ``size`` (a smaller tail is dropped)."""
    order = np.random.default_rng(seed).permutation(np.asarray(idx))
    return [order[s : s + size] for s in range(0, len(order) - size + 1, size)]


def groups_by_label(
    idx: np.ndarray, labels, size: int | None = None, seed: int = 0
) -> list[np.ndarray]:
    """Groups of items sharing a label (e.g. a product id, or a movie's first genre);
    with ``size`` each label's items are cut into seeded groups of that size."""
    idx = np.asarray(idx)
    labels = np.asarray(labels)[idx]
    out = []
    for lab in sorted(set(labels.tolist())):
        members = idx[labels == lab]
        if size is None:
            if len(members) >= 2:
                out.append(members)
        else:
            out += random_groups(members, size, seed)
    return out


def grouped_metrics(D, groups: list[np.ndarray]) -> dict:
    """Matching inside each group only.

    Returns per-item accuracy (poster -> nearest intro of its group is its own) and
    the share of groups matched entirely right, for the raw nearest neighbour and
    for a one-to-one Hungarian assignment inside each group.
    """
    D = torch.as_tensor(D)
    item_nn, item_h, group_nn, group_h, n = 0, 0, 0, 0, 0
    for g in groups:
        sub = D[torch.as_tensor(g)][:, torch.as_tensor(g)]
        truth = np.arange(len(g))
        nn = sub.argmin(dim=1).numpy() == truth
        hu = hungarian(sub) == truth
        item_nn += nn.sum()
        item_h += hu.sum()
        group_nn += nn.all()
        group_h += hu.all()
        n += len(g)
    k = max(1, len(groups))
    return {
        "groups": len(groups),
        "items": n,
        "item_acc/nearest": float(item_nn / max(1, n)),
        "item_acc/hungarian": float(item_h / max(1, n)),
        "group_exact/nearest": float(group_nn / k),
        "group_exact/hungarian": float(group_h / k),
    }
