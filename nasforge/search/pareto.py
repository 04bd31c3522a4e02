"""Pareto tools on objective matrices: rows are points, columns objectives, every objective minimized.

All functions take an (n, m) array-like of floats. NaN is read as +inf (a failed point: worse than
anything finite). Points that are equal in every objective do not dominate each other, so
duplicates share their front and are all on it.

- ``pareto_mask(F)``: True for points no other point dominates. O(n log n) for 2 objectives,
  otherwise a pairwise filter over the shrinking set of candidates (memory O(n x front)).
- ``constrained_pareto_mask(F, violation)``: the same among feasible points (violation <= 0); if
  none is feasible, the points of least violation.
- ``non_dominated_sort(F)``: fronts of indices, best first (Deb's fast non-dominated sort,
  vectorized; peeling with ``pareto_mask`` for large n).
- ``crowding_distance(F)``: NSGA-II crowding distance within one front (boundaries +inf).
- ``front_ranks_and_crowding(F)``: rank and crowding of every point in one vectorized pass.
- ``hypervolume(F, ref)``: exact dominated hypervolume bounded by ``ref`` (2-D sweep; 3+ objectives
  by slicing on the last objective, i.e. HSO: exact, fine for the hundreds of points we have).
- ``normalize_for_hv(F, ideal, nadir)``: affine map so that ``ideal`` -> 0 and ``nadir`` -> 1.
"""

from __future__ import annotations

import numpy as np

#: above this many points the pairwise dominance matrix (n x n x m booleans) is not built
_MATRIX_LIMIT = 2048


def _as_matrix(F: np.ndarray) -> np.ndarray:
    F = np.array(F, dtype=np.float64, copy=True)
    if F.ndim != 2:
        raise ValueError(f"objective matrix must be 2-D (points x objectives), got shape {F.shape}")
    F[np.isnan(F)] = np.inf
    return F


def dominates_matrix(F: np.ndarray) -> np.ndarray:
    """``D[i, j]`` is True when point i dominates point j (<= everywhere, < somewhere)."""
    F = _as_matrix(F)
    le = np.all(F[:, None, :] <= F[None, :, :], axis=2)
    lt = np.any(F[:, None, :] < F[None, :, :], axis=2)
    return le & lt


def _pareto_mask_2d(F: np.ndarray) -> np.ndarray:
    uniq, inverse = np.unique(F, axis=0, return_inverse=True)
    # unique rows sorted lexicographically: an earlier row j has f0_j < f0_i, or f0_j == f0_i and
    # f1_j < f1_i; so row i is dominated exactly when some earlier row has f1_j <= f1_i
    f1 = uniq[:, 1]
    prev_min = np.concatenate([[np.inf], np.minimum.accumulate(f1)[:-1]])
    keep = ~(prev_min <= f1)
    # +inf rows: ``inf <= inf`` would mark a second all-inf row dominated by the first; they are
    # equal, so neither dominates: handled because unique() merged them into one row
    return keep[inverse.ravel()]


def _pareto_mask_filter(F: np.ndarray) -> np.ndarray:
    n = len(F)
    # try points in order of their sum (non-finite values clipped to just past the column's finite
    # range): a point can only dominate points of larger sum, so the candidates tried so far
    # are never removed later and strong dominators prune early
    finite = np.isfinite(F)
    lo = np.where(finite, F, np.inf).min(axis=0)
    hi = np.where(finite, F, -np.inf).max(axis=0)
    lo = np.where(np.isfinite(lo), lo, 0.0)
    hi = np.where(np.isfinite(hi), hi, 0.0)
    clipped = np.clip(F, lo - 1.0, hi + 1.0)
    candidates = np.argsort(clipped.sum(axis=1), kind="stable")
    i = 0
    while i < len(candidates):
        p = F[candidates[i]]
        G = F[candidates]
        dominated = np.all(p <= G, axis=1) & np.any(p < G, axis=1)
        candidates = candidates[~dominated]
        i += 1
    mask = np.zeros(n, dtype=bool)
    mask[candidates] = True
    return mask


