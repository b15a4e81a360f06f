"""The layout's promises: one registry of methods that the config agrees with, dataclasses that
check their own fields wherever they are used, imports that run one way, pure-numpy selection
code, and docs whose paths resolve and whose layout names every module."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "leadsel"


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for f in sorted(SRC.rglob("*.py")):
        parts = f.relative_to(SRC.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


# ---------------------------------------------------------------------------------------------- methods
def test_the_configs_methods_and_the_registry_agree():
    from leadsel.schema import CompareConfig, MethodName, RunConfig
    from leadsel.select import METHODS

    assert set(typing.get_args(MethodName)) == set(METHODS)
    hints = typing.get_type_hints(RunConfig)
    assert hints["method"] is MethodName
    # compare.methods: a method or a variant's name, checked by CompareConfig.check (one_seed: within methods)
    assert typing.get_type_hints(CompareConfig)["methods"] == list[str]
    for name, m in METHODS.items():
        assert m.name == name and callable(m.build)


def test_what_the_registry_says_of_each_method():
    """needs, texts and known length, as the methods' specs say (docs/methods.md)."""
    from leadsel.config import load_config
    from leadsel.select import METHODS, needs, needs_text

    def of(method, *more):
        return load_config(None, [f"method={method}", *more])

    assert needs(of("lead")) == {"u0", "ifd"}
    assert needs(of("lead", "lead.cluster_features=both")) == {"u0", "ifd", "emb"}
    assert needs(of("lead-no-idu", "lead.cluster_features=embedding")) == {"u0", "emb"}
    assert {m: needs(of(m)) for m in ("random", "full", "ifd", "loss", "less", "iterit", "dynamic", "clusterucb")} == {
        "random": set(), "full": set(), "ifd": {"ifd"}, "loss": {"u0"}, "less": {"less"},
        "iterit": {"u0", "ifd_base"}, "dynamic": set(), "clusterucb": set()}
    assert [m for m in METHODS if needs_text(of(m))] == ["iterit"]
    assert sorted(m for m, e in METHODS.items() if not e.fixed_length) == [
        "lead", "lead-no-bandit", "lead-no-idu", "lead-no-task"]


def test_the_lead_ablations_change_only_their_setting():
    from leadsel.config import load_config
    from leadsel.select.lead import lead_settings

    base = lead_settings(load_config(None, ["method=lead"]))
    assert lead_settings(load_config(None, ["method=lead-no-idu"])) == type(base)(**{**vars(base), "idu": False})
    assert lead_settings(load_config(None, ["method=lead-no-task"])).stratify is False
    no_bandit = lead_settings(load_config(None, ["method=lead-no-bandit"]))
    assert no_bandit.bandit.name == "uniform" and no_bandit.bandit.gamma == base.bandit.gamma


def test_every_selector_declares_the_protocol():
    from leadsel.select.base import Selector
    from leadsel.select.iterit import IterITSelector
    from leadsel.select.lead import LeadSelector
    from leadsel.select.static import StaticSelector
    from leadsel.select.targeted import TargetedSelector

    for cls in (LeadSelector, StaticSelector, IterITSelector, TargetedSelector):
        assert Selector in cls.__mro__, cls
    assert "planned_samples" in Selector.__annotations__
    assert LeadSelector.planned_samples is None


# ---------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("key", ["train.per_device_batch_size", "warmup.train.per_device_batch_size"])
def test_a_dataclass_used_twice_is_checked_in_both_places(key):
    from leadsel.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=f"^{re.escape(key)}: 0 must be >= 1$"):
        load_config(None, [f"{key}=0"])


def test_warmup_train_choices_are_checked():
    from leadsel.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"^warmup.train.lr_scheduler: 'cosinus' is not one of constant, linear"):
        load_config(None, ["warmup.train.lr_scheduler=cosinus"])


def test_a_dataclass_built_in_python_is_checked_too():
    from leadsel.schema import CompareConfig, ConfigError, LeadConfig, TrainConfig

    with pytest.raises(ConfigError, match="^gradient_accumulation_steps: 0 must be >= 1$"):
        TrainConfig(gradient_accumulation_steps=0)
    with pytest.raises(ConfigError, match="^sampling: 'greedy' is not one of topk, softmax$"):
        LeadConfig(sampling="greedy")
    with pytest.raises(ConfigError, match=r"^methods: 'nope' is not one of lead, random"):
        CompareConfig(methods=["lead", "nope"])
    with pytest.raises(ConfigError, match="^one_seed: 'full' is not in compare.methods$"):
        CompareConfig(methods=["lead"], one_seed=["full"])


