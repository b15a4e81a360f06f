"""lm-evaluation-harness on a model held in memory (`leadsel eval RUN_DIR --harness`), offline: local
tasks written here (JSONL data, `dataset_path: json`), scored by lm-eval and checked against the
log-likelihoods computed here with torch; the record's settings; the clear errors."""
import json
import math
import os
import sys

import pytest
import yaml

from helpers import make_llama, make_tokenizer
from helpers import config

SHOT = {"question": "hello there", "choices": ["hi", "two", "e"], "label": 0}
DOCS = [{"question": "what is two plus two", "choices": ["four", "five", "six"], "label": 0},
        {"question": "hi how are you", "choices": ["fine thanks", "a b", "seven"], "label": 0},
        {"question": "what is one plus two", "choices": ["two", "three", "four"], "label": 1},
        {"question": "hello there", "choices": ["hi", "hello", "a"], "label": 0},
        {"question": "what is three plus three", "choices": ["five", "six", "seven"], "label": 1}]
LL_DOCS = [{"question": "what is two plus two", "answer": "four"},
           {"question": "hi how are you", "answer": "fine thanks"},
           {"question": "what is one plus one", "answer": "two"}]
MC, LL = "leadsel_tiny_mc", "leadsel_tiny_ll"


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def tasks(tmp_path):
    """A folder with two local tasks: 5-doc multiple choice (few-shot example: the first of a
    1-doc train split) and 3-doc log-likelihood; data in JSONL, datasets' cache in tmp_path."""
    d = tmp_path / "tasks"
    d.mkdir()
    cache = str(tmp_path / "hf-datasets")
    train, test = write_jsonl(tmp_path / "train.jsonl", [SHOT]), write_jsonl(tmp_path / "test.jsonl", DOCS)
    mc = {"task": MC, "dataset_path": "json",
          "dataset_kwargs": {"data_files": {"train": train, "test": test}, "cache_dir": cache},
          "training_split": "train", "test_split": "test", "fewshot_split": "train",
          "fewshot_config": {"sampler": "first_n"}, "output_type": "multiple_choice",
          "doc_to_text": "{{question}}", "doc_to_choice": "{{choices}}", "doc_to_target": "{{label}}",
          "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                          {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}],
          "metadata": {"version": 2.0}}
    ll = {"task": LL, "dataset_path": "json",
          "dataset_kwargs": {"data_files": {"test": write_jsonl(tmp_path / "ll.jsonl", LL_DOCS)}, "cache_dir": cache},
          "test_split": "test", "output_type": "loglikelihood", "doc_to_text": "{{question}}",
          "doc_to_target": " {{answer}}", "num_fewshot": 0,
          "metric_list": [{"metric": "perplexity", "aggregation": "perplexity", "higher_is_better": False}],
          "metadata": {"version": 1.0}}
    (d / "mc.yaml").write_text(yaml.safe_dump(mc, sort_keys=False))
    (d / "ll.yaml").write_text(yaml.safe_dump(ll, sort_keys=False))
    return d


@pytest.fixture
def lm_eval():
    return pytest.importorskip("lm_eval")


def loglik(model, tok, context: str, continuation: str) -> float:
    """log p(continuation | context), summed over the continuation's tokens."""
    import torch

    ctx = tok(context, add_special_tokens=False)["input_ids"]
    cont = tok(continuation, add_special_tokens=False)["input_ids"]
    assert ctx and cont and tok.unk_token_id not in ctx + cont
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ctx + cont])).logits.float(), dim=-1)[0]
    return float(sum(logp[len(ctx) - 1 + i, t] for i, t in enumerate(cont)))


def by_hand(model, tok, docs, context_of):
    """(acc, acc_norm) from the model's own log-likelihoods of each choice."""
    acc = norm = 0
    for doc in docs:
        ctx, choices = context_of(doc)
        lls = [loglik(model, tok, ctx, choice) for choice in choices]
        acc += max(range(len(lls)), key=lambda i: lls[i]) == doc["label"]
        scaled = [x / len(c.strip()) for x, c in zip(lls, choices)]
        norm += max(range(len(lls)), key=lambda i: scaled[i]) == doc["label"]
    return acc / len(docs), norm / len(docs)


