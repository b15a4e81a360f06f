"""The HF plug-in (leadsel.hf) selects and trains what `leadsel run` selects and trains.

On the tiny random Llama (fp32, dropout 0), the same AdamW and LambdaLR, batch 2 x accumulation
2, max_grad_norm 1.0: `leadsel run` and LeadTrainer / LeadSFTTrainer must give, round by round,
the same arm and the same ordered sample ids (exactly), the same per-sample losses, step learning
rates, delta and summed gradient (allclose, tolerances below), the same number of optimizer steps
and the same final adapter weights (allclose, within 5% of one Adam step). The 40-sample pool with budget 0.5 and batch 4 per
step has rounds of 5-10 samples, so most rounds end in a short step (n mod 4 != 0) whose fillers
must weigh nothing.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import config, plugin, rows_of

pytest.importorskip("trl")

RTOL = 1e-5   # per-sample losses and delta: the plug-in's loss builds the full logits (or TRL's
ATOL = 1e-6   # fused head), leadsel's loop projects only the supervised positions: bits may differ


def observed(monkeypatch, cls):
    """Record every (indices, losses, stats) the selector class is given."""
    calls = []
    orig = cls.observe

    def spy(self, idx, losses, stats):
        calls.append((np.array(idx), np.array(losses), np.array(stats.sample_lrs), stats.delta,
                      None if stats.grad_sum is None else np.array(stats.grad_sum)))
        return orig(self, idx, losses, stats)

    monkeypatch.setattr(cls, "observe", spy)
    return calls


def adapter(model):
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


@pytest.fixture(scope="module")
def reference(setup, tmp_path_factory):
    """`leadsel run` of lead on the tiny setup, with what its selector was given."""
    from leadsel.runner import run
    from leadsel.select.lead import LeadSelector

    d, ckpt = setup
    mp = pytest.MonkeyPatch()
    calls = observed(mp, LeadSelector)
    out = tmp_path_factory.mktemp("ref") / "run"
    cfg = config(d, ckpt, out, method="lead")
    run(cfg)
    mp.undo()
    return cfg, out, calls


@pytest.mark.parametrize("kind", ["hf", "sft"])
def test_the_plugin_selects_and_trains_what_leadsel_run_does(reference, setup, tmp_path, monkeypatch, kind):
    from safetensors.torch import load_file

    from leadsel.select.lead import LeadSelector

    cfg, ref_dir, ref_calls = reference
    d, ckpt = setup
    calls = observed(monkeypatch, LeadSelector)
    trainer, lead = plugin(cfg, ckpt, tmp_path / "hf", kind)
    trainer.train()
    lead.save()
    ref, got = rows_of(ref_dir), rows_of(tmp_path / "hf" / "leadsel")
    assert len(ref) == len(got) >= 5
    assert [r["arm"] for r in got] == [r["arm"] for r in ref]
    assert [r["selected_ids"] for r in got] == [r["selected_ids"] for r in ref]
    assert any(len(r["selected_ids"]) % 4 for r in ref)    # a short last step, padded with fillers
    assert [r["n_steps"] for r in got] == [r["n_steps"] for r in ref]
    for (ri, rl, rlr, rd, rg), (gi, gl, glr, gd, gg) in zip(ref_calls, calls):
        assert np.array_equal(ri, gi)
        np.testing.assert_allclose(gl, rl, rtol=RTOL, atol=ATOL)
        np.testing.assert_array_equal(glr, rlr)
        np.testing.assert_allclose(gd, rd, rtol=RTOL)
        # the summed gradient: within 1e-5 of its own norm, and elementwise within 1e-6
        assert np.linalg.norm(gg - rg) <= 1e-5 * np.linalg.norm(rg)
        np.testing.assert_allclose(gg, rg, rtol=1e-4, atol=1e-6)
    if kind == "sft":  # TRL's training metrics, from the fused head's outputs of the real rows
        last = trainer.state.log_history[-1]
        assert 0 <= last["mean_token_accuracy"] <= 1 and last["entropy"] > 0
        assert last["num_tokens"] == sum(int(lead.pool.lengths[i].sum()) for i, *_ in calls)
    man = json.loads((ref_dir / "run.json").read_text())
    assert trainer.state.global_step == man["rounds"]["optimizer_steps"] == sum(r["n_steps"] for r in ref)
    saved = load_file(str(ref_dir / "model" / "adapter_model.safetensors"))
    mine = adapter(trainer.model)
    assert saved.keys() == mine.keys()
    for k in saved:  # Adam normalises the tiny gradient differences: within 5% of one step (lr 2e-4)
        torch.testing.assert_close(mine[k], saved[k], rtol=1e-4, atol=1e-5)
    # the plug-in's run directory is one leadsel reads: the report and the comparison's row
    from leadsel.report import write_report
    from leadsel.report.tables import run_row

    assert write_report(tmp_path / "hf" / "leadsel").is_file()
    assert run_row(tmp_path / "hf" / "leadsel")["method"] == "lead"
    sel = [json.loads(x)["id"] for x in (tmp_path / "hf" / "leadsel" / "selected.jsonl").read_text().splitlines()]
    assert sel == lead.selected_ids and len(sel) == got[-1]["unique_used"]


def test_two_plugin_runs_are_bitwise_identical(reference, setup, tmp_path):
    cfg, _, _ = reference
    d, ckpt = setup
    outs = []
    for k in range(2):
        trainer, lead = plugin(cfg, ckpt, tmp_path / f"hf{k}")
        trainer.train()
        outs.append((lead.rows, adapter(trainer.model), lead.selector.idu.copy()))
    (r0, w0, u0), (r1, w1, u1) = outs
    strip = (lambda rows: [{k: v for k, v in r.items() if "seconds" not in k} for r in rows])
    assert strip(r0) == strip(r1)
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert np.array_equal(u0, u1)


def test_a_run_stopped_after_round_2_resumes_from_its_checkpoint_as_if_uninterrupted(reference, setup, tmp_path):
    from transformers import TrainerCallback

    cfg, _, _ = reference
    d, ckpt = setup

    class Die(TrainerCallback):
        rounds = 0

        def on_epoch_end(self, args, state, control, **kw):
            self.rounds += 1

        def on_epoch_begin(self, args, state, control, **kw):
            if self.rounds == 2:
                raise KeyboardInterrupt("killed after round 2")

    whole, lead = plugin(cfg, ckpt, tmp_path / "whole", save_strategy="epoch")
    whole.train()
    cut, _ = plugin(cfg, ckpt, tmp_path / "cut", save_strategy="epoch")
    cut.add_callback(Die())
    with pytest.raises(KeyboardInterrupt):
        cut.train()
    assert sorted(p.name for p in (tmp_path / "cut").glob("checkpoint-*"))[-1:] == [
        f"checkpoint-{sum(r['n_steps'] for r in lead.rows[:2])}"]
    # a kill between HF's save and the selection's: the newest checkpoint has no leadsel state
    last = int(sorted((int(p.name.split("-")[1]) for p in (tmp_path / "cut").glob("checkpoint-*")))[-1])
    (tmp_path / "cut" / f"checkpoint-{last + 1}").mkdir()
    again, lead2 = plugin(cfg, ckpt, tmp_path / "cut", save_strategy="epoch")
    again.train(resume_from_checkpoint=True)
    assert [r["selected_ids"] for r in lead2.rows] == [r["selected_ids"] for r in lead.rows]
    assert [r["arm"] for r in lead2.rows] == [r["arm"] for r in lead.rows]
    assert again.state.global_step == whole.state.global_step
    w0, w1 = adapter(whole.model), adapter(again.model)
    for k in w0:
        torch.testing.assert_close(w1[k], w0[k], rtol=1e-5, atol=1e-6)


def test_a_static_method_trains_its_subset_from_a_datasets_pool(setup, tmp_path):
    """`random` through the plug-in, the pool given as a datasets.Dataset: the subset and its
    order per epoch are leadsel's."""
    from datasets import Dataset

    from leadsel.runner import run

    d, ckpt = setup
    cfg = config(d, ckpt, tmp_path / "run", method="random", train__epochs=2)
    run(cfg)
    records = [json.loads(x) for p in ("alpha.jsonl", "beta.jsonl") for x in (d / p).read_text().splitlines()]
    trainer, lead = plugin(cfg, ckpt, tmp_path / "hf", dataset=Dataset.from_list(records))
    trainer.train()
    assert [r["selected_ids"] for r in lead.rows] == [r["selected_ids"] for r in rows_of(tmp_path / "run")]
    assert len(lead.rows) == 2


