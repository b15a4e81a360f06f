"""IterIT's selection core (docs/algorithms.md §2; Jia et al., arXiv 2412.17365): plain numpy/scipy.

Score of a candidate x: S_COM(x) · D(x). S_COM is the IFD of x under the model being trained
(computed elsewhere and passed in as an array). Only samples with a finite S_COM < 1 are
candidates (the released code's ``score < 1.0``; note that the ``ifd`` baseline's
``valid_ifd`` keeps IFD == 1, IterIT does not). D(x) is the sum of x's row of a TF-IDF matrix
fitted on the candidates' responses.

Greedy selection of n samples (:func:`greedy_select`, :class:`GreedyDiversity`)::

    repeat n times:
        p = argmax over unpicked candidates of S_COM(i) · D(i)
        for every column (n-gram) j present in p's response: X[:, j] *= λ     (all rows)
        X[p, :] = 0

A column hit by k picks carries λ^k. The row sums are kept up to date incrementally instead of
being recomputed: the matrix is never modified; each column carries its current scale s_j
(1, λ, λ², ...) and, when column j is decayed, every unpicked row i loses (1 − λ)·s_j·X0[i, j],
the value it had *before* this decay (read from the CSC slice of column j). A column whose scale
falls below ``min_scale`` (1e-16; after 17 decays at λ = 0.1) is retired: the rows lose its whole
remaining value (< 1e-16 · X0[i, j], below float64 resolution next to any undecayed entry) and it
is never visited again; a row whose columns are all retired has D exactly 0 (no rounding residue;
with λ = 0 this is every fully covered row, as in the brute-force recomputation).

Cost of a pick: one vectorised O(N) argmax scan plus O(Σ nnz(column j) over p's live columns).
Since a column is visited at most 1 + log(min_scale)/log(λ) times (17 for λ = 0.1), all updates
of a whole selection together cost O(17 · nnz), whatever n. The released code recomputes
``tfidf.sum(axis=1)`` (O(nnz)) on every pick and loops in Python over p's columns, with an item
assignment into a CSC matrix for each: O(n · nnz) plus Python loops.

Ties (equal S_COM · D) go to the lowest ``tie_rank``; by default the row position, which is the
position in the window, i.e. the previous ranking (the released code's ``np.argmax`` over the
dataset in its current order; at epoch 0 the pool order). Pass ``tie_rank`` (e.g. the rank of
each sample id) to break ties by id instead. Picked rows are never picked again, even when every
remaining score is 0 (the released code's argmax would then re-pick row 0).

TF-IDF (:func:`tfidf_matrix`): scikit-learn ``TfidfVectorizer(ngram_range=(1, 3))`` with its
other defaults, i.e. analyzer="word", lowercase=True, strip_accents=None, stop_words=None,
token_pattern=r"(?u)\\b\\w\\w+\\b" (tokens of 2+ word characters; 1-character tokens and
punctuation are dropped), min_df=1, max_df=1.0, max_features=None, use_idf=True,
smooth_idf=True (idf = ln((1 + N) / (1 + df)) + 1), sublinear_tf=False, norm="l2", float64.
Responses are passed as given; the released code appends the tokenizer's EOS string to each
response first, we do not. A response with no token (or a pool with no token at all) gets an
empty row (D = 0): it can still be picked, last, when the budget exceeds the other candidates.

Schedule (:func:`window`, :func:`rerank`). Epoch 0 ranks all N (:func:`iterit_select`).
Before each later epoch the caller re-scores only the top W = min(len(ranking),
ceil(update_ratio · n)) samples of the current ranking (update_ratio 3), and the selection is
redone inside that window: candidates are the window samples whose *new* S_COM is < 1;
samples outside the window are never eligible, whatever their old score. The ranking that a
selection produces (as in the released code) is: the n greedy picks in pick order, then the
other candidates by S_COM descending (ties by ``tie_rank``), then, after a re-rank, the previous
ranking beyond the window, unchanged. So (with the default ``flagged="drop"``) the ranking holds
candidates only and its length, the number of candidates, caps W.

Readings chosen (defaults first):

* Diversity inside the window: the paper's and released code's reading, TF-IDF re-fitted on
  the responses of the window's candidates (pass the pool's responses). Alternative: pass a
  TF-IDF matrix with one row per pool sample (e.g. ``tfidf_matrix`` of all responses) and its
  rows at the window's candidates are used as they are (no re-fit, no re-normalisation).
* Samples that are not candidates (``flagged``): ``"drop"`` leaves them out of the ranking (they
  are listed in ``info["flagged"]``). ``"rescore"`` is the released code: those with a finite
  S_COM ≥ 1 are placed right after the n picks, so they fall in the next window and are scored
  again; non-finite ones are dropped in both modes (the released code loses them too: NaN fails
  both its ``< 1`` and ``>= 1`` tests).
* ``update_ratio`` must be ≥ 1 (math.inf: the whole ranking). The released code treats a ratio
  ≤ 1 as "re-score the whole pool"; here ratio 1 means W = n.
* Fewer candidates than n: all candidates are returned in greedy order and ``info["shortfall"]``
  says how many are missing; :func:`greedy_select` simply returns fewer than n indices.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

TFIDF_SETTINGS = {"ngram_range": (1, 3)}  # everything else: scikit-learn's defaults (above)
FLAGGED_MODES = ("drop", "rescore")
MIN_SCALE = 1e-16  # a column decayed below this factor is retired (see GreedyDiversity)


def candidate_mask(complexity: np.ndarray) -> np.ndarray:
    """True where S_COM makes a sample a candidate: finite and strictly below 1."""
    c = np.asarray(complexity, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.isfinite(c) & (c < 1.0)


def tfidf_matrix(responses: Sequence[str]) -> sp.csr_matrix:
    """TF-IDF rows (L2-normalised, float64) of ``responses`` over word 1–3-grams (settings above).

    No response, or no token in any response: a matrix with no column."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = list(responses)
    if not texts:
        return sp.csr_matrix((0, 0), dtype=np.float64)
    try:
        x = TfidfVectorizer(**TFIDF_SETTINGS).fit_transform(texts)
    except ValueError as err:  # "empty vocabulary": no response has a token
        if "empty vocabulary" not in str(err):
            raise
        return sp.csr_matrix((len(texts), 0), dtype=np.float64)
    return sp.csr_matrix(x, dtype=np.float64)


