"""Encoding: exact label positions on a tiny word-level tokenizer, truncation, rejection."""
import pytest

from leadsel.data.encode import collate, encode, segments
from leadsel.data.records import Sample
from helpers import WORDS, make_tokenizer

V = {w: i for i, w in enumerate(WORDS)}
S, E = V["<|im_start|>"], V["<|im_end|>"]


def sample(*turns, id="x"):
    roles = ["user", "assistant"] * len(turns)
    if turns and turns[0][0] == "system":
        msgs = [{"role": "system", "content": turns[0][1]}] + [
            {"role": r, "content": t} for r, t in zip(roles, turns[1:])]
    else:
        msgs = [{"role": r, "content": t} for r, t in zip(roles, turns)]
    return Sample(id=id, source="t", messages=msgs)


def ids(*words):
    return [V[w] for w in words]


def test_last_turn_mask_exact(tok):
    enc = encode([sample("hi there", "hello")], tok, max_length=64)
    tokens, labels = enc.sample(0)
    # <|im_start|> user hi there <|im_end|> <|im_start|> assistant | hello <|im_end|>
    assert tokens.tolist() == [S, V["user"], V["hi"], V["there"], E, S, V["assistant"], V["hello"], E]
    assert labels.tolist() == [-100] * 7 + [V["hello"], E]


def test_multi_turn_last_vs_all(tok):
    s = sample("hi", "hello", "how are you", "fine thanks")
    last = encode([s], tok, 64, supervise="last").sample(0)[1].tolist()
    all_ = encode([s], tok, 64, supervise="all").sample(0)[1].tolist()
    prefix = [-100] * 6  # <s> user hi </s> <s> assistant
    assert all_ == prefix + [V["hello"], E] + [-100] * 8 + [V["fine"], V["thanks"], E]
    assert last == [-100] * 16 + [V["fine"], V["thanks"], E]


def test_system_turn_is_prompt(tok):
    tokens, labels = encode([sample(("system", "a b"), "hi", "hello")], tok, 64).sample(0)
    assert tokens[:5].tolist() == [S, V["system"], V["a"], V["b"], E]
    assert (labels != -100).sum() == 2


def test_truncation_drops_prompt_from_left_then_response_from_right(tok):
    s = sample("a b c d e f g h", "one two three")
    full = encode([s], tok, 64).sample(0)
    assert len(full[0]) == 17  # 2 + 8 + 1 + 2 + 3 + 1
    t, l = encode([s], tok, 10).sample(0)
    assert t.tolist() == full[0][-10:].tolist()  # 7 tokens of prompt dropped from the left
    assert l.tolist()[-4:] == ids("one", "two", "three") + [E]
    t, l = encode([s], tok, 3).sample(0)  # no prompt left; the response cut from the right
    assert t.tolist() == ids("one", "two", "three")
    assert l.tolist() == ids("one", "two", "three")


def test_no_predictable_response_token_is_rejected_and_counted(tok):
    s1, s2 = sample("hi", "hello", id="a"), sample("hi", "fine", id="b")
    enc = encode([s1, s2], tok, 1)  # one token: nothing can be predicted
    assert len(enc) == 0 and enc.rejected == {"no_response_tokens": 2}
    assert enc.rejected_ids == ["a", "b"]


def test_drop_policy_rejects_overlong(tok):
    enc = encode([sample("hi", "hello", id="a"), sample("a b c d e f g h", "one", id="b")], tok, 10,
                 truncation="drop")
    assert enc.ids == ["a"] and enc.rejected == {"too_long": 1} and enc.index.tolist() == [0]


def test_alone_encoding_keeps_only_the_assistant_turn(tok):
    t, l = encode([sample("hi there", "hello")], tok, 64, alone=True).sample(0)
    assert t.tolist() == [S, V["assistant"], V["hello"], E]
    assert l.tolist() == [-100, -100, V["hello"], E]


def test_segments_refuse_a_template_that_is_not_prefix_stable():
    tok = make_tokenizer()
    tok.chat_template = "{% for m in messages|reverse %}{{ m['content'] }} {% endfor %}"
    with pytest.raises(ValueError, match="prefix"):
        segments(tok, sample("hi", "hello", "how", "fine").messages, "all")


def test_collate_right_pads(tok):
    enc = encode([sample("hi", "hello"), sample("hi there how are you", "fine")], tok, 64)
    b = collate(enc, [0, 1], pad_id=tok.pad_token_id)
    # 8 tokens (<s> user hi </s> <s> assistant hello </s>) and 12 tokens
    assert b["input_ids"].shape == (2, 12)
    assert b["attention_mask"][0].tolist() == [1] * 8 + [0] * 4
    assert b["input_ids"][0, 8:].tolist() == [tok.pad_token_id] * 4
    assert b["labels"][0, 8:].tolist() == [-100] * 4


def test_fingerprint_changes_with_content(tok):
    a = encode([sample("hi", "hello")], tok, 64).fingerprint()
    assert a == encode([sample("hi", "hello")], tok, 64).fingerprint()
    assert a != encode([sample("hi", "fine")], tok, 64).fingerprint()
    assert a != encode([sample("hi", "hello")], tok, 64, alone=True).fingerprint()


def test_fallback_templates_render(tok):
    for name in ("alpaca", "plain"):
        t = make_tokenizer(name)
        enc = encode([sample("hi", "hello")], t, 64)
        _, labels = enc.sample(0)
        assert [x for x in labels.tolist() if x != -100] == [V["hello"], E]