REFUSED = [
    ({"max_steps": 5}, "max_steps=5"),
    ({"lr_scheduler_type": "cosine"}, "lr_scheduler_type='cosine'"),
    ({"warmup_steps": 0.1}, "warm-up given as a ratio"),
    ({"save_strategy": "steps"}, "save_strategy='steps'"),
    ({"train_sampling_strategy": "group_by_length"}, "train_sampling_strategy='group_by_length'"),
    ({"auto_find_batch_size": True}, "auto_find_batch_size"),
    ({"accelerator_config": {"split_batches": True}}, "accelerator_config.split_batches"),
    ({"fp16": True}, "fp16: the loss scaler keeps the gradient scaled"),
]
REFUSED_SFT = [({"packing": True}, "packing"), ({"padding_free": True}, "padding_free"),
               ({"loss_type": "dft"}, "loss_type='dft'")]


@pytest.mark.parametrize("kind,change,message", [("hf", *r) for r in REFUSED] + [("sft", *r) for r in REFUSED_SFT])
def test_options_it_cannot_honour_are_refused_with_what_to_change(reference, setup, tmp_path, kind, change, message):
    from leadsel.hf import options

    cfg, _, _ = reference
    d, ckpt = setup
    base = dict(output_dir=str(tmp_path), use_cpu=True, report_to="none", save_strategy="no",
                lr_scheduler_type="constant")
    base.update(change)
    if kind == "sft":
        from trl import SFTConfig
        args = SFTConfig(**base)
    else:
        from transformers import TrainingArguments
        args = TrainingArguments(**base)
    with pytest.raises(ValueError, match="cannot honour") as e:
        options.check(args, lead_family=True, own_scheduler=False, sft=kind == "sft")
    assert message in str(e.value)
    assert len(options.refusals(args, lead_family=True, own_scheduler=False, sft=kind == "sft")) == 1


