import numpy as np
import pytest

from gmatch.groups import grouped_metrics, groups_by_label, random_groups


def test_hand_made_groups():
    # Group A (0, 1): poster 0 and poster 1 both prefer intro 0 -> nearest gets 1 of 2,
    # Hungarian resolves the conflict (0->0, 1->1). Group B (2, 3): all right.
    D = np.full((4, 4), 9.0)
    D[0, 0], D[0, 1] = 0.1, 0.5
    D[1, 0], D[1, 1] = 0.2, 0.3
    D[2, 2], D[2, 3] = 0.1, 0.9
    D[3, 2], D[3, 3] = 0.9, 0.1
    m = grouped_metrics(D, [np.array([0, 1]), np.array([2, 3])])
    assert m["item_acc/nearest"] == pytest.approx(3 / 4)
    assert m["item_acc/hungarian"] == pytest.approx(1.0)
    assert m["group_exact/nearest"] == pytest.approx(0.5)
    assert m["group_exact/hungarian"] == pytest.approx(1.0)


def test_hungarian_can_also_hurt():
    # Poster 1 is closest to intro 0, poster 0 to intro 0 too but much less strongly:
    # Hungarian gives both wrong partners when the cross costs are lower.
    D = np.array([[0.4, 0.1], [0.1, 0.4]])
    m = grouped_metrics(D, [np.array([0, 1])])
    assert m["item_acc/nearest"] == 0.0 and m["item_acc/hungarian"] == 0.0


def test_group_builders():
    idx = np.arange(23)
    g = random_groups(idx, 5, seed=1)
    assert len(g) == 4 and all(len(x) == 5 for x in g)
    assert len(set(np.concatenate(g).tolist())) == 20
    labels = np.array(["a", "b", "c"] * 8)[:23]
    byl = groups_by_label(idx, labels)
    assert [len(x) for x in byl] == [8, 8, 7]
    assert all(len(set(labels[x])) == 1 for x in byl)
