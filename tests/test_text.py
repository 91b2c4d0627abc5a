"""titlecat.text: normalisation, tokenization, character n-grams and their hash.

(The compiled scan that ``titlecat.tokenizer`` uses on large inputs is tested in ``test_tokenizer.py``,
with the titles and strategies defined here.)
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from titlecat.text import char_ngrams, ngram_table, normalize, tokenize, tokenize_many

# ---- normalize ---------------------------------------------------------------------


def test_normalize_lowercases():
    assert normalize("Zapatillas NIKE Air") == "zapatillas nike air"


def test_normalize_folds_accents_by_default():
    assert normalize("Cámara Ñandú Pingüino") == "camara nandu pinguino"


def test_normalize_keeps_accents_when_not_folding():
    assert normalize("Cámara Ñandú", fold_accents=False) == "cámara ñandú"


def test_normalize_composes_decomposed_accents_when_not_folding():
    # "a" + COMBINING ACUTE ACCENT, as some keyboards/OSes send it
    assert normalize("Ca\u0301mara", fold_accents=False) == "cámara"
    assert normalize("Ca\u0301mara", fold_accents=True) == "camara"


@pytest.mark.parametrize("fold", [True, False])
def test_normalize_compatibility_forms(fold):
    # full-width letters and digits, and the "fi" ligature
    assert normalize("ＡＢＣ１２３", fold_accents=fold) == "abc123"
    assert normalize("\ufb01ltro", fold_accents=fold) == "filtro"


def test_normalize_ascii_is_only_lowercased():
    s = "Moto 110cc, 2.5kg / x_y!"
    assert normalize(s) == s.lower()


# ---- tokenize ----------------------------------------------------------------------


def test_tokenize_docstring_example():
    assert tokenize("Moto 110cc Cámara") == ["moto", "110", "cc", "camara"]


@pytest.mark.parametrize(
    "title, tokens",
    [
        ("Moto 110cc", ["moto", "110", "cc"]),
        ("Licuadora 1700w Oster", ["licuadora", "1700", "w", "oster"]),
        ("Bolsa Cemento 2,5kg", ["bolsa", "cemento", "2,5", "kg"]),
        ("Motor 1.8 Turbo", ["motor", "1.8", "turbo"]),  # a decimal stays whole
        ("Precio 1.234.567", ["precio", "1.234.567"]),
        ("Excitador Behringer Sx3040", ["excitador", "behringer", "sx3040"]),  # letters first: a model code
        ("Disco 500GB", ["disco", "500", "gb"]),
        ("Lente 18-55mm", ["lente", "18", "55", "mm"]),
    ],
)
def test_tokenize_units_decimals_and_codes(title, tokens):
    assert tokenize(title) == tokens


def test_tokenize_split_units_off_keeps_number_and_unit_together():
    assert tokenize("Moto 110cc Licuadora 1700w", split_units=False) == ["moto", "110cc", "licuadora", "1700w"]


def test_tokenize_does_not_split_inside_a_longer_code():
    # "3040gb" follows letters ("sx"), so it is part of one code, not a number + unit
    assert tokenize("sx3040gb") == ["sx3040gb"]
    # five letters are not a unit
    assert tokenize("100gramos") == ["100gramos"]


def test_tokenize_underscores_and_punctuation_separate_tokens():
    assert tokenize("foo_bar-baz/qux (nuevo)!!! ¡oferta! ¿envío?") == [
        "foo", "bar", "baz", "qux", "nuevo", "oferta", "envio",
    ]  # fmt: skip


def test_tokenize_trailing_dot_or_comma_is_not_a_decimal():
    assert tokenize("Talle 42. Color 3, negro") == ["talle", "42", "color", "3", "negro"]


def test_tokenize_accents_kept_when_not_folding():
    assert tokenize("Cámara Réflex", fold_accents=False) == ["cámara", "réflex"]


def test_tokenize_full_width():
    assert tokenize("Ｍｏｔｏ １１０ｃｃ") == ["moto", "110", "cc"]


@pytest.mark.parametrize("title", ["", "   ", "🙂🙂", "!!! --- ???", "___"])
def test_tokenize_without_words_is_empty(title):
    assert tokenize(title) == []


def test_tokenize_max_tokens():
    title = "uno dos tres cuatro cinco"
    assert tokenize(title, max_tokens=2) == ["uno", "dos"]
    assert tokenize(title, max_tokens=100) == title.split()
    assert tokenize(title, max_tokens=None) == title.split()


def test_tokenize_very_long_title():
    title = "casco " * 2000
    assert tokenize(title) == ["casco"] * 2000
    assert tokenize(title, max_tokens=48) == ["casco"] * 48


# ---- tokenize_many -----------------------------------------------------------------


def _split_titles(tokens: list[str]) -> list[list[str]]:
    """The flat output of ``tokenize_many`` back into one token list per title."""
    out, cur = [], []
    for t in tokens:
        if t == "\n":
            out.append(cur)
            cur = []
        else:
            cur.append(t)
    assert cur == [], "tokenize_many output must end with the end-of-title marker"
    return out


TRICKY_TITLES = [
    "Zapatillas Nike Air Max 90 Talle 42",
    "Moto 110cc\nCon Papeles",  # a newline inside a title is only a separator
    "línea\r\nnueva\n\n",
    "",
    "🙂🙂",
    "   ",
    "1700w",
    "Cámara Ñandú",
    "ＡＢＣ１２３",
    "2,5kg",
    "\n",
    "fin 110",  # followed by a title starting with a unit-like word
    "cc",
]


@pytest.mark.parametrize("fold", [True, False])
@pytest.mark.parametrize("split_units", [True, False])
def test_tokenize_many_equals_tokenize_per_title(fold, split_units):
    got = _split_titles(tokenize_many(TRICKY_TITLES, fold, split_units))
    assert got == [tokenize(t, fold, split_units) for t in TRICKY_TITLES]


def test_tokenize_many_one_marker_per_title():
    tokens = tokenize_many(["a b", "", "c"])
    assert tokens == ["a", "b", "\n", "\n", "c", "\n"]


def test_tokenize_many_of_no_titles_is_empty():
    assert tokenize_many([]) == []


# ---- character n-grams --------------------------------------------------------------


def test_char_ngrams_of_a_word():
    assert char_ngrams("moto", 3, 4) == ["<mo", "mot", "oto", "to>", "<mot", "moto", "oto>"]


def test_char_ngrams_exclude_the_whole_wrapped_word():
    # "<ab>" itself is the word vector's job, not an n-gram
    assert char_ngrams("ab", 3, 4) == ["<ab", "ab>"]
    assert char_ngrams("a", 3, 5) == []


def test_char_ngrams_disabled():
    assert char_ngrams("moto", 3, 0) == []


def _reference_ids(word: str, nmin: int, nmax: int, buckets: int) -> list[int]:
    """The documented hash, one n-gram at a time in pure Python."""
    mask = (1 << 64) - 1
    ids = []
    for g in char_ngrams(word, nmin, nmax):
        h = 0
        for ch in g:
            h = (h * 1_000_003 + ord(ch)) & mask
        h ^= h >> 31
        h = (h * 0x9E3779B97F4A7C15) & mask
        h ^= h >> 29
        ids.append(h % buckets)
    return ids


WORDS = ["moto", "110", "cc", "cámara", "sx3040", "a", "zapatillas", "ñandú", "2,5"]


def test_ngram_table_counts_and_range():
    offsets, ids = ngram_table(WORDS, 3, 5, 1000)
    assert offsets.dtype == np.int64 and ids.dtype == np.int64
    assert offsets[0] == 0 and offsets[-1] == len(ids)
    assert np.diff(offsets).tolist() == [len(char_ngrams(w, 3, 5)) for w in WORDS]
    assert ids.min() >= 0 and ids.max() < 1000


def test_ngram_table_matches_reference_hash_in_order():
    offsets, ids = ngram_table(WORDS, 2, 6, 200_000)
    for i, w in enumerate(WORDS):
        assert ids[offsets[i] : offsets[i + 1]].tolist() == _reference_ids(w, 2, 6, 200_000), w


def test_ngram_table_is_deterministic_and_independent_of_neighbours():
    a = ngram_table(WORDS, 3, 5, 200_000)
    b = ngram_table(WORDS, 3, 5, 200_000)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    offsets, ids = a
    for i, w in enumerate(WORDS):
        alone = ngram_table([w], 3, 5, 200_000)[1]
        np.testing.assert_array_equal(ids[offsets[i] : offsets[i + 1]], alone)


def test_shared_ngrams_share_ids():
    (o, ids) = ngram_table(["moto", "motor"], 3, 3, 200_000)
    # "<mo", "mot", "oto" are common to both words
    assert ids[o[0] : o[0] + 3].tolist() == ids[o[1] : o[1] + 3].tolist()


def test_ngram_ids_are_pinned():
    # Saved models store n-gram embeddings by these ids: if this test fails, the hash
    # changed and every saved model would silently read the wrong rows.
    assert ngram_table(["abc"], 3, 5, 200_000)[1].tolist() == [26669, 174400, 24625, 133964, 157157]
    assert ngram_table(["moto"], 3, 3, 200_000)[1].tolist() == _reference_ids("moto", 3, 3, 200_000)
    offsets, ids = ngram_table(["cámara"], 3, 5, 200_000)
    assert ids[:3].tolist() == [32309, 121722, 139398]
    full = _reference_ids("abc", 3, 3, 1 << 64)
    assert ngram_table(["abc"], 3, 3, 1000)[1].tolist() == [h % 1000 for h in full]


def test_ngram_table_disabled_or_empty():
    offsets, ids = ngram_table(["moto", "cc"], 3, 0, 100)
    assert offsets.tolist() == [0, 0, 0] and ids.size == 0
    offsets, ids = ngram_table([], 3, 5, 100)
    assert offsets.tolist() == [0] and ids.size == 0


def test_ngram_table_words_shorter_than_every_ngram():
    # "<a>" has 3 characters: no 4- or 5-gram exists (e.g. predicting the title "a")
    offsets, ids = ngram_table(["a"], 4, 5, 100)
    assert offsets.tolist() == [0, 0] and ids.size == 0
    offsets, ids = ngram_table(["a", "bb"], 4, 5, 100)
    assert np.diff(offsets).tolist() == [0, len(char_ngrams("bb", 4, 5))]


# ---- properties --------------------------------------------------------------------

# arbitrary text, biased towards the characters titles are made of
_title_chars = st.one_of(
    st.characters(),
    st.sampled_from(list("aeiouAEIOUáéíóúÁÉñÑüÜçãõ0123456789.,_-/ \n\t\r") + ["cc", "kg", "W", "110", "２", "ﬁ"]),
)
titles = st.lists(_title_chars, max_size=40).map("".join)
PROPS = settings(max_examples=150, deadline=None)


@PROPS
@given(title=titles, fold=st.booleans(), split_units=st.booleans())
def test_tokens_are_nonempty_lowercase_without_whitespace(title, fold, split_units):
    tokens = tokenize(title, fold, split_units)
    for t in tokens:
        assert isinstance(t, str) and t
        assert t == t.lower()
        assert not any(ch.isspace() for ch in t)


@PROPS
@given(title=st.text(), fold=st.booleans())
def test_tokenize_never_raises(title, fold):
    tokenize(title, fold)


@PROPS
@given(ts=st.lists(titles, max_size=8), fold=st.booleans(), split_units=st.booleans())
def test_tokenize_many_equals_tokenize_property(ts, fold, split_units):
    assert _split_titles(tokenize_many(ts, fold, split_units)) == [tokenize(t, fold, split_units) for t in ts]


@PROPS
@given(words=st.lists(st.text(min_size=1, max_size=12), max_size=8), nmin=st.integers(1, 4), extra=st.integers(0, 3))
def test_ngram_table_counts_property(words, nmin, extra):
    nmax = nmin + extra
    offsets, ids = ngram_table(words, nmin, nmax, 97)
    assert np.diff(offsets).tolist() == [len(char_ngrams(w, nmin, nmax)) for w in words]
    assert ((ids >= 0) & (ids < 97)).all()


def _split_units_two_passes(title: str, fold: bool) -> list[str]:
    """The definition of unit splitting: insert a space between a number that starts an
    alphanumeric run and the 1-4 letter unit that ends it, then take the tokens.
    ``tokenize`` does it in one pass; this is the reference it must agree with."""
    import re

    spaced = re.sub(r"(\d(?<![^\W_]\d)\d*(?:[.,]\d+)?)([^\W\d_]{1,4})\b", r"\1 \2", normalize(title, fold))
    return re.findall(r"[^\W_]+(?:[.,]\d+)*", spaced)


_unit_chars = st.sampled_from(list("0123456789.,_- ab") + ["cc", "kg", "w", "gb", "110", "2,5", "1.000", "sx"])


@settings(max_examples=400, deadline=None)
@given(title=st.one_of(titles, st.lists(_unit_chars, max_size=25).map("".join)), fold=st.booleans())
def test_one_pass_unit_split_equals_the_two_pass_definition(title, fold):
    assert tokenize(title, fold, split_units=True) == _split_units_two_passes(title, fold)
