import itertools

import numpy as np
import pytest
import torch

from gmatch.assignment import assignment_accuracy, hungarian, sinkhorn


def test_hungarian_recovers_planted_permutation():
    rng = np.random.default_rng(0)
    n = 60
    perm = rng.permutation(n)
    D = rng.random((n, n)) + 1.0
    D[np.arange(n), perm] = 0.0
    assert np.array_equal(hungarian(D), perm)
    assert hungarian(torch.as_tensor(np.stack([D, D]))).shape == (2, n)


@pytest.mark.parametrize("seed", range(5))
def test_hungarian_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    D = rng.random((5, 5))
    best = min(itertools.permutations(range(5)), key=lambda p: D[np.arange(5), list(p)].sum())
    assert np.array_equal(hungarian(D), np.array(best))


def test_hungarian_rectangular_marks_unmatched():
    D = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])
    perm = hungarian(D)
    assert sorted(perm.tolist()) == [-1, 0, 1]


def test_sinkhorn_is_doubly_stochastic():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 30, 30, generator=g) * 3
    P = sinkhorn(logits, n_iters=200).exp()
    assert torch.allclose(P.sum(-1), torch.ones(3, 30), atol=1e-4)
    assert torch.allclose(P.sum(-2), torch.ones(3, 30), atol=1e-4)


def test_sinkhorn_low_temperature_approaches_hungarian():
    rng = np.random.default_rng(1)
    D = rng.random((8, 8))
    P = sinkhorn(-torch.as_tensor(D), n_iters=500, tau=0.01).exp()
    assert np.array_equal(P.argmax(1).numpy(), hungarian(D))


def test_assignment_accuracy():
    assert assignment_accuracy(np.array([0, 2, 1, 3])) == 0.5
    assert assignment_accuracy(np.array([0, 2, 1, 3]), subset=np.array([1, 2])) == 0.0
