"""The sparse Adam row update as numba loops (used by ``titlecat.optim.LazyAdam`` on the CPU).

Kept in its own module so that ``import titlecat`` never imports numba; compiled once
and cached on disk by numba (``cache=True``).
"""

import numba
import numpy as np


@numba.njit(cache=True, boundscheck=False)
def sum_duplicate_rows(idx, values, slot):  # pragma: no cover - compiled
    """An uncoalesced sparse gradient (``idx`` (n,), ``values`` (n, D)) as distinct rows.

    Returns ``(rows, grads)`` with each row once and its values summed -- what
    ``Tensor.coalesce()`` does, without sorting: ``slot`` (one int32 per table row, all -1)
    marks the rows seen and is left all -1 again.  Without duplicates (the usual case:
    the batches look each row up once) the inputs come back as they are, uncopied.
    """
    n = idx.shape[0]
    rows = np.empty(n, np.int64)
    first = np.empty(n, np.int64)  # for each input, the output position of its row
    k = 0
    for i in range(n):
        r = idx[i]
        if slot[r] < 0:
            slot[r] = k
            rows[k] = r
            k += 1
        first[i] = slot[r]
    for j in range(k):
        slot[rows[j]] = -1
    if k == n:
        return idx, values
    grads = np.zeros((k, values.shape[1]), np.float32)
    for i in range(n):
        grads[first[i]] += values[i]
    return rows[:k], grads


@numba.njit(cache=True, parallel=True, fastmath=True, boundscheck=False)
def adam_rows(param, mv, rows, grad, b1, b2, eps_hat, step_size):  # pragma: no cover - compiled
    """For each ``i``: Adam on row ``rows[i]`` of ``param`` with gradient ``grad[i]``.

    ``param`` (N, D), ``mv`` (N, 2, D) first and second moments, ``rows`` (R,) distinct
    row ids, ``grad`` (R, D); all float32 but ``rows``.  Rows are independent, so they
    are split among threads; each row is read and written once (memory-bound).
    """
    dim = param.shape[1]
    c1 = np.float32(1.0) - b1
    c2 = np.float32(1.0) - b2
    for i in numba.prange(rows.shape[0]):
        r = rows[i]
        m_row, v_row, p_row, g_row = mv[r, 0], mv[r, 1], param[r], grad[i]
        for d in range(dim):
            g = g_row[d]
            m = b1 * m_row[d] + c1 * g
            v = b2 * v_row[d] + c2 * g * g
            m_row[d] = m
            v_row[d] = v
            p_row[d] -= step_size * m / (np.sqrt(v) + eps_hat)
