"""evaluate: perplexity with and without the sliding window on a toy model whose probabilities we know."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lifecycle.scoring import majority_baseline, sequence_nll, windows

VOCAB = 5
# A bigram model: p(next | previous) is row `previous` of this table, whatever came before.
TABLE = torch.tensor(np.random.default_rng(0).dirichlet(np.ones(VOCAB), size=VOCAB), dtype=torch.float32)


class Bigram(torch.nn.Module):
    device = torch.device("cpu")

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=torch.log(TABLE)[input_ids])


DOCUMENTS = [[0, 3, 1, 4, 4, 2, 0, 1, 3, 2, 2, 4], [0, 2, 2], [0, 1]]


def expected_nll() -> tuple[float, int]:
    pairs = [(a, b) for doc in DOCUMENTS for a, b in zip(doc, doc[1:])]
    return -sum(math.log(float(TABLE[a, b])) for a, b in pairs), len(pairs)


def test_perplexity_without_window_is_exp_mean_nll():
    nll, count = sequence_nll(Bigram(), DOCUMENTS, context=64, stride=32)
    want, n = expected_nll()
    assert count == n
    assert math.exp(nll / count) == pytest.approx(math.exp(want / n), rel=1e-5)


@pytest.mark.parametrize("context,stride", [(4, 2), (3, 1), (5, 4), (2, 1)])
def test_perplexity_with_sliding_window_is_the_same(context, stride):
    nll, count = sequence_nll(Bigram(), DOCUMENTS, context=context, stride=stride, batch_size=3)
    want, n = expected_nll()
    assert count == n
    assert nll == pytest.approx(want, rel=1e-5)


def test_windows_score_every_token_after_the_first_exactly_once():
    ids = list(range(10, 21))
    scored = [t for _, labels in windows(ids, context=4, stride=3) for t in labels if t != -100]
    assert scored == ids[1:]
    assert all(len(inputs) <= 4 for inputs, _ in windows(ids, context=4, stride=3))


def test_majority_baseline_answers_the_most_frequent_training_class():
    baseline = majority_baseline([1, 1, 0], references=[1, 0, 1, 1], classes=["neg", "pos"])
    assert baseline["class"] == "pos" and baseline["accuracy"] == 0.75
    assert baseline["macro_f1"] == pytest.approx((0 + 2 * 0.75 / 1.75) / 2)