class GreedyDiversity:
    """The greedy S_COM · D selection, one pick per :meth:`step`, row sums kept incrementally.

    ``row_sums`` is D of every row under the current decays (0 for picked rows), ``col_scale``
    the current factor of each column (λ^k after k decays), ``order`` the picks so far.
    A column whose scale falls below ``min_scale`` is retired: its whole remaining value
    (< min_scale · X0[i, j]) leaves the row sums at once and it is never touched again (its
    ``col_scale`` stays at that first value below ``min_scale``); ``min_scale=0`` retires a
    column only when its scale is exactly 0 (λ = 0 or underflow). ``touched`` counts the matrix
    entries the updates visited."""

    def __init__(self, tfidf, complexity: np.ndarray, lam: float = 0.1, *,
                 eligible: np.ndarray | None = None, tie_rank: np.ndarray | None = None,
                 min_scale: float = MIN_SCALE):
        x = sp.csr_matrix(tfidf, dtype=np.float64, copy=True)
        x.sum_duplicates()
        x.eliminate_zeros()
        n_rows = x.shape[0]
        self._c = np.asarray(complexity, dtype=np.float64)
        if self._c.shape != (n_rows,):
            raise ValueError(f"complexity has shape {self._c.shape}, the TF-IDF matrix {n_rows} rows")
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"lam must lie in [0, 1], got {lam}")
        self.lam, self.min_scale = float(lam), float(min_scale)
        self._csr, self._csc = x, x.tocsc()
        self._sums = np.asarray(x.sum(axis=1), dtype=np.float64).ravel()
        self._live = np.diff(x.indptr).astype(np.int64)  # columns of each row not yet retired
        self.col_scale = np.ones(x.shape[1], dtype=np.float64)
        self._retired = np.zeros(x.shape[1], dtype=bool)
        self.picked = np.zeros(n_rows, dtype=bool)
        self._open = candidate_mask(self._c) if eligible is None else np.array(eligible, dtype=bool)
        if self._open.shape != (n_rows,):
            raise ValueError(f"eligible has shape {self._open.shape}, expected ({n_rows},)")
        self._tie = np.arange(n_rows) if tie_rank is None else np.asarray(tie_rank)
        if self._tie.shape != (n_rows,):
            raise ValueError(f"tie_rank has shape {self._tie.shape}, expected ({n_rows},)")
        self.order: list[int] = []
        self.touched = 0

    @property
    def row_sums(self) -> np.ndarray:
        return np.where(self.picked, 0.0, self._sums)

    def remaining(self) -> int:
        return int(self._open.sum())

    def step(self) -> int | None:
        """Pick the next row (and decay its columns); None when no eligible row is left."""
        rows = np.flatnonzero(self._open)
        if len(rows) == 0:
            return None
        score = self._c[rows] * self._sums[rows]
        score[np.isnan(score)] = -np.inf  # only reachable through an explicit ``eligible``
        best = rows[score == score.max()]
        p = int(best[np.argmin(self._tie[best])] if len(best) > 1 else best[0])
        self._decay(p)
        self.order.append(p)
        return p

    def _decay(self, p: int) -> None:
        csr, csc, lam = self._csr, self._csc, self.lam
        self.picked[p] = True
        self._open[p] = False
        self._sums[p] = 0.0
        cols = csr.indices[csr.indptr[p]:csr.indptr[p + 1]]
        cols = cols[~self._retired[cols]]
        if lam == 1.0 or len(cols) == 0:
            return
        old = self.col_scale[cols]
        new = old * lam
        dies = new < self.min_scale if self.min_scale > 0 else new == 0.0
        # each row loses (1 - λ)·(current value); a retiring column loses all of its value
        loss = np.where(dies, old, old * (1.0 - lam))
        starts, lens = csc.indptr[cols], np.diff(csc.indptr)[cols]
        total = int(lens.sum())
        self.touched += total
        # positions of all entries of the columns ``cols`` in the CSC arrays
        pos = np.repeat(starts - (np.cumsum(lens) - lens), lens) + np.arange(total)
        rows = csc.indices[pos]
        live = ~self.picked[rows]
        np.subtract.at(self._sums, rows[live], (csc.data[pos] * np.repeat(loss, lens))[live])
        if dies.any():
            gone = rows[np.repeat(dies, lens)]
            np.subtract.at(self._live, gone, 1)
            emptied = gone[self._live[gone] == 0]
            self._sums[emptied] = 0.0  # nothing left in those rows: exactly 0, no rounding residue
            self._retired[cols[dies]] = True
        self.col_scale[cols] = new