def pareto_mask(F: np.ndarray) -> np.ndarray:
    """Boolean mask of the points no other point dominates (duplicates of a front point are kept)."""
    F = _as_matrix(F)
    n, m = F.shape
    if n == 0:
        return np.zeros(0, dtype=bool)
    if m == 1:
        return F[:, 0] == F[:, 0].min()
    if m == 2:
        return _pareto_mask_2d(F)
    return _pareto_mask_filter(F)


def constrained_pareto_mask(F: np.ndarray, violation: np.ndarray) -> np.ndarray:
    """Pareto mask among feasible points (violation <= 0); if none is feasible, the least violating."""
    F = _as_matrix(F)
    v = np.asarray(violation, dtype=np.float64)
    if v.shape != (len(F),):
        raise ValueError(f"violation must have shape ({len(F)},), got {v.shape}")
    mask = np.zeros(len(F), dtype=bool)
    if len(F) == 0:
        return mask
    v = np.where(np.isnan(v), np.inf, v)
    feasible = v <= 0
    if not feasible.any():
        mask[v == v.min()] = True
        return mask
    idx = np.flatnonzero(feasible)
    mask[idx[pareto_mask(F[idx])]] = True
    return mask


def _front_ranks_2d(F: np.ndarray) -> np.ndarray:
    """Front number of every point for two objectives in O(n log n).

    Rows in lexicographic order: an earlier row that is not equal dominates a later one exactly
    when its second objective is <= (see ``_pareto_mask_2d``). Front k keeps the smallest second
    objective seen in it so far (increasing in k); a row joins the first front whose smallest
    value is greater than its own, found by bisection. Equal rows share a front.
    """
    from bisect import bisect_right

    order = np.lexsort((F[:, 1], F[:, 0]))
    f0, f1 = F[order, 0], F[order, 1]
    same = np.zeros(len(F), dtype=bool)
    same[1:] = (f0[1:] == f0[:-1]) & (f1[1:] == f1[:-1])
    tails: list[float] = []
    sorted_ranks: list[int] = []
    k = 0
    for v, dup in zip(f1.tolist(), same.tolist(), strict=True):
        if not dup:
            k = bisect_right(tails, v)
            if k == len(tails):
                tails.append(v)
            else:
                tails[k] = v
        sorted_ranks.append(k)
    rank = np.empty(len(F), dtype=np.int64)
    rank[order] = sorted_ranks
    return rank


def _front_ranks_matrix(F: np.ndarray) -> np.ndarray:
    n = len(F)
    D = dominates_matrix(F)
    dominated_by = D.sum(axis=0)
    rank = np.zeros(n, dtype=np.int64)
    assigned = np.zeros(n, dtype=bool)
    current = np.flatnonzero(dominated_by == 0)
    r = 0
    while current.size:
        rank[current] = r
        assigned[current] = True
        dominated_by = dominated_by - D[current].sum(axis=0)
        current = np.flatnonzero((dominated_by == 0) & ~assigned)
        r += 1
    return rank


def front_ranks(F: np.ndarray) -> np.ndarray:
    """Front number of every point (0 = non-dominated, 1 = non-dominated once front 0 is gone, ...)."""
    F = _as_matrix(F)
    n, m = F.shape
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if m == 1:
        return np.unique(F[:, 0], return_inverse=True)[1].ravel().astype(np.int64)
    if m == 2:
        return _front_ranks_2d(F)
    if n <= _MATRIX_LIMIT:
        return _front_ranks_matrix(F)
    rank = np.zeros(n, dtype=np.int64)
    rest = np.arange(n)
    r = 0
    while rest.size:
        mask = pareto_mask(F[rest])
        rank[rest[mask]] = r
        rest = rest[~mask]
        r += 1
    return rank


def non_dominated_sort(F: np.ndarray) -> list[np.ndarray]:
    """Fronts of indices (ascending within a front): front 0 is non-dominated, front 1 is
    non-dominated once front 0 is removed, and so on. Every index appears in exactly one front."""
    rank = front_ranks(F)
    if rank.size == 0:
        return []
    order = np.argsort(rank, kind="stable")
    bounds = np.flatnonzero(np.diff(rank[order])) + 1
    return np.split(order, bounds)


