"""Config: YAML + overrides, strict keys and types, the commented listing."""
import dataclasses
from pathlib import Path

import pytest
import yaml

from leadsel.config import ConfigError, RunConfig, commented_yaml, field_docs, load_config
from leadsel.rundir import config_diff

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("seed: 7\ntrain:\n  learning_rate: 1e-3\n  epochs: 2\ndata:\n  paths: [a.jsonl]\n")
    cfg = load_config(p, ["train.epochs=3", "model.lora.r=8", "data.bundled.mix={sharegpt: 1}",
                          "encoding.template=chatml", "train.max_grad_norm=null"])
    assert cfg.seed == 7 and cfg.train.learning_rate == 1e-3 and cfg.train.epochs == 3
    assert cfg.model.lora.r == 8 and cfg.data.paths == ["a.jsonl"] and cfg.data.bundled.mix == {"sharegpt": 1.0}
    assert cfg.encoding.template == "chatml" and cfg.train.max_grad_norm is None
    assert isinstance(cfg.train.learning_rate, float)
    assert load_config(None, ["train.learning_rate=1"]).train.learning_rate == 1.0  # int widened


@pytest.mark.parametrize("override, message", [
    ("train.lr=1", "unknown config key 'train.lr'"),
    ("trian.epochs=1", "unknown config key 'trian' (did you mean 'train'?)"),
    ("model.lora.alpah=4", "unknown config key 'model.lora.alpah' (did you mean 'model.lora.alpha'?)"),
    ("train.epochs=abc", "train.epochs: expected int, got 'abc'"),
    ("train.epochs=true", "train.epochs: expected int, got True"),
    ("data.paths=a.jsonl", "data.paths: expected a list"),
    ("data.bundled.mix={sharegpt: x}", "data.bundled.mix.sharegpt: expected float"),
    ("model.finetuning=qlora", "model.finetuning: 'qlora' is not one of lora, full"),
    ("train=3", "train: expected a mapping of TrainConfig fields"),
    ("noequals", "is not of the form key=value"),
])
def test_errors_name_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert message in str(e.value)


def test_unknown_key_in_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("scoring:\n  batch_token: 10\n")
    with pytest.raises(ConfigError, match="unknown config key 'scoring.batch_token'"):
        load_config(p)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_every_field_is_documented_and_the_listing_round_trips():
    import typing

    docs = field_docs()
    missing = []

    def walk(cls, prefix):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], prefix + f.name + ".")
            elif prefix + f.name not in docs:
                missing.append(prefix + f.name)

    walk(RunConfig, "")
    assert missing == []
    text = commented_yaml()
    assert load_config(None, []) == RunConfig()
    assert yaml.safe_load(text)["train"]["learning_rate"] == RunConfig().train.learning_rate


def test_shipped_configs_load():
    for p in sorted(CONFIGS.glob("*.yaml")):
        load_config(p)
    full = yaml.safe_load((CONFIGS / "full.yaml").read_text())
    assert full == yaml.safe_load(commented_yaml())  # the listing is current


def test_the_benchmarks_configs_share_their_settings():
    """sweep-small chooses on the runs bench-small reports (the same settings, so the same runs);
    bench-large differs from bench-small only in the pool's size and champ's share of it (its 145 short
    samples cannot fill 7% of 1,000 beside its eval and val splits), LEAD's clusters and rate, and the curve's top."""
    sweep, small, large = (dataclasses.asdict(load_config(CONFIGS / f"{n}.yaml"))
                           for n in ("sweep-small", "bench-small", "bench-large"))
    assert config_diff(sweep, small) == []   # compare and output_dir are not compared; the rest is equal
    assert sweep["output_dir"] == small["output_dir"]
    assert config_diff(small, large) == ["data.bundled.mix.champ: 0.07 -> 0.065", "data.bundled.mix.sharegpt: 0.63 -> 0.635",
                                         "data.bundled.size: 500 -> 1000", "lead.clusters: 5 -> 7", "lead.rate: 0.05 -> 0.03"]
    assert small["evaluate_val"] and small["compare"]["reference"] == "full" and sweep["compare"]["reference"] == "full"
    for bench in (small, large):   # a row two configs run is the same row: the same settings
        for name, overrides in bench["compare"]["variants"].items():
            if name in sweep["compare"]["variants"]:
                assert overrides == sweep["compare"]["variants"][name]
    assert "lead-all" in small["compare"]["methods"]


def test_the_preset_is_the_row_the_sweep_chose():
    """configs/lead-tuned.yaml is sweep-small's settings with its chosen row's overrides (the row
    with the highest mean val share of gain: lead-all-softmax), and bench-small runs that row."""
    chosen = load_config(CONFIGS / "sweep-small.yaml").compare.variants["lead-all-softmax"]
    as_swept = dataclasses.asdict(load_config(CONFIGS / "sweep-small.yaml", chosen))
    preset = dataclasses.asdict(load_config(CONFIGS / "lead-tuned.yaml"))
    assert config_diff(as_swept, preset) == []
    assert preset["lead"]["sampling"] == "softmax" and preset["lead"]["reward"] == "detrended"
    assert "lead-all-softmax" in load_config(CONFIGS / "bench-small.yaml").compare.methods