def greedy_select(complexity: np.ndarray, tfidf, n: int, lam: float = 0.1, *,
                  eligible: np.ndarray | None = None, tie_rank: np.ndarray | None = None,
                  min_scale: float = MIN_SCALE) -> np.ndarray:
    """Rows picked by the greedy S_COM · D selection, in pick order (at most n of them).

    ``eligible`` defaults to :func:`candidate_mask` (finite S_COM < 1); ineligible rows stay in
    the matrix but are never picked. Fewer than n eligible rows: all of them are returned."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    g = GreedyDiversity(tfidf, complexity, lam, eligible=eligible, tie_rank=tie_rank, min_scale=min_scale)
    for _ in range(min(int(n), g.remaining())):
        g.step()
    return np.asarray(g.order, dtype=np.int64)


def window(ranking: np.ndarray, n: int, update_ratio: float = 3.0) -> np.ndarray:
    """The top W = min(len(ranking), ceil(update_ratio · n)) of ``ranking``: what to re-score."""
    ranking = np.asarray(ranking, dtype=np.int64)
    if update_ratio < 1:
        raise ValueError(f"update_ratio must be >= 1 (math.inf: the whole ranking), got {update_ratio}")
    if math.isinf(update_ratio):
        return ranking.copy()
    w = math.ceil(update_ratio * n - 1e-9)  # 1.1 * 10 = 11.000000000000002 must give 11
    return ranking[:min(len(ranking), w)].copy()


def rerank(window_indices: np.ndarray, new_complexity: np.ndarray, responses_or_tfidf, n: int,
           lam: float = 0.1, *, ranking: np.ndarray | None = None, tie_rank: np.ndarray | None = None,
           flagged: str = "drop") -> tuple[np.ndarray, dict]:
    """The selection redone inside a window with the window's new S_COM values.

    window_indices      pool positions, the top W of the previous ranking, in ranking order
    new_complexity      S_COM of those samples under the current model (aligned, length W)
    responses_or_tfidf  the pool's responses (TF-IDF re-fitted on the window's candidates, the
                        default reading) or a TF-IDF matrix with one row per pool sample (its
                        rows are used as they are)
    ranking             the previous ranking; when given, ``window_indices`` must be its prefix
                        and its remainder follows the window in the new ranking
    tie_rank            per pool position, lower wins ties; default: position in the window

    Returns (picks as pool positions in pick order, info): info["ranking"] is the new ranking,
    info["flagged"] the window samples that are not candidates, info["shortfall"] how many
    picks are missing to reach n."""
    if flagged not in FLAGGED_MODES:
        raise ValueError(f"flagged must be one of {FLAGGED_MODES}, got {flagged!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    win = np.asarray(window_indices, dtype=np.int64)
    comp = np.asarray(new_complexity, dtype=np.float64)
    if comp.shape != win.shape:
        raise ValueError(f"new_complexity has shape {comp.shape}, the window {win.shape}")
    if len(np.unique(win)) != len(win):
        raise ValueError("window_indices has repeated positions")
    rest = np.zeros(0, dtype=np.int64)
    if ranking is not None:
        ranking = np.asarray(ranking, dtype=np.int64)
        if not np.array_equal(ranking[:len(win)], win):
            raise ValueError("window_indices is not the top of ranking")
        rest = ranking[len(win):]

    ok = candidate_mask(comp)
    cand = win[ok]
    tie = np.arange(len(win)) if tie_rank is None else np.asarray(tie_rank)[win]
    tie_c = tie[ok]
    if sp.issparse(responses_or_tfidf):
        diversity = "global"
        x = sp.csr_matrix(responses_or_tfidf)[cand]
    else:
        diversity = "window"
        texts = responses_or_tfidf
        x = tfidf_matrix(texts.take(cand) if hasattr(texts, "take") else [texts[int(i)] for i in cand])
    local = greedy_select(comp[ok], x, n, lam, eligible=np.ones(len(cand), dtype=bool), tie_rank=tie_c)
    picks = cand[local]

    others = np.setdiff1d(np.arange(len(cand)), local, assume_unique=True)
    others = others[np.lexsort((tie_c[others], -comp[ok][others]))]
    parts = [picks]
    if flagged == "rescore":
        keep = ~ok & np.isfinite(comp)
        parts.append(win[keep])
    parts += [cand[others], rest]
    info = {
        "ranking": np.concatenate(parts).astype(np.int64),
        "flagged": win[~ok],
        "n_candidates": len(cand),
        "n_selected": len(picks),
        "shortfall": int(max(0, n - len(picks))),
        "window_size": len(win),
        "vocabulary_size": int(x.shape[1]),
        "diversity": diversity,
        "lam": float(lam),
        "flagged_mode": flagged,
    }
    return picks, info


def iterit_select(complexity: np.ndarray, responses, n: int, lam: float = 0.1, *,
                  tie_rank: np.ndarray | None = None, flagged: str = "drop") -> tuple[np.ndarray, dict]:
    """Epoch 0: candidate filter, TF-IDF of the candidates' responses, greedy S_COM · D picks.

    ``complexity`` and ``responses`` have one entry per pool sample (``responses`` may instead be
    a pool-row TF-IDF matrix). Returns (picks as pool positions in pick order, info) with
    info["ranking"] the ranking the next epoch's :func:`window` is taken from; the rest of
    ``info`` as in :func:`rerank`. Ties go to the lowest pool position unless ``tie_rank``."""
    comp = np.asarray(complexity, dtype=np.float64)
    return rerank(np.arange(len(comp)), comp, responses, n, lam, tie_rank=tie_rank, flagged=flagged)


__all__ = ["FLAGGED_MODES", "TFIDF_SETTINGS", "GreedyDiversity", "candidate_mask", "greedy_select",
           "iterit_select", "rerank", "tfidf_matrix", "window"]
