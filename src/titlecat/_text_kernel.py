"""The tokenizer's regular expression as one compiled scan (used by ``tokenizer.tokenize_records``).

``text.tokenize`` defines the tokens with a regular expression; on a block of many
titles, ``re.findall`` plus mapping ~400,000 token strings to ids was ~70% of
preprocessing.  This scan finds the same tokens in the code points of the normalised
block and hashes each one (two independent 64-bit hashes) instead of building its
string: only the first occurrence of each distinct token becomes a Python string.
``tests/test_tokenizer.py`` proves it equal to the regular expression (hypothesis and the
real titles).

Kept in its own module so that ``import titlecat`` never imports numba; compiled once
and cached on disk by numba (``cache=True``).
"""

import numba
import numpy as np

ALNUM = np.uint8(1)  # str.isalnum(): the regular expression's [^\W_]
DECIMAL = np.uint8(2)  # str.isdecimal(): the regular expression's \d

_ASCII = np.zeros(128, dtype=np.uint8)
for _c in range(128):
    _ASCII[_c] = (ALNUM if chr(_c).isalnum() else 0) | (DECIMAL if chr(_c).isdecimal() else 0)


def classes(cp: np.ndarray) -> np.ndarray:
    """(n,) uint8 ALNUM/DECIMAL bits of each code point, as Python's ``str`` methods say."""
    cls = _ASCII[np.minimum(cp, 127)]
    wide = cp >= 128
    if wide.any():  # few distinct non-ASCII characters after normalisation: ask Python once each
        distinct, inverse = np.unique(cp[wide], return_inverse=True)
        table = np.array([(ALNUM if chr(c).isalnum() else 0) | (DECIMAL if chr(c).isdecimal() else 0)
                          for c in distinct.tolist()], dtype=np.uint8)
        cls[wide] = table[inverse]
    return cls


_MUL1 = np.uint64(1_000_003)
_MUL2 = np.uint64(0x100000001B3)  # FNV-1a's prime
_SEED2 = np.uint64(0xCBF29CE484222325)  # FNV-1a's offset basis
_MIX = np.uint64(0x9E3779B97F4A7C15)


@numba.njit(cache=True, boundscheck=False, inline="always")
def _hashes(cp, start, end):  # pragma: no cover - compiled
    h1 = np.uint64(0)
    h2 = _SEED2
    for i in range(start, end):
        c = np.uint64(cp[i])
        h1 = h1 * _MUL1 + c
        h2 = (h2 ^ c) * _MUL2
    h1 = h1 + np.uint64(end - start)
    h1 = h1 ^ (h1 >> np.uint64(31))
    h1 = h1 * _MIX
    h1 = h1 ^ (h1 >> np.uint64(29))
    return h1, h2


@numba.njit(cache=True, boundscheck=False)
def _unit_follows(cls, cp, e, n):  # pragma: no cover - compiled
    """The lookahead ``(?=[^\\W\\d_]{1,4}\\b)`` at ``e``: 1-4 letters, then no word character."""
    r = e
    while r < n and r - e < 5 and (cls[r] & ALNUM) and not (cls[r] & DECIMAL):
        r += 1
    if r == e or r - e > 4:
        return False
    return r == n or not ((cls[r] & ALNUM) or cp[r] == 95)  # 95 = "_", a word character for \b


@numba.njit(cache=True, boundscheck=False)
def scan(cp, cls, n_titles, split_units, max_tokens):  # pragma: no cover - compiled
    """Tokens of a block of normalised titles, each ended by "\\n".

    Returns ``(starts, ends, h1, h2, kept)``: code-point span and the two hashes of each
    token kept (the first ``max_tokens`` of its title), and (n_titles,) tokens kept per title.
    At each position, as ``re.findall`` tries the alternatives of ``text._TOKEN_SPLIT_OR_END``:
    a number glued to a unit, else a word (letters/digits, then ``[.,]digits`` groups).
    """
    n = len(cp)
    starts = np.empty(n, np.int64)
    ends = np.empty(n, np.int64)
    h1 = np.empty(n, np.uint64)
    h2 = np.empty(n, np.uint64)
    kept = np.zeros(n_titles, np.int64)
    m = 0  # tokens emitted
    t = 0  # title
    pos = 0  # token position inside the title
    p = 0
    while p < n:
        if cp[p] == 10:  # "\n": the title ends
            t += 1
            pos = 0
            p += 1
            continue
        k = cls[p]
        if not (k & ALNUM):
            p += 1
            continue
        e = -1
        # (?<![^\W_])\d+(?:[.,]\d+)?(?=[^\W\d_]{1,4}\b): "110cc" -> "110", "2,5kg" -> "2,5"
        if split_units and (k & DECIMAL) and (p == 0 or not (cls[p - 1] & ALNUM)):
            q = p
            while q < n and (cls[q] & DECIMAL):
                q += 1
            if q + 1 < n and (cp[q] == 46 or cp[q] == 44) and (cls[q + 1] & DECIMAL):  # "." or ","
                r = q + 1
                while r < n and (cls[r] & DECIMAL):
                    r += 1
                if _unit_follows(cls, cp, r, n):
                    e = r
                # without the decimal group the lookahead would meet "." or ",": no match
            elif _unit_follows(cls, cp, q, n):
                e = q
        if e < 0:  # [^\W_]+(?:[.,]\d+)*
            q = p + 1
            while q < n and (cls[q] & ALNUM):
                q += 1
            while q + 1 < n and (cp[q] == 46 or cp[q] == 44) and (cls[q + 1] & DECIMAL):
                q += 2
                while q < n and (cls[q] & DECIMAL):
                    q += 1
            e = q
        if pos < max_tokens:
            starts[m] = p
            ends[m] = e
            h1[m], h2[m] = _hashes(cp, p, e)
            kept[t] += 1
            m += 1
        pos += 1
        p = e
    return starts[:m], ends[:m], h1[:m], h2[:m], kept


@numba.njit(cache=True, boundscheck=False)
def hash_spans(cp, starts, ends):  # pragma: no cover - compiled
    """The two hashes ``scan`` gives, of arbitrary spans (e.g. language tokens)."""
    h1 = np.empty(len(starts), np.uint64)
    h2 = np.empty(len(starts), np.uint64)
    for i in range(len(starts)):
        h1[i], h2[i] = _hashes(cp, starts[i], ends[i])
    return h1, h2
