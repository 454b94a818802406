"""experiments.prior_weights: the fitted mix weighs an informative prior above noise
(control: with the roles swapped, so do the weights)."""

import torch

from experiments.prior_weights import acc, fit_weights


def test_fitted_mix_prefers_the_informative_prior():
    g = torch.Generator().manual_seed(0)
    n = 60
    signal = torch.eye(n) + 0.8 * torch.randn(n, n, generator=g)
    noise = torch.randn(n, n, generator=g)
    w = fit_weights(torch.stack([signal, noise]))
    assert w[0] > 5 * w[1]
    swapped = fit_weights(torch.stack([noise, signal]))
    assert swapped[1] > 5 * swapped[0]
    both = torch.stack([signal, noise])
    assert acc(both, w) > acc(both, [0.0, 1.0])
