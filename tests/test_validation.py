"""Validation sets of the targeted methods: one per task, from data.val_paths (or the bundled val
splits), and never a set that shares content with an evaluation set."""
import json

import pytest

from helpers import config, write_pool


def open_session(cfg):
    from leadsel.session import Session

    return Session.open(cfg, method=cfg.method, record=True)


def test_validation_sets_load_one_per_task(setup, tmp_path):
    d, ckpt = setup
    a, b = write_pool(tmp_path / "val_alpha.jsonl", 3, 11), write_pool(tmp_path / "val_beta.jsonl", 2, 12)
    s = open_session(config(d, ckpt, tmp_path / "run", data__val_paths=f"[{a},{b}]"))
    vals = s.validation_sets()
    assert [(v.name, len(v.encoded)) for v in vals] == [("val_alpha", 3), ("val_beta", 2)]
    man = json.loads((tmp_path / "run" / "run.json").read_text())
    assert man["data"]["validation"]["val_alpha"]["n"] == 3


def test_a_validation_set_drawn_from_an_eval_set_is_refused(setup, tmp_path):
    d, ckpt = setup
    val = write_pool(tmp_path / "val_alpha.jsonl", 3, 11)
    held = (d / "held.jsonl").read_text().splitlines()
    leak = json.loads(held[4])
    leak["id"] = "renamed"  # the same content under another id is still a leak
    val.write_text(val.read_text() + json.dumps(leak) + "\n")
    s = open_session(config(d, ckpt, tmp_path / "run", data__val_paths=f"[{val}]"))
    with pytest.raises(ValueError, match=r"val_alpha.jsonl has 1 samples that are also in an evaluation set "
                                         r"\(e\.g\. renamed in .*held\.jsonl\)"):
        s.validation_sets()


def test_no_validation_set_is_a_clear_error(setup, tmp_path):
    d, ckpt = setup
    s = open_session(config(d, ckpt, tmp_path / "run"))
    with pytest.raises(ValueError, match="needs its validation examples: set data.val_paths"):
        s.validation_sets()