def test_the_trainer_refuses_before_building_anything(reference, setup, tmp_path):
    from transformers import TrainingArguments

    from leadsel.hf import LeadSelection, LeadTrainer

    cfg, _, _ = reference
    with pytest.raises(ValueError, match="compute_loss_func: the loss is leadsel's per-sample loss"):
        LeadTrainer(model=None, args=TrainingArguments(output_dir=str(tmp_path), lr_scheduler_type="constant"),
                    lead=LeadSelection(cfg), compute_loss_func=lambda *a, **k: 0.0)
    assert not (tmp_path / "leadsel").exists()


def test_an_eval_set_is_prepared_and_evaluated_by_the_base_trainer(reference, setup, tmp_path):
    """SFT: TRL prepares the eval set (its chat template, its collator); training batches stay leadsel's."""
    from datasets import Dataset

    cfg, _, _ = reference
    d, ckpt = setup
    held = [json.loads(x) for x in (d / "held.jsonl").read_text().splitlines()]
    ev = Dataset.from_list([{"messages": [{"role": "user", "content": r["instruction"]},
                                          {"role": "assistant", "content": r["output"]}]} for r in held])
    trainer, lead = plugin(cfg, ckpt, tmp_path / "hf", kind="sft", eval_dataset=ev, eval_strategy="epoch")
    trainer.train()
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    assert len(evals) == len(lead.rows) and all(np.isfinite(h["eval_loss"]) for h in evals)
    assert len({h["eval_loss"] for h in evals}) == len(evals)   # each after another round of training


def test_methods_that_score_with_the_trained_model_are_refused(setup, tmp_path):
    from leadsel.hf import LeadSelection

    d, ckpt = setup
    with pytest.raises(ValueError, match="run it with `leadsel run`"):
        LeadSelection(config(d, ckpt, tmp_path, method="iterit"))


def test_the_layout_gives_each_process_leadsels_micro_batches():
    """5 samples, batch 2, accumulation 2, 2 processes: one step; process 0 trains positions 0, 2, 4
    as [0, 2], [4]; process 1 trains 1, 3 as [1, 3] and a micro-batch of filler. accelerate hands
    batch k of the stream to process k mod 2."""
    from leadsel.hf.rows import decode, encode_codes, layout

    steps = layout(5, 2, 2, 2)
    assert steps == [[0, 2, 1, 3, 4, None, None, None]]
    codes = encode_codes(np.array([10, 11, 12, 13, 14]), steps)
    pos, idx = decode(codes)
    assert pos.tolist() == [0, 2, 1, 3, 4, -1, -1, -1]
    assert idx.tolist() == [10, 12, 11, 13, 14, 10, 10, 10]
    assert layout(9, 2, 1, 1) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, None]]


def test_sftconfigs_max_length_replaces_leadsels_only_when_set():
    from trl import SFTConfig

    from leadsel.hf import LeadSFTTrainer

    limit = LeadSFTTrainer._lead_max_length
    assert limit(None, SFTConfig(output_dir="x", use_cpu=True, bf16=False)) is None       # TRL's default 1024
    assert limit(None, SFTConfig(output_dir="x", use_cpu=True, bf16=False, max_length=None)) is None
    assert limit(None, SFTConfig(output_dir="x", use_cpu=True, bf16=False, max_length=256)) == 256


def test_a_stop_in_the_middle_of_a_round_observes_nothing_and_saves_no_checkpoint(reference, setup, tmp_path):
    from transformers import TrainerCallback

    cfg, _, _ = reference
    d, ckpt = setup

    class StopMidRound(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 4:      # rounds of 2, 1, 2 steps: round 3 is cut after its first
                control.should_training_stop = True

    trainer, lead = plugin(cfg, ckpt, tmp_path / "hf", save_strategy="epoch")
    trainer.add_callback(StopMidRound())
    trainer.train()
    assert [r["n_steps"] for r in lead.rows] == [2, 1]
    assert sorted(p.name for p in (tmp_path / "hf").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]