def crowding_by_group(F: np.ndarray, group: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of every point within its group (e.g. its front), vectorized.

    For each objective the points of a group are sorted; the two ends get +inf, an inner point
    the gap between its neighbours divided by the group's range of that objective (0 when the
    range is 0). Groups of one or two points are all +inf; a non-finite gap counts as +inf.
    """
    F = _as_matrix(F)
    n, m = F.shape
    group = np.asarray(group, dtype=np.int64)
    dist = np.zeros(n)
    if n == 0:
        return dist
    for j in range(m):
        order = np.lexsort((F[:, j], group))  # by group, then by objective j
        g = group[order]
        f = F[order, j]
        first = np.empty(n, dtype=bool)
        first[0] = True
        np.not_equal(g[1:], g[:-1], out=first[1:])
        last = np.empty(n, dtype=bool)
        last[-1] = True
        last[:-1] = first[1:]
        gid = np.cumsum(first) - 1
        span = (f[last] - f[first])[gid]
        gap = np.full(n, np.inf)
        if n > 2:
            with np.errstate(invalid="ignore", divide="ignore"):
                inner = (f[2:] - f[:-2]) / span[1:-1]
            inner[span[1:-1] == 0] = 0.0
            inner[np.isnan(inner)] = np.inf
            gap[1:-1] = inner
        gap[first | last] = np.inf
        dist[order] += gap
    return dist


def crowding_distance(F: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance within one front (boundary points get +inf)."""
    F = _as_matrix(F)
    return crowding_by_group(F, np.zeros(len(F), dtype=np.int64))


def front_ranks_and_crowding(F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rank, crowding) of every point: its front number and its crowding distance in that front."""
    rank = front_ranks(F)
    return rank, crowding_by_group(F, rank)


def hypervolume(F: np.ndarray, ref: np.ndarray) -> float:
    """Exact hypervolume of the region dominated by ``F`` and bounded above by ``ref``.

    Points not strictly better than ``ref`` in every objective add nothing. 2-D by a sort and
    sweep (O(n log n)); more objectives by slicing on the last objective and recursing (exact).
    """
    F = _as_matrix(F)
    ref = np.asarray(ref, dtype=np.float64)
    if ref.shape != (F.shape[1],):
        raise ValueError(f"reference point must have {F.shape[1]} values, got shape {ref.shape}")
    if len(F) == 0:
        return 0.0
    F = F[np.all(F < ref, axis=1)]
    if len(F) == 0:
        return 0.0
    return _hv(F, ref)


def _hv(F: np.ndarray, ref: np.ndarray) -> float:
    m = F.shape[1]
    if m == 1:
        return float(ref[0] - F[:, 0].min())
    if m == 2:
        order = np.lexsort((F[:, 1], F[:, 0]))
        x, y = F[order, 0], F[order, 1]
        ys = np.minimum.accumulate(y)
        prev = np.concatenate([[ref[1]], ys[:-1]])
        return float(np.sum((ref[0] - x) * (prev - ys)))
    F = F[pareto_mask(F)]
    order = np.argsort(F[:, -1], kind="stable")
    P = F[order]
    hv = 0.0
    for i in range(len(P)):
        upper = P[i + 1, -1] if i + 1 < len(P) else ref[-1]
        depth = upper - P[i, -1]
        if depth > 0:
            hv += depth * _hv(P[: i + 1, :-1], ref[:-1])
    return float(hv)


def normalize_for_hv(F: np.ndarray, ideal: np.ndarray, nadir: np.ndarray) -> np.ndarray:
    """Map objectives affinely so that ``ideal`` -> 0 and ``nadir`` -> 1 in every column.

    Use one (ideal, nadir) pair for every front you compare, then a reference point such as
    ``np.full(m, 1.1)``. Columns where nadir == ideal are only shifted.
    """
    F = _as_matrix(F)
    ideal = np.asarray(ideal, dtype=np.float64)
    nadir = np.asarray(nadir, dtype=np.float64)
    span = nadir - ideal
    span = np.where(span > 0, span, 1.0)
    return (F - ideal) / span
