"""Pareto tools against brute force on random small sets (hypothesis), plus the edge cases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nasforge.search.pareto import (
    constrained_pareto_mask,
    crowding_distance,
    front_ranks_and_crowding,
    hypervolume,
    non_dominated_sort,
    normalize_for_hv,
    pareto_mask,
)


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(a <= b) and np.any(a < b))


def brute_mask(F: np.ndarray) -> np.ndarray:
    return np.array([not any(dominates(F[j], F[i]) for j in range(len(F)) if j != i) for i in range(len(F))],
                    dtype=bool)


def brute_fronts(F: np.ndarray) -> list[list[int]]:
    rest = list(range(len(F)))
    fronts = []
    while rest:
        front = [i for i in rest if not any(dominates(F[j], F[i]) for j in rest if j != i)]
        fronts.append(front)
        rest = [i for i in rest if i not in front]
    return fronts


def brute_hypervolume(F: np.ndarray, ref: np.ndarray) -> float:
    """Inclusion-exclusion over every subset: sum of (-1)^(|S|+1) * volume of the box of S's max."""
    F = F[np.all(F < ref, axis=1)]
    total = 0.0
    for k in range(1, len(F) + 1):
        for S in itertools.combinations(range(len(F)), k):
            corner = F[list(S)].max(axis=0)
            total += (-1) ** (k + 1) * float(np.prod(ref - corner))
    return total


# small integer grids make ties and duplicates common, which is where Pareto code goes wrong
def matrices(max_n: int, m: int | None = None) -> st.SearchStrategy[np.ndarray]:
    dims = st.just(m) if m is not None else st.integers(1, 4)
    return dims.flatmap(lambda d: st.lists(
        st.lists(st.integers(0, 5), min_size=d, max_size=d), min_size=0, max_size=max_n,
    ).map(lambda rows, d=d: np.array(rows, dtype=np.float64).reshape(-1, d)))


@settings(max_examples=150, deadline=None)
@given(matrices(14))
def test_pareto_mask_matches_brute_force(F: np.ndarray) -> None:
    assert pareto_mask(F).tolist() == brute_mask(F).tolist()


@settings(max_examples=100, deadline=None)
@given(matrices(12))
def test_non_dominated_sort_matches_brute_force(F: np.ndarray) -> None:
    fronts = [sorted(f.tolist()) for f in non_dominated_sort(F)]
    assert fronts == brute_fronts(F)


@settings(max_examples=80, deadline=None)
@given(matrices(7), st.data())
def test_hypervolume_matches_inclusion_exclusion(F: np.ndarray, data: st.DataObject) -> None:
    m = F.shape[1]
    ref = np.array(data.draw(st.lists(st.integers(3, 7), min_size=m, max_size=m)), dtype=np.float64)
    assert hypervolume(F, ref) == pytest.approx(brute_hypervolume(F, ref), abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(matrices(40, m=3))
def test_hypervolume_3d_is_invariant_to_order_and_dominated_points(F: np.ndarray) -> None:
    ref = np.full(3, 6.0)
    hv = hypervolume(F, ref)
    perm = np.random.default_rng(0).permutation(len(F))
    assert hypervolume(F[perm], ref) == pytest.approx(hv)
    if len(F):
        assert hypervolume(F[pareto_mask(F)], ref) == pytest.approx(hv)
        assert hypervolume(np.vstack([F, F.max(axis=0)]), ref) == pytest.approx(hv)


def test_pareto_mask_large_2d_and_nd_agree_with_matrix_path() -> None:
    rng = np.random.default_rng(1)
    for m in (2, 3, 5):
        F = rng.integers(0, 30, size=(600, m)).astype(float)
        assert pareto_mask(F).tolist() == (~np.any(
            np.all(F[:, None] <= F[None], axis=2) & np.any(F[:, None] < F[None], axis=2), axis=0)).tolist()
    F = rng.random((5000, 2))  # beyond the matrix limit: peeling path
    fronts = non_dominated_sort(F)
    assert sorted(np.concatenate(fronts).tolist()) == list(range(5000))
    assert pareto_mask(F[fronts[1]]).all() and not pareto_mask(np.vstack([F[fronts[0]], F[fronts[1]]]))[
        len(fronts[0]):].any()


def test_non_finite_values_are_worst() -> None:
    F = np.array([[1.0, 2.0], [np.inf, np.inf], [np.nan, 0.5], [np.inf, np.inf]])
    assert pareto_mask(F).tolist() == [True, False, True, False]
    assert hypervolume(F, np.array([3.0, 3.0])) == pytest.approx(2.0)
    assert [f.tolist() for f in non_dominated_sort(F)] == [[0, 2], [1, 3]]


def test_constrained_mask_prefers_feasible_then_least_violation() -> None:
    F = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.5], [0.5, 2.0]])
    assert constrained_pareto_mask(F, np.array([1.0, 0.0, 0.0, 0.0])).tolist() == [False, True, True, True]
    assert constrained_pareto_mask(F, np.array([1.0, 0.0, 0.0, 2.0])).tolist() == [False, True, True, False]
    assert constrained_pareto_mask(F, np.array([3.0, 0.5, 0.5, 2.0])).tolist() == [False, True, True, False]
    with pytest.raises(ValueError, match="violation"):
        constrained_pareto_mask(F, np.zeros(3))


def test_crowding_distance() -> None:
    F = np.array([[0.0, 4.0], [1.0, 3.0], [3.0, 1.0], [4.0, 0.0]])
    d = crowding_distance(F)
    assert np.isinf(d[[0, 3]]).all()
    # inner points: (3-0)/4 + (4-1)/4 for both
    assert d[1] == pytest.approx(1.5) and d[2] == pytest.approx(1.5)
    assert np.isinf(crowding_distance(F[:2])).all()
    rank, crowd = front_ranks_and_crowding(np.vstack([F, F + 10]))
    assert rank.tolist() == [0] * 4 + [1] * 4
    assert crowd[:4] == pytest.approx(d) and crowd[4:] == pytest.approx(d)


def test_normalize_for_hv() -> None:
    F = np.array([[10.0, -1.0], [20.0, 1.0]])
    N = normalize_for_hv(F, ideal=np.array([10.0, -1.0]), nadir=np.array([20.0, 1.0]))
    assert N.tolist() == [[0.0, 0.0], [1.0, 1.0]]
    assert hypervolume(N, np.full(2, 1.0)) == pytest.approx(1.0)  # the ideal point's unit box
    assert hypervolume(N[1:], np.full(2, 1.0)) == 0.0  # the nadir adds nothing at ref 1
    assert hypervolume(N, np.full(2, 1.1)) == pytest.approx(1.21)


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="2-D"):
        pareto_mask(np.zeros(3))
    with pytest.raises(ValueError, match="reference point"):
        hypervolume(np.zeros((2, 2)), np.zeros(3))