def one_shot(doc):
    shot = f"{SHOT['question']} {SHOT['choices'][SHOT['label']]}"
    return f"{shot}\n\n{doc['question']}", [" " + c for c in doc["choices"]]


def lora_model(seed=0):
    """A tiny Llama with a LoRA adapter whose weights are not zero (so the adapter matters)."""
    import torch
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(make_llama(seed=seed), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return model.eval()


def test_a_peft_model_in_memory_gets_the_accuracy_computed_by_hand(lm_eval, tasks):
    from importlib.metadata import version

    from leadsel.eval.harness import harness_eval

    model, tok = lora_model(), make_tokenizer()
    model.train()  # harness_eval puts it back in the mode it found it in
    env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    rec = harness_eval(model, tok, MC, num_fewshot=1, batch_size=4, include_path=tasks)
    assert model.training
    assert {k: os.environ.get(k) for k in env} == env  # offline only for the call
    model.eval()
    acc, acc_norm = by_hand(model, tok, DOCS, one_shot)
    task = rec["tasks"][MC]
    m = task["metrics"]
    assert 0 <= m["acc"] <= 1 and m["acc"] == pytest.approx(acc, abs=1e-9)
    assert m["acc_norm"] == pytest.approx(acc_norm, abs=1e-9)
    assert m["acc_stderr"] == pytest.approx(math.sqrt(acc * (1 - acc) / (len(DOCS) - 1)), abs=1e-9)
    assert task["n_shot"] == 1 and task["version"] == 2.0
    assert task["n_samples"] == {"original": 5, "effective": 5}
    assert rec["lm_eval"] == version("lm_eval") == lm_eval.__version__
    assert rec["apply_chat_template"] is False and rec["fewshot_as_multiturn"] is None
    assert rec["num_fewshot"] == 1 and rec["limit"] is None and rec["batch_size"] == 4
    assert rec["precision"] == "fp32" and rec["device"] == "cpu" and rec["offline"] is True
    assert rec["model"]["peft"] is True and "not merged" in rec["model"]["passed_as"]
    assert rec["include_path"] == [str(tasks.resolve())] and rec["builtin_tasks_indexed"] is False
    json.dumps(rec, allow_nan=False)  # a plain JSON record


def test_the_adapter_is_active_and_the_base_model_scores_differently(lm_eval, tasks):
    """The same docs under the adapter and under the bare base model: lm-eval's perplexity
    follows the model it was handed, exactly as computed here."""
    from leadsel.eval.harness import harness_eval

    tok = make_tokenizer()
    model = lora_model()
    rec = harness_eval(model, tok, LL, include_path=tasks, bootstrap_iters=0)
    base = make_llama(seed=0)
    rec_base = harness_eval(base, tok, LL, include_path=tasks, bootstrap_iters=0)

    def ppl(m):
        return math.exp(-sum(loglik(m, tok, d["question"], " " + d["answer"]) for d in LL_DOCS) / len(LL_DOCS))

    assert rec["tasks"][LL]["metrics"]["perplexity"] == pytest.approx(ppl(model), rel=1e-5)
    assert rec_base["tasks"][LL]["metrics"]["perplexity"] == pytest.approx(ppl(base), rel=1e-5)
    assert abs(rec["tasks"][LL]["metrics"]["perplexity"] - rec_base["tasks"][LL]["metrics"]["perplexity"]) > 1e-3
    assert rec["tasks"][LL]["n_shot"] == 0 and rec["model"]["peft"] and not rec_base["model"]["peft"]

    # bf16: forward passes under bf16 autocast (fp32 weights), as leadsel's own passes
    import torch

    rec16 = harness_eval(model, tok, LL, include_path=tasks, bootstrap_iters=0, precision="bf16")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = ppl(model)
    assert rec16["precision"] == "bf16" and next(model.parameters()).dtype == torch.float32
    assert rec16["tasks"][LL]["metrics"]["perplexity"] == pytest.approx(want, rel=1e-5)
    assert rec16["tasks"][LL]["metrics"]["perplexity"] != pytest.approx(rec["tasks"][LL]["metrics"]["perplexity"],
                                                                        rel=1e-5)  # so autocast was on


def test_chat_template_and_limit(lm_eval, tasks):
    from leadsel.eval.harness import harness_eval

    model, tok = make_llama(seed=3), make_tokenizer()
    rec = harness_eval(model, tok, [MC], num_fewshot=0, limit=3, batch_size=2, apply_chat_template=True,
                       include_path=str(tasks))

    def chat(doc):  # with a chat template lm-eval drops the target delimiter (no gen_prefix)
        ctx = tok.apply_chat_template([{"role": "user", "content": doc["question"]}], tokenize=False,
                                      add_generation_prompt=True)
        return ctx, doc["choices"]

    acc, _ = by_hand(model, tok, DOCS[:3], chat)
    task = rec["tasks"][MC]
    assert task["metrics"]["acc"] == pytest.approx(acc, abs=1e-9)
    assert task["n_shot"] == 0 and task["n_samples"] == {"original": 5, "effective": 3}
    assert rec["apply_chat_template"] is True and rec["fewshot_as_multiturn"] is True and rec["limit"] == 3


def test_clear_errors(lm_eval, tasks, tmp_path):
    from leadsel.eval.harness import HarnessError, harness_eval, prepare_tasks

    with pytest.raises(ValueError, match=r"unknown harness task 'leadsel_tiny_mcq'.*did you mean leadsel_tiny_mc"):
        prepare_tasks("leadsel_tiny_mcq", include_path=tasks, builtin_index=False)
    hub = tmp_path / "hub"
    hub.mkdir()
    (hub / "hub.yaml").write_text(yaml.safe_dump({
        "task": "leadsel_hub_task", "dataset_path": "leadsel-tests/no-such-dataset", "test_split": "test",
        "output_type": "multiple_choice", "doc_to_text": "{{q}}", "doc_to_choice": "{{c}}", "doc_to_target": 0,
        "dataset_kwargs": {"cache_dir": str(tmp_path / "hf-datasets")}}))
    before = os.environ.get("HF_HUB_OFFLINE")
    with pytest.raises(HarnessError) as e:
        prepare_tasks("leadsel_hub_task", include_path=hub)
    msg = str(e.value)
    assert "'leadsel_hub_task'" in msg and "leadsel-tests/no-such-dataset" in msg and "Hugging Face hub" in msg
    assert "offline" in msg and "--harness-include" in msg
    assert os.environ.get("HF_HUB_OFFLINE") == before
    with pytest.raises(FileNotFoundError, match="harness-include"):
        prepare_tasks(MC, include_path=tmp_path / "missing")
    with pytest.raises(ValueError, match="no chat template"):
        tok = make_tokenizer()
        tok.chat_template = None
        harness_eval(make_llama(), tok, MC, include_path=tasks, apply_chat_template=True)


def test_offline_switches_the_imported_libraries_off_the_hub_and_back(lm_eval, monkeypatch):
    import datasets
    import huggingface_hub

    from leadsel.eval.harness import offline

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")  # the user's setting loses inside, comes back after
    was_hub, was_ds = huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    with offline():
        assert huggingface_hub.constants.is_offline_mode() and datasets.config.HF_HUB_OFFLINE
        assert os.environ["HF_HUB_OFFLINE"] == os.environ["HF_DATASETS_OFFLINE"] == "1"
    assert "HF_HUB_OFFLINE" not in os.environ and os.environ["HF_DATASETS_OFFLINE"] == "0"
    assert (huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE) == (was_hub, was_ds)
    monkeypatch.setenv("LEADSEL_ALLOW_DOWNLOAD", "1")  # --allow-download: the user's settings stand
    with offline():
        assert os.environ["HF_DATASETS_OFFLINE"] == "0" and "HF_HUB_OFFLINE" not in os.environ


def test_without_lm_eval_the_error_says_what_to_install(monkeypatch):
    from leadsel.eval.harness import HarnessError, harness_eval

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # as if not installed
    with pytest.raises(HarnessError, match=r"^the harness needs lm-eval: pip install 'leadsel\[eval\]'$"):
        harness_eval(make_llama(), make_tokenizer(), MC)


def test_eval_command_adds_the_harness_to_a_finished_run(lm_eval, setup, tasks, tmp_path, capsys):
    """`evaluate_run(harness=...)` scores the run's trained adapter in memory; eval.json and run.json
    gain "harness"; the CLI: --no-heldout keeps the losses, user errors without tracebacks."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from leadsel.cli import main
    from leadsel.eval.heldout import evaluate_run
    from leadsel.runner import run

    d, ckpt = setup
    run_dir = tmp_path / "run"
    run(config(d, ckpt, run_dir, method="random"))
    first = json.loads((run_dir / "eval.json").read_text())
    rec = evaluate_run(run_dir, harness={"tasks": f"{LL},{MC}", "include_path": tasks, "num_fewshot": 1,
                                         "batch_size": 3, "bootstrap_iters": 0})
    on_disk = json.loads((run_dir / "eval.json").read_text())
    man = json.loads((run_dir / "run.json").read_text())
    assert on_disk == json.loads(json.dumps(rec)) and man["eval"]["harness"] == on_disk["harness"]
    assert on_disk["trained"]["held"]["loss_per_sample"] == pytest.approx(first["trained"]["held"]["loss_per_sample"],
                                                                          abs=1e-6)
    h = on_disk["harness"]
    assert set(h["tasks"]) == {LL, MC} and h["tasks"][MC]["n_shot"] == 1
    assert h["tasks"][LL]["n_shot"] == 0  # the task's own num_fewshot: 0 wins, as in lm-eval
    assert h["precision"] == "fp32" and h["template"] == "chatml" and h["model"]["peft"]
    assert h["trained_fingerprint"] == on_disk["trained_fingerprint"]

    tok = make_tokenizer()
    trained = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32),
                                        str(run_dir / "model")).eval()
    base = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()

    def ppl(m):
        return math.exp(-sum(loglik(m, tok, x["question"], " " + x["answer"]) for x in LL_DOCS) / len(LL_DOCS))

    assert h["tasks"][LL]["metrics"]["perplexity"] == pytest.approx(ppl(trained), rel=1e-5)
    assert abs(ppl(trained) - ppl(base)) > 1e-4  # so it was the trained adapter that lm-eval scored
    acc, _ = by_hand(trained, tok, DOCS, one_shot)
    assert h["tasks"][MC]["metrics"]["acc"] == pytest.approx(acc, abs=1e-9)

    # the CLI: harness only, with the chat template and a limit; the held-out losses stay
    code = main(["eval", str(run_dir), "--harness", MC, "--harness-include", str(tasks), "--no-heldout",
                 "--chat-template", "--harness-limit", "2", "--harness-batch-size", "2"])
    out = capsys.readouterr().out
    assert code == 0 and MC in out and "acc" in out
    again = json.loads((run_dir / "eval.json").read_text())
    assert again["trained"] == on_disk["trained"] and again["base"] == on_disk["base"]
    assert set(again["harness"]["tasks"]) == {MC} and again["harness"]["apply_chat_template"] is True
    assert again["harness"]["limit"] == 2 and again["harness"]["tasks"][MC]["n_samples"]["effective"] == 2
    assert json.loads((run_dir / "run.json").read_text())["eval"]["harness"] == again["harness"]

    for args, says in ((["--num-fewshot", "1"], "only go with --harness"),
                       (["--harness", MC, "--harness-include", str(tmp_path / "nowhere")], "not a folder"),
                       (["--harness", MC, "--harness-include", str(tasks), "--no-heldout", "--extra", str(d / "held.jsonl")],
                        "does not go with --no-heldout")):
        code = main(["eval", str(run_dir), *args])
        err = capsys.readouterr().err
        assert code == 2 and says in err and "Traceback" not in err