def test_the_schemas_choices_agree_with_the_code_that_takes_them():
    from leadsel.bandit import BANDITS
    from leadsel.data.formats import FORMATS
    from leadsel.data.load import ON_ERROR
    from leadsel.schema import BanditConfig, DataConfig, GradsConfig, TargetedConfig, choices_of
    from leadsel.scoring.grads import ADAM_VARIANTS
    from leadsel.select.clusterucb_core import POLICIES

    def choices(cls, name):
        return set(choices_of(typing.get_type_hints(cls)[name]))

    assert choices(BanditConfig, "name") == set(BANDITS)
    assert choices(TargetedConfig, "policy") == set(POLICIES)
    assert choices(GradsConfig, "adam_variant") == set(ADAM_VARIANTS)
    assert choices(DataConfig, "on_error") == set(ON_ERROR)
    assert choices(DataConfig, "format") == {"auto", *FORMATS}


@pytest.mark.parametrize("override, message", [
    ("compare.methods=[lead,nope]", "compare.methods: 'nope' is not one of lead, random"),
    ("compare.methods=[]", "compare.methods and compare.seeds must not be empty"),
    ("compare.one_seed=[nope]", "compare.one_seed: 'nope' is not in compare.methods"),
    ("data.format=1", "data.format: expected str, got 1"),
    ("encoding.supervise=true", "encoding.supervise: expected str, got True"),
    ("method=bogus", "method: 'bogus' is not one of lead, random"),
])
def test_the_loaders_messages_are_those_it_always_gave(override, message):
    from leadsel.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        load_config(None, [override])


def test_the_schema_does_not_import_the_loader_or_the_data_builder():
    code = ("import sys, leadsel.schema; bad = [m for m in ('leadsel.config', 'leadsel.data.bundled', 'yaml') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


# ---------------------------------------------------------------------------------------------- imports
def own_imports(name: str, path: Path) -> set[str]:
    """leadsel modules ``name`` imports at module level (not inside functions, not for types only)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    known = modules()
    out = set()

    def visit(body):
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, (ast.If, ast.Try)):
                visit(node.body + getattr(node, "orelse", []) + sum((h.body for h in getattr(node, "handlers", [])), []))
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names if a.name.startswith("leadsel"))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                if not mod.startswith("leadsel"):
                    continue
                subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in known]
                out.update(subs or [mod])

    visit(tree.body)
    return out - {name}


def test_no_import_cycle():
    graph = {name: own_imports(name, path) for name, path in modules().items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(v):
        state[v] = 1
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(w):] + [w]))
            if w not in state:
                dfs(w)
        stack.pop()
        state[v] = 2

    for v in sorted(graph):
        if v not in state:
            dfs(v)


def test_scoring_takes_its_precision_from_model_not_from_the_trainer():
    for name, path in modules().items():
        if name.startswith("leadsel.scoring."):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.endswith("train.trainer"):
                    assert "autocast" not in [a.name for a in node.names], name


def test_selection_logic_never_imports_torch():
    """Every selection module, the bandits, the random streams, the numeric helpers, the schema and
    the projections are plain numpy (docs/development.md): importing them pulls no torch."""
    names = [n for n in modules() if n.startswith("leadsel.select")] + [
        "leadsel.bandit", "leadsel.rng", "leadsel.numeric", "leadsel.schema", "leadsel.scoring.projection"]
    assert {"leadsel.select.iterit_core", "leadsel.select.clusterucb_core", "leadsel.select.targeted",
            "leadsel.select.spherical_kmeans", "leadsel.select.registry"} <= set(names)
    for name in names:
        code = f"import sys, {name}; sys.exit(1 if 'torch' in sys.modules else 0)"
        assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0, f"{name} imports torch"


# ---------------------------------------------------------------------------------------------- docs
def docs_texts() -> dict[Path, str]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(SRC.rglob("*.py"))]
    return {f: f.read_text(encoding="utf-8") for f in files}


def test_every_docs_path_named_in_the_code_and_docs_exists():
    named = {(f.relative_to(ROOT), m) for f, text in docs_texts().items()
             for m in re.findall(r"docs/[\w./-]*\w\.md", text)}
    assert len(named) > 10  # the pattern finds the references (README, sources, docs)
    missing = sorted(f"{where}: {m}" for where, m in named if not (ROOT / m).is_file())
    assert not missing, missing


def test_no_reference_to_files_users_do_not_have():
    for f, text in docs_texts().items():
        for bad in ("ALGORITHMS.md", "TESTBED.md", "DESIGN.md", "shared/"):
            assert bad not in text, f"{f.relative_to(ROOT)} names {bad}"


def test_the_development_layout_names_every_module():
    text = (ROOT / "docs" / "development.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\* `([\w/]+\.py)` — ", text, re.M))  # the layout's lines: * `path` — what
    files = {str(f.relative_to(SRC)) for f in SRC.rglob("*.py")}
    assert files - listed == set(), f"not in docs/development.md: {sorted(files - listed)}"
    assert listed - files == set(), f"docs/development.md names modules that do not exist: {sorted(listed - files)}"


def test_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200
    text = "\n".join(lines)
    assert "make test" in text and "make demo" in text
