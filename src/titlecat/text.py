"""Title normalisation, tokenization and character n-grams.

Titles are short (≈10 words), written by sellers, full of brands, model codes,
sizes and units.  The choices here follow from that:

* Unicode compatibility normalisation (full-width digits, ligatures), lower case.
* Optional accent folding ("cámara" == "camara"): sellers drop accents at random.
  NFKD then one regular expression deleting combining marks: C-level passes.
* Tokens are runs of letters/digits; decimals stay whole ("1.8", "2,5").
* A number glued to a short unit is split ("110cc" -> "110", "cc"; "1700w" ->
  "1700", "w"), so "cc" and "w" get one vector whatever the number.  Model codes
  whose letters come first ("sx3040") stay whole.
* Character n-grams of "<word>" (fastText style) give rare brands and codes a
  vector; they are hashed with a fixed polynomial hash, stable across processes
  (Python's ``hash`` is salted per process and would break a saved model).
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np

_WORD = r"[^\W_]+(?:[.,]\d+)*"
# a number at the start of an alphanumeric run, glued to a 1-4 letter unit that ends the run:
# "110cc" -> "110" (then "cc" is the next token), "2,5kg" -> "2,5", "1700w" -> "1700".  Matched
# as a token of its own, so splitting units costs no extra pass over the text (a separate
# re.sub pass was ~20% of tokenizing).
_NUMBER_BEFORE_UNIT = r"(?<![^\W_])\d+(?:[.,]\d+)?(?=[^\W\d_]{1,4}\b)"
_TOKEN = re.compile(_WORD)
_TOKEN_SPLIT = re.compile(f"{_NUMBER_BEFORE_UNIT}|{_WORD}")
# tokens of many titles at once: a "\n" token marks the end of each title
_TOKEN_OR_END = re.compile(f"{_WORD}|\n")
_TOKEN_SPLIT_OR_END = re.compile(f"{_NUMBER_BEFORE_UNIT}|{_WORD}|\n")
_COMBINING = re.compile(r"[\u0300-\u036f]+")


def normalize(title: str, fold_accents: bool = True) -> str:
    """Unicode-normalised, lower-cased (and optionally accent-folded) title.

    Folding is NFKD followed by deleting the combining marks, both C-level passes:
    "Cámara Ñandú" -> "camara nandu".
    """
    if not title.isascii():
        if fold_accents:
            title = _COMBINING.sub("", unicodedata.normalize("NFKD", title))
        else:
            title = unicodedata.normalize("NFKC", title)
    return title.lower()


def tokenize(title: str, fold_accents: bool = True, split_units: bool = True, max_tokens: int | None = None) -> list[str]:
    """Tokens of a raw title: ``tokenize("Moto 110cc Cámara")`` -> ``["moto", "110", "cc", "camara"]``."""
    tokens = (_TOKEN_SPLIT if split_units else _TOKEN).findall(normalize(title, fold_accents))
    return tokens[:max_tokens] if max_tokens is not None else tokens


def tokenize_many(titles: list[str], fold_accents: bool = True, split_units: bool = True) -> list[str]:
    """Tokens of many titles in one pass, each title's tokens followed by ``"\n"``.

    Same tokens as ``tokenize`` title by title, but the normalisation and the regular
    expressions run once over the joined block (C speed instead of a Python loop).
    """
    if not titles:
        return []
    return (_TOKEN_SPLIT_OR_END if split_units else _TOKEN_OR_END).findall(normalized_block(titles, fold_accents))


def normalized_block(titles: list[str], fold_accents: bool = True) -> str:
    """The titles normalised and joined into one string, each ended by ``"\n"`` (a newline
    inside a title becomes a space): what ``tokenize_many`` and the compiled scan read."""
    block = "\n".join(t.replace("\n", " ") if "\n" in t else t for t in titles) + "\n"
    return normalize(block, fold_accents)


def char_ngrams(word: str, nmin: int, nmax: int) -> list[str]:
    """fastText-style n-grams of ``<word>``; the whole ``<word>`` is left to the word vector."""
    if nmax <= 0:
        return []
    w = f"<{word}>"
    grams = []
    for n in range(nmin, nmax + 1):
        for i in range(len(w) - n + 1):
            g = w[i : i + n]
            if g != w:
                grams.append(g)
    return grams


_MUL = np.uint64(1_000_003)
_MIX = np.uint64(0x9E3779B97F4A7C15)


def ngram_table(words: list[str], nmin: int, nmax: int, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashed n-gram ids of many words at once: ``(offsets, ids)``.

    ``ids[offsets[i]:offsets[i+1]]`` are the ids in ``[0, buckets)`` of
    ``char_ngrams(words[i], nmin, nmax)`` (same order within each n).  The hash is a
    polynomial over Unicode code points with a final mix, computed with numpy over
    all words together, so it is fast and identical in every process and machine.
    """
    offsets = np.zeros(len(words) + 1, dtype=np.int64)
    if nmax <= 0 or not words:
        return offsets, np.empty(0, dtype=np.int64)
    wrapped = "<" + "><".join(words) + ">"  # "<w1><w2>...": one C-level join, no string per word
    cp = np.frombuffer(wrapped.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    lens = np.fromiter(map(len, words), dtype=np.int64, count=len(words)) + 2  # "<" word ">"
    starts = np.cumsum(lens) - lens
    owner = np.repeat(np.arange(len(words)), lens)  # word of each code point
    rel = np.arange(len(cp)) - starts[owner]  # position inside "<word>"
    owners, ids = [], []
    for n in range(nmin, nmax + 1):
        m = len(cp) - n + 1
        if m <= 0:
            break
        h = np.zeros(m, dtype=np.uint64)
        for k in range(n):
            h = h * _MUL + cp[k : k + m]
        L = lens[owner[:m]]
        valid = (rel[:m] + n <= L) & ~((rel[:m] == 0) & (L == n))  # inside the word, not the whole "<word>"
        h = _mix(h[valid])
        owners.append(owner[:m][valid])
        ids.append((h % np.uint64(buckets)).astype(np.int64))
    if not owners:  # every "<word>" is shorter than nmin (or nmin > nmax): no n-grams
        return offsets, np.empty(0, dtype=np.int64)
    owners_all = np.concatenate(owners)
    order = np.argsort(owners_all, kind="stable")  # group by word, n-gram order kept
    np.cumsum(np.bincount(owners_all, minlength=len(words)), out=offsets[1:])
    return offsets, np.concatenate(ids)[order]


def word_hashes(words: list[str]) -> np.ndarray:
    """A stable 64-bit hash of each word (as int64), for hashing word bigrams."""
    if not words:
        return np.empty(0, dtype=np.int64)
    cp = np.frombuffer("".join(words).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    lens = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    starts = np.cumsum(lens) - lens
    owner = np.repeat(np.arange(len(words)), lens)
    expo = (lens[owner] - 1 - (np.arange(len(cp)) - starts[owner])).astype(np.int64)  # power of _MUL per char
    n = max(1, int(lens.max()))
    powers = np.concatenate([[np.uint64(1)], np.cumprod(np.full(n - 1, _MUL, dtype=np.uint64))]).astype(np.uint64)
    h = np.zeros(len(words), dtype=np.uint64)
    nonempty = lens > 0
    h[nonempty] = np.add.reduceat(cp * powers[expo], starts[nonempty])
    h = _mix(h + lens.astype(np.uint64))
    return h.view(np.int64)


def bigram_buckets(left: np.ndarray, right: np.ndarray, buckets: int) -> np.ndarray:
    """Bucket ids in ``[0, buckets)`` of word pairs, from their ``word_hashes``."""
    h = _mix(left.view(np.uint64) * _MUL + _mix(right.view(np.uint64)))
    return (h % np.uint64(buckets)).astype(np.int64)


def sequence_hashes(token_hashes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """A stable 64-bit hash (as int64) of each sequence of tokens: ``token_hashes`` (their
    ``word_hashes``, sequences concatenated), sequence i being ``offsets[i]:offsets[i + 1]``.
    Order matters; equal token sequences hash alike in every process."""
    lengths = np.diff(offsets).astype(np.int64)
    if not len(token_hashes):
        return _mix(lengths.astype(np.uint64) * _MIX).view(np.int64)
    pos = np.arange(len(token_hashes)) - np.repeat(offsets[:-1], lengths)  # position inside its sequence
    powers = np.concatenate([[np.uint64(1)], np.cumprod(np.full(max(1, int(lengths.max())) - 1, _MUL,
                                                                 dtype=np.uint64))]).astype(np.uint64)
    terms = _mix(token_hashes.view(np.uint64)) * powers[pos]
    h = np.zeros(len(lengths), dtype=np.uint64)
    nonempty = lengths > 0
    h[nonempty] = np.add.reduceat(terms, offsets[:-1][nonempty])
    return _mix(h + lengths.astype(np.uint64) * _MIX).view(np.int64)


def _mix(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(31))
    h = h * _MIX
    return h ^ (h >> np.uint64(29))
