"""Token selection (sent.token_selection): exactly k chosen, the tie rule, and every path (topk
with a static bound, numpy's partition on the CPU, a sort, the batched extremes) selecting the
same set as the definition, under heavy ties (property tests)."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sent.token_selection import _extremes_by_selection, _extremes_by_topk, select_extremes, select_top


def test_select_top_picks_exactly_k_candidates():
    rng = np.random.default_rng(0)
    scores = torch.tensor(rng.normal(size=(6, 9)))
    cand = torch.tensor(rng.random((6, 9)) > 0.4)
    for k in (1, 3, 10, 1000):
        top = select_top(scores, cand, torch.tensor(k), largest=True)
        n = min(k, int(cand.sum()))
        assert int(top.sum()) == n and bool((top <= cand).all())
        if n:
            assert scores[top].min() >= scores[cand & ~top].max() if n < int(cand.sum()) else True


# selection paths -----------------------------------------------------------------------------

ties_st = st.lists(st.sampled_from([0.0, 0.5, 1.0, 1.5]), min_size=1, max_size=80)


@settings(max_examples=150, deadline=None)
@given(ties_st, st.data())
def test_selection_paths_agree_under_heavy_ties(values, data):
    # topk (static bound), CPU partition, and the generic rank definition select the same set
    n = len(values)
    scores = torch.tensor(values)
    cand = torch.tensor(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    k = data.draw(st.integers(0, n + 2))
    largest = data.draw(st.booleans())
    kt = torch.tensor(float(k))
    cpu_path = select_top(scores, cand, kt, largest=largest)
    topk_path = select_top(scores, cand, kt, largest=largest, max_k=n + 2)
    # definition: candidates ordered by score (desc if largest), ties by lower index; take k
    order = sorted((i for i in range(n) if cand[i]), key=lambda i: (-values[i] if largest else values[i], i))
    expected = torch.zeros(n, dtype=torch.bool)
    expected[order[:k]] = True
    assert cpu_path.tolist() == expected.tolist()
    assert topk_path.tolist() == expected.tolist()


@settings(max_examples=150, deadline=None)
@given(ties_st, st.data())
def test_select_extremes_matches_its_definition(values, data):
    n = len(values)
    scores = torch.tensor(values)
    cand = torch.tensor(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    k = data.draw(st.integers(1, n + 1))
    cands = [i for i in range(n) if cand[i]]
    # high: largest first, ties to the lower index; low: among the rest, smallest first with ties
    # to the higher index (the exact reverse order)
    high_set = sorted(cands, key=lambda i: (-values[i], i))[:k]
    rest = [i for i in cands if i not in high_set]
    low_set = sorted(rest, key=lambda i: (values[i], -i))[:k]
    kt = torch.tensor(float(k))
    paths = {
        "cpu partition": select_extremes(scores, cand, kt),
        "two selections": _extremes_by_selection(scores, cand, kt),
        "batched topk (accelerators)": _extremes_by_topk(scores, cand, kt, max_k=n + 1),
    }
    for path, (high, low) in paths.items():
        assert sorted(torch.nonzero(high).flatten().tolist()) == sorted(high_set), path
        assert sorted(torch.nonzero(low).flatten().tolist()) == sorted(low_set), path


def test_all_covariances_equal_split_first_and_last():
    # all advantages equal -> every Cov = 0: high takes the first k' tokens, low the last k'
    scores = torch.zeros(10)
    high, low = select_extremes(scores, torch.ones(10, dtype=torch.bool), torch.tensor(2.0), max_k=4)
    assert torch.nonzero(high).flatten().tolist() == [0, 1]
    assert torch.nonzero(low).flatten().tolist() == [8, 9]


def test_cpu_selection_takes_bfloat16_entropy():
    # verl hands the loss its entropy in bf16; numpy has no bf16, so .numpy() raised TypeError.
    # The selection on bf16 must equal the selection on the same values in float32.
    rng = np.random.default_rng(3)
    scores = torch.tensor(rng.gamma(2.0, size=(8, 4096)), dtype=torch.bfloat16)  # 32k tokens: the CPU path
    cand = torch.tensor(rng.random((8, 4096)) > 0.1)
    for largest in (True, False):
        got = select_top(scores, cand, torch.tensor(5000), largest=largest)
        want = select_top(scores.float(), cand, torch.tensor(5000), largest=largest)
        assert torch.equal(got, want) and int(got.sum()) == 5000
