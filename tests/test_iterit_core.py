"""IterIT's selection core: greedy S_COM · D picks, incremental row sums, candidates, window."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

from leadsel.select.iterit_core import (GreedyDiversity, candidate_mask, greedy_select, iterit_select,
                                        rerank, tfidf_matrix, window)

# 5 rows x 4 columns, rows L2-normalised (0.6² + 0.8² = 1); every row sum of 0.6 + 0.8 is 1.4
HAND = sp.csr_matrix(np.array([
    [0.6, 0.8, 0.0, 0.0],
    [0.8, 0.0, 0.6, 0.0],
    [0.0, 0.0, 0.6, 0.8],
    [0.6, 0.0, 0.0, 0.8],
    [0.0, 1.0, 0.0, 0.0],
]))
HAND_C = np.array([0.9, 0.8, 0.6, 0.55, 0.7])


def test_greedy_hand_example_picks_and_row_sums():
    g = GreedyDiversity(HAND, HAND_C, lam=0.1)
    np.testing.assert_allclose(g.row_sums, [1.4, 1.4, 1.4, 1.4, 1.0])
    # scores 0.9·1.4=1.26, 0.8·1.4=1.12, 0.6·1.4=0.84, 0.55·1.4=0.77, 0.7·1.0=0.70 -> row 0
    assert g.step() == 0
    # columns 0, 1 -> x0.1; row 0 zeroed.  r1 = 0.08+0.6 = 0.68, r2 = 1.4, r3 = 0.06+0.8 = 0.86, r4 = 0.1
    np.testing.assert_allclose(g.row_sums, [0, 0.68, 1.4, 0.86, 0.1], atol=1e-12)
    # scores r1 0.8·0.68=0.544, r2 0.6·1.4=0.84, r3 0.55·0.86=0.473, r4 0.7·0.1=0.07 -> row 2
    assert g.step() == 2
    # columns 2, 3 -> x0.1.  r1 = 0.08+0.06 = 0.14, r3 = 0.06+0.08 = 0.14, r4 = 0.1
    np.testing.assert_allclose(g.row_sums, [0, 0.14, 0, 0.14, 0.1], atol=1e-12)
    # scores r1 0.8·0.14=0.112, r3 0.55·0.14=0.077, r4 0.07 -> row 1
    assert g.step() == 1
    # columns 0 and 2 decayed a second time (scale 0.01).  r3 loses (1-0.1)·0.06 = 0.054 from
    # column 0 (the already decayed value): 0.14 - 0.054 = 0.086 = 0.6·0.01 + 0.8·0.1;  r4 = 0.1
    np.testing.assert_allclose(g.row_sums, [0, 0, 0, 0.086, 0.1], atol=1e-12)
    np.testing.assert_allclose(g.col_scale, [0.01, 0.1, 0.01, 0.1])
    # scores r3 0.55·0.086=0.0473 < r4 0.7·0.1=0.07 -> row 4 overtakes row 3
    assert g.step() == 4
    np.testing.assert_allclose(g.row_sums, [0, 0, 0, 0.086, 0], atol=1e-12)
    assert g.step() == 3
    assert g.step() is None
    np.testing.assert_allclose(g.row_sums, 0, atol=1e-12)
    # column 0 is in picked rows 0, 1, 3 -> 0.1³; columns 1 (rows 0, 4), 2 (2, 1), 3 (2, 3) -> 0.1²
    np.testing.assert_allclose(g.col_scale, [0.001, 0.01, 0.01, 0.01])
    assert g.order == [0, 2, 1, 4, 3]
    np.testing.assert_array_equal(greedy_select(HAND_C, HAND, 3), [0, 2, 1])
    # the caller's matrix is left untouched
    assert HAND[0, 0] == 0.6


def test_tfidf_settings_by_hand():
    # one document "Red apple pie": red, apple, pie, red apple, apple pie, red apple pie (lowercased)
    # -> 6 columns, all idf equal -> every value 1/sqrt(6)
    x = tfidf_matrix(["Red apple pie"])
    assert x.shape == (1, 6) and sp.isspmatrix_csr(x)
    np.testing.assert_allclose(x.toarray(), 1 / math.sqrt(6))
    # ["red apple", "red pie"]: red (df 2), apple, red apple, pie, red pie (df 1) -> 5 columns.
    # smooth idf: red ln(3/3)+1 = 1, the others a = ln(3/2)+1; row 0 = [1, a, a] / sqrt(1 + 2a²)
    x = tfidf_matrix(["red apple", "red pie"])
    a = math.log(1.5) + 1
    assert x.shape == (2, 5)
    np.testing.assert_allclose(np.asarray(x.sum(axis=1)).ravel(), (1 + 2 * a) / math.sqrt(1 + 2 * a * a))
    # 1-character tokens and punctuation are no tokens: "a b c !" gives an empty row
    x = tfidf_matrix(["a b c !", "Red apple"])
    assert x[0].nnz == 0 and x.shape == (2, 3)
    assert tfidf_matrix(["a", "b"]).shape == (2, 0)
    assert tfidf_matrix([]).shape == (0, 0)


def test_first_pick_on_real_strings_matches_sklearn():
    r = ["The cat sat on the mat.", "The dog sat on the log!", "A quick brown fox jumps", "the cat sat",
         "Stock markets fell sharply today"]
    c = np.array([0.6, 0.7, 0.5, 0.9, 0.4])
    ref = TfidfVectorizer(ngram_range=(1, 3)).fit_transform(r)
    d = np.asarray(ref.sum(axis=1)).ravel()
    expect = int(np.argmax(c * d))
    assert expect == 1 and np.argmax(c) == 3  # diversity matters: the short row 3 loses
    x = tfidf_matrix(r)
    np.testing.assert_allclose(x.toarray(), ref.toarray())
    np.testing.assert_allclose(np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel()), 1.0)
    assert greedy_select(c, x, 1)[0] == expect
    picks, info = iterit_select(c, r, 2)
    assert picks[0] == expect and info["vocabulary_size"] == ref.shape[1] and info["diversity"] == "window"


@pytest.mark.parametrize("seed,lam", [(0, 0.1), (1, 0.1), (2, 0.5), (3, 0.0)])
def test_incremental_row_sums_equal_brute_force(seed, lam):
    rng = np.random.default_rng(seed)
    x = sp.random(40, 60, density=0.12, random_state=seed, format="csr")
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    x = sp.csr_matrix(sp.diags(np.where(norms > 0, 1 / np.maximum(norms, 1e-300), 0)) @ x)
    c = rng.uniform(0.1, 0.99, size=40)
    dense = x.toarray()
    m = dense.copy()
    picked = np.zeros(40, dtype=bool)
    g = GreedyDiversity(x, c, lam)
    for _ in range(40):
        score = np.where(picked, -np.inf, c * m.sum(axis=1))  # the released code's recomputation
        expect = int(np.argmax(score))
        assert g.step() == expect
        m[:, dense[expect] != 0] *= lam
        m[expect] = 0.0
        picked[expect] = True
        np.testing.assert_allclose(g.row_sums, m.sum(axis=1), rtol=1e-9, atol=1e-12)
    assert g.step() is None
    assert sorted(g.order) == list(range(40))


def test_common_column_is_retired_and_cost_is_bounded():
    # 60 rows: column 0 (value 0.6) in every row, plus a column of its own (0.8)
    n = 60
    rows = np.repeat(np.arange(n), 2)
    cols = np.ravel(np.column_stack([np.zeros(n, dtype=int), np.arange(1, n + 1)]))
    x = sp.csr_matrix((np.tile([0.6, 0.8], n), (rows, cols)), shape=(n, n + 1))
    c = np.linspace(0.9, 0.3, n)
    g = GreedyDiversity(x, c, lam=0.1)
    for k in range(n):
        assert g.step() == k  # decreasing complexity, equal diversity after each decay
        # brute force: unpicked rows hold 0.6·0.1^(k+1) + 0.8; column 0 retires at 0.1^17 < 1e-16
        left = 0.6 * 0.1 ** (k + 1) if k + 1 < 17 else 0.0
        np.testing.assert_allclose(g.row_sums[k + 1:], left + 0.8, rtol=1e-15)
    # column 0 is visited 17 times (n entries each), never after; each own column once (1 entry)
    assert g.touched == 17 * n + n
    # min_scale 0: no retirement, the column is visited at every pick
    g = GreedyDiversity(x, c, lam=0.1, min_scale=0.0)
    while g.step() is not None:
        pass
    assert g.touched == n * n + n


def test_ties_and_zero_scores():
    x = sp.csr_matrix(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]))
    c = np.array([0.5, 0.5, 0.9, 0.5])
    # rows 0, 1, 3 tie at 0.5 -> lowest index 0; then row 1 = 0.1 < row 3 = 0.5; row 2 (empty) last
    np.testing.assert_array_equal(greedy_select(c, x, 4), [0, 3, 1, 2])
    np.testing.assert_array_equal(greedy_select(c, x, 4, tie_rank=np.array([3, 2, 1, 0])), [3, 1, 0, 2])
    # lam 0: everything left scores 0 after two picks; no row is picked twice
    np.testing.assert_array_equal(greedy_select(c, x, 4, lam=0.0), [0, 3, 1, 2])


def test_non_candidates_never_picked_and_shortfall():
    c = np.array([0.5, 1.0, np.nan, 0.7, np.inf, 1.3, 0.2])
    np.testing.assert_array_equal(candidate_mask(c), [1, 0, 0, 1, 0, 0, 1])
    r = ["alpha beta", "alpha gamma delta", "beta gamma", "delta epsilon", "zeta eta", "theta iota", "kappa"]
    picks, info = iterit_select(c, r, 5)
    assert set(picks) == {0, 3, 6} and len(picks) == 3
    assert info["shortfall"] == 2 and info["n_candidates"] == 3 and info["n_selected"] == 3
    np.testing.assert_array_equal(info["flagged"], [1, 2, 4, 5])
    np.testing.assert_array_equal(info["ranking"], picks)
    # greedy order over the candidates' own TF-IDF (rows 0, 3, 6)
    local = greedy_select(c[[0, 3, 6]], tfidf_matrix([r[0], r[3], r[6]]), 5)
    np.testing.assert_array_equal(picks, np.array([0, 3, 6])[local])
    # greedy_select's default eligibility is the same filter; an all-empty pool still works
    assert set(greedy_select(c, sp.csr_matrix((7, 3)), 7)) == {0, 3, 6}
    picks, info = iterit_select(np.array([np.nan, 2.0]), ["a b", "c d"], 1)
    assert len(picks) == 0 and info["shortfall"] == 1 and len(info["ranking"]) == 0


def test_ranking_after_picks_is_complexity_order():
    # picks [0, 2] (hand example), then the other candidates by S_COM descending: 1 (0.8), 4 (0.7), 3
    picks, info = iterit_select(HAND_C, HAND, 2)
    np.testing.assert_array_equal(picks, [0, 2])
    np.testing.assert_array_equal(info["ranking"], [0, 2, 1, 4, 3])
    assert info["diversity"] == "global"


def test_window_size():
    ranking = np.arange(20)[::-1]
    np.testing.assert_array_equal(window(ranking, 2, 3), [19, 18, 17, 16, 15, 14])  # W = 3·2
    assert len(window(ranking, 10, 1.1)) == 11      # 1.1·10 = 11.000000000000002 -> 11, not 12
    assert len(window(ranking, 3, 1.5)) == 5        # ceil(4.5)
    assert len(window(ranking[:4], 2, 3)) == 4      # capped by the ranking (the candidates)
    assert len(window(ranking, 2, math.inf)) == 20
    with pytest.raises(ValueError):
        window(ranking, 2, 0.5)


# pool of 8, columns a, b, c (rows L2-normalised); used as a pool-row TF-IDF ("global" reading)
POOL = sp.csr_matrix(np.array([
    [1.0, 0.0, 0.0],   # 0
    [0.0, 1.0, 0.0],   # 1
    [0.6, 0.8, 0.0],   # 2
    [0.0, 0.0, 1.0],   # 3
    [0.0, 0.0, 1.0],   # 4
    [0.8, 0.0, 0.6],   # 5
    [0.6, 0.0, 0.8],   # 6
    [0.0, 0.6, 0.8],   # 7
]))
RANKING = np.array([5, 2, 7, 0, 3, 1, 6, 4])


def test_rerank_inside_window_hand_example():
    win = window(RANKING, 2, 3)
    np.testing.assert_array_equal(win, [5, 2, 7, 0, 3, 1])
    new_c = np.array([1.2, 0.5, 0.6, 0.9, 0.3, 0.4])  # aligned with win; sample 5 is now >= 1
    # candidates 2, 7, 0, 3, 1; scores 0.5·1.4=0.70, 0.6·1.4=0.84, 0.9·1=0.90, 0.3, 0.4 -> 0
    # column a x0.1: row 2 = 0.06 + 0.8 = 0.86 -> 0.43; 7 stays 0.84 -> 7
    picks, info = rerank(win, new_c, POOL, 2, ranking=RANKING)
    np.testing.assert_array_equal(picks, [0, 7])
    # sample 6 (outside the window, old S_COM 0.99) would score 0.99·1.4 = 1.386 and win
    full = np.array([0.2, 0.4, 0.5, 0.3, 0.2, 1.2, 0.99, 0.6])
    full[win] = new_c
    assert greedy_select(full, POOL, 1)[0] == 6
    # ... and the re-rank equals a greedy selection over just the window's candidate rows
    cand = win[new_c < 1]
    np.testing.assert_array_equal(picks, cand[greedy_select(new_c[new_c < 1], POOL[cand], 2)])
    # ranking: picks, other window candidates by new S_COM (2: 0.5, 1: 0.4, 3: 0.3), then 6, 4
    np.testing.assert_array_equal(info["ranking"], [0, 7, 2, 1, 3, 6, 4])
    np.testing.assert_array_equal(info["flagged"], [5])
    assert info["window_size"] == 6 and info["n_candidates"] == 5 and info["shortfall"] == 0
    # released-code option: flagged window samples right after the picks, re-scored next epoch
    _, info = rerank(win, new_c, POOL, 2, ranking=RANKING, flagged="rescore")
    np.testing.assert_array_equal(info["ranking"], [0, 7, 5, 2, 1, 3, 6, 4])
    with pytest.raises(ValueError):
        rerank(win[::-1], new_c, POOL, 2, ranking=RANKING)
    with pytest.raises(ValueError):
        rerank(win, new_c[:5], POOL, 2)


def test_rerank_refits_tfidf_on_window_candidates():
    responses = ["red apple pie", "green apple tart", "red wine sauce", "apple pie with cream", "blue sky",
                 "red apple", "dark red wine", "sky and sea"]
    ranking = np.array([7, 3, 0, 5, 2, 6, 1, 4])
    win = window(ranking, 2, 3)
    new_c = np.array([0.8, 0.6, 0.7, np.nan, 0.5, 0.65])
    picks, info = rerank(win, new_c, responses, 2, ranking=ranking)
    ok = candidate_mask(new_c)
    cand = win[ok]
    local = greedy_select(new_c[ok], tfidf_matrix([responses[i] for i in cand]), 2)
    np.testing.assert_array_equal(picks, cand[local])
    assert info["diversity"] == "window" and set(picks) <= set(cand)
    np.testing.assert_array_equal(info["ranking"][-2:], [1, 4])
    assert len(info["ranking"]) == 7 and 5 not in info["ranking"]
