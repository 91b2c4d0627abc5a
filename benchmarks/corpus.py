"""A generated corpus that behaves like the real titles, at any size: for scale benchmarks.

    python benchmarks/corpus.py --n 4895280 --format course --out /tmp/meli-4.9m
    python benchmarks/corpus.py --n 20000000 --format challenge --out /tmp/meli-20m

The full course and challenge files cannot be downloaded on these machines, so their scale is
shown on titles generated from the real ones in ``../shared/data/meli2019-es``:

* **per-category recombination**: a title starts from a real title of its category (its
  length), and each word is kept or replaced by a word drawn from the category's own words
  (their real frequencies, numbers and units included);
* **Heaps' law**: real titles bring new words at a rate that falls with the corpus size:
  distinct words ≈ K·n^β.  K and β are measured on the shared titles (printed), and new words
  -- model codes and made-up words built from the category's character trigrams, in the
  shares the real rare words show -- are injected whenever the generated corpus falls behind
  K·n^β, so the distinct-word count follows the real curve far past the real data's size;
* **course format** (``--format course``): ``spanish.train.jsonl.gz`` and
  ``spanish.validation.jsonl.gz`` (``--validation-share`` of ``--n``, the course's 1.22 M to
  4.9 M by default), 632 categories, 7.9% ``reliable`` rows as in the course's train file;
* **challenge format** (``--format challenge``): ``train.csv`` with
  ``title,label_quality,language,category``, 1,588 categories (the 632 real ones and 956
  generated from them, each with a vocabulary shift of its own), half the rows Portuguese-looking
  (every word through Spanish -> Portuguese spelling rules: a vocabulary of its own; brands and
  codes unchanged), 5.9% ``reliable`` rows as in the challenge, and label noise in the
  ``unreliable`` rows (``--noise``, a random other category).

The generated titles recombine *every* shared title, the test file's too: a model trained on
them must never be scored on ``spanish.test.jsonl.gz`` (it would score ~1.0); score it on
generated titles of another ``--seed``.  The corpus is for measuring scale, not accuracy.

Deterministic: the same arguments give the same bytes.  Generates about 20,000 titles/s on one core.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "meli2019-es"
REAL_CATEGORIES = 632
CHALLENGE_CATEGORIES = 1588
COURSE_RELIABLE = 387_237 / 4_895_280  # the course's Spanish train file
CHALLENGE_RELIABLE = 1_184_245 / 20_000_000
COURSE_VALIDATION = 1_223_820 / 4_895_280
KEEP = 0.5  # share of a template's words kept as they are (the rest: the category's words)
BLOCK = 20_000  # titles generated at a time
HEAPS_FROM = 1000  # the fit starts there: below it, the recombined real words alone set the pace
CODE_LETTERS = "abcdefghjklmnprstvwxz"

# Spanish -> Portuguese spelling, applied to word endings and letter groups (folded accents)
PT_ENDINGS = (("ciones", "coes"), ("cion", "cao"), ("dades", "dades"), ("dad", "dade"), ("eros", "eiros"),
              ("ero", "eiro"), ("illas", "ilhas"), ("illa", "ilha"), ("ijo", "ilho"), ("anos", "aos"),
              ("ano", "ao"), ("able", "avel"), ("ible", "ivel"), ("mente", "mente"), ("ez", "es"))
PT_GROUPS = (("ll", "lh"), ("ñ", "nh"), ("nn", "nh"), ("ue", "o"), ("ie", "e"), ("j", "g"), ("z", "c"),
             ("y", "i"))


def real_titles(data: Path) -> tuple[list[list[str]], list[str]]:
    """The shared titles as titlecat tokenizes them, and their categories (train then test)."""
    from titlecat.text import tokenize

    tokens, cats = [], []
    for name in ("spanish.train.jsonl.gz", "spanish.test.jsonl.gz"):
        with gzip.open(data / name, "rt", encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                tokens.append(tokenize(row["title"]))
                cats.append(row["category"])
    return tokens, cats


def heaps_fit(titles: list[list[str]], seed: int = 0) -> tuple[float, float]:
    """``(K, beta)`` of distinct words ≈ K·n^beta, fitted (least squares, log-log) on the titles
    in a random order, at 20 sizes from 1,000 titles to all of them."""
    order = np.random.default_rng(seed).permutation(len(titles))
    marks = set(np.unique(np.geomspace(1000, len(titles), 20).astype(int)).tolist())
    seen: set[str] = set()
    ns, ds = [], []
    for i, j in enumerate(order, 1):
        seen.update(titles[j])
        if i in marks:
            ns.append(i)
            ds.append(len(seen))
    beta, log_k = np.polyfit(np.log(ns), np.log(ds), 1)
    return float(math.exp(log_k)), float(beta)


def portuguese(word: str) -> str:
    """A Portuguese-looking spelling of a Spanish word (brands and codes, with digits, unchanged)."""
    if any(c.isdigit() for c in word) or len(word) < 4:
        return word
    for es, pt in PT_ENDINGS:
        if word.endswith(es):
            word = word[: -len(es)] + pt
            break
    for es, pt in PT_GROUPS:
        word = word.replace(es, pt)
    return word


class Generator:
    """Titles of the real categories' words, with new words at the rate Heaps' law says."""

    def __init__(self, titles: list[list[str]], cats: list[str], k: float, beta: float, seed: int,
                 n_categories: int = REAL_CATEGORIES):
        self.rng = np.random.default_rng(seed)
        self.k, self.beta = k, beta
        names = sorted(set(cats))
        index = {c: i for i, c in enumerate(names)}
        self.templates: list[list[list[str]]] = [[] for _ in names]  # per real category: its titles
        self.words: list[list[str]] = [[] for _ in names]  # per real category: its tokens, with repeats
        # titles per real category: the share of the rows each category (and its derivatives) gets
        self.real_counts = np.bincount([index[c] for c in cats], minlength=len(names))
        for toks, c in zip(titles, cats):
            if toks:
                self.templates[index[c]].append(toks)
                self.words[index[c]].extend(toks)
        # categories beyond the real ones: a real one's titles, with a stable share of its words shifted
        self.categories = names + [f"{names[i % len(names)]}_{i // len(names) + 1}"
                                   for i in range(len(names), n_categories)]
        self.base = [i % len(names) for i in range(n_categories)]
        self.shift = ["" if i < len(names) else "bcdfgklmnprstvz"[(i // len(names)) % 15] + "ax"[i % 2]
                      for i in range(n_categories)]
        trigrams = [w[i:i + 3] for ws in self.words for w in set(ws) if w.isalpha() for i in range(len(w) - 2)]
        self.trigrams = sorted(set(trigrams))
        self.code_share = self._hapax_share_with_digits(titles)  # new words that are model codes
        self.seen: set[str] = set()
        self.n = 0
        self.new_words = 0

    @staticmethod
    def _hapax_share_with_digits(titles: list[list[str]]) -> float:
        counts: dict[str, int] = {}
        for toks in titles:
            for w in toks:
                counts[w] = counts.get(w, 0) + 1
        hapax = [w for w, c in counts.items() if c == 1]
        return sum(any(ch.isdigit() for ch in w) for w in hapax) / max(1, len(hapax))

    def _new_word(self) -> str:
        rng = self.rng
        r = rng.random(4)
        if r[0] < self.code_share:  # a model code: 1-3 letters, digits, sometimes a letter
            letters = "".join(CODE_LETTERS[i] for i in rng.integers(len(CODE_LETTERS), size=1 + int(r[1] * 3)))
            return letters + str(rng.integers(10, 100_000)) + ("" if r[2] < 0.6 else CODE_LETTERS[int(r[3] * 8)])
        return "".join(self.trigrams[p] for p in rng.integers(len(self.trigrams), size=2 + int(r[1] * 2)))

    def title(self, category: int) -> list[str]:
        """One title of ``category`` (an index into ``self.categories``)."""
        rng, base = self.rng, self.base[category]
        template = self.templates[base][rng.integers(len(self.templates[base]))]
        pool = self.words[base]
        keep = rng.random(len(template)) < KEEP
        picks = rng.integers(len(pool), size=len(template))
        words = [w if kept else pool[p] for w, kept, p in zip(template, keep.tolist(), picks.tolist())]
        shift = self.shift[category]
        if shift:  # a generated category: a stable half of its base's words carry its own ending
            words = [w + shift if w.isalpha() and hash_share(w, category) < 0.5 else w for w in words]
        self.seen.update(words)
        self.n += 1
        # behind Heaps' curve (fitted from HEAPS_FROM titles on): new words in place of old ones,
        # as many as the curve asks for, at most half a title's words
        behind = self.k * self.n ** self.beta - len(self.seen) if self.n >= HEAPS_FROM else 0.0
        if behind > 0:
            n_new = min((len(words) + 1) // 2, int(behind) + (rng.random() < behind % 1))
            for pos in rng.choice(len(words), n_new, replace=False).tolist():
                w = self._new_word()
                words[pos] = w
                if w not in self.seen:
                    self.seen.add(w)
                    self.new_words += 1
        return words


def hash_share(word: str, salt: int) -> float:
    """A stable number in [0, 1) for (word, salt) (Python's hash() changes between processes)."""
    h = 2166136261 ^ salt
    for ch in word:
        h = ((h ^ ord(ch)) * 16777619) & 0xFFFFFFFF
    return h / 2**32


def generate(n: int, fmt: str, out: Path, seed: int = 0, data: Path = SHARED,
             validation_share: float = COURSE_VALIDATION, noise: float = 0.05, quiet: bool = False) -> dict:
    """Write the corpus of ``n`` training titles in ``fmt`` into ``out``; returns its facts."""
    t0 = time.perf_counter()
    titles, cats = real_titles(data)
    k, beta = heaps_fit(titles, seed)
    if not quiet:
        print(f"Heaps' law on the {len(titles):,} shared titles: distinct words ≈ {k:.1f}·n^{beta:.3f} "
              f"(at {n:,} titles: {k * n ** beta:,.0f})", flush=True)
    challenge = fmt == "challenge"
    gen = Generator(titles, cats, k, beta, seed, CHALLENGE_CATEGORIES if challenge else REAL_CATEGORIES)
    # categories in their real proportions; a generated one takes its base category's share
    weights = gen.real_counts[gen.base].astype(np.float64)
    weights /= weights.sum()
    rng = np.random.default_rng(seed + 1)  # row attributes apart from the words, so they never shift
    out.mkdir(parents=True, exist_ok=True)
    files = {"train": n} if challenge else {"train": n, "validation": int(round(n * validation_share))}
    facts = {"format": fmt, "n": n, "seed": seed, "heaps_k": k, "heaps_beta": beta, "files": {}}
    for split, rows in files.items():
        path = out / ("train.csv" if challenge else f"spanish.{split}.jsonl.gz")
        reliable_share = CHALLENGE_RELIABLE if challenge else COURSE_RELIABLE
        with (open(path, "w", encoding="utf-8", newline="") if challenge
              else io.TextIOWrapper(gzip.GzipFile(path, "wb", compresslevel=1, mtime=0), encoding="utf-8")) as f:
            writer = csv.writer(f) if challenge else None
            if writer:
                writer.writerow(["title", "label_quality", "language", "category"])
            for start in range(0, rows, BLOCK):
                m = min(BLOCK, rows - start)
                category = rng.choice(len(weights), m, p=weights)
                reliable = rng.random(m) < reliable_share
                lang_pt = (rng.random(m) < 0.5) if challenge else np.zeros(m, dtype=bool)
                noisy = ~reliable & (rng.random(m) < noise)
                label = np.where(noisy, rng.integers(0, len(weights), m), category)
                for j in range(m):
                    words = gen.title(int(category[j]))
                    if lang_pt[j]:
                        words = [portuguese(w) for w in words]
                    title = " ".join(words).title()
                    quality = "reliable" if reliable[j] else "unreliable"
                    language = "portuguese" if lang_pt[j] else "spanish"
                    cat = gen.categories[int(label[j])]
                    if writer:
                        writer.writerow([title, quality, language, cat])
                    else:
                        f.write(json.dumps({"title": title, "category": cat, "language": language,
                                            "label_quality": quality, "split": split}, ensure_ascii=False) + "\n")
        facts["files"][path.name] = rows
    facts.update({"distinct_words": len(gen.seen), "heaps_prediction": k * gen.n ** beta,
                  "new_words": gen.new_words, "categories": len(gen.categories), "seconds": time.perf_counter() - t0})
    if not quiet:
        print(f"{gen.n:,} titles, {len(gen.seen):,} distinct words (Heaps: {facts['heaps_prediction']:,.0f}), "
              f"{len(gen.categories)} categories, {facts['seconds']:.0f} s -> {out}", flush=True)
    (out / "corpus.json").write_text(json.dumps(facts, indent=2) + "\n")
    return facts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, required=True, help="training titles to generate")
    ap.add_argument("--format", choices=["course", "challenge"], default="course")
    ap.add_argument("--out", type=Path, required=True, help="folder for the files (and corpus.json, their facts)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=SHARED, help="the real titles (meli2019-es)")
    ap.add_argument("--validation-share", type=float, default=COURSE_VALIDATION,
                    help="course format: validation titles per training title (default: the course's)")
    ap.add_argument("--noise", type=float, default=0.05, help="share of unreliable rows given a random category")
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error("--n: at least 1")
    generate(args.n, args.format, args.out, args.seed, args.data, args.validation_share, args.noise)
    return 0


if __name__ == "__main__":
    sys.exit(main())
