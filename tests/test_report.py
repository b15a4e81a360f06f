"""`leadsel report`: a self-contained report.html for a run and for a comparison, checked as a
person would see it: rendered in headless Chromium, every plot loaded, no script error."""
import base64
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from helpers import overrides

RUN_PLOTS = ("plot-loss", "plot-bandit", "plot-idu", "plot-composition", "plot-heldout", "plot-cost")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def comparison(setup, tmp_path_factory):
    from leadsel.compare import run_comparison
    from leadsel.config import load_config

    d, ckpt = setup
    out = tmp_path_factory.mktemp("report") / "cmp"
    run_comparison(load_config(None, overrides(d, ckpt, out) + [
        "compare.methods=[lead,random]", "compare.seeds=[3,4]", "budget=0.25"]))
    return out


def figures(text: str) -> dict[str, bytes]:
    """id -> the PNG bytes of each embedded plot."""
    found = re.findall(r"<figure id='([\w-]+)'><img alt='[^']*' src='data:image/png;base64,([A-Za-z0-9+/=]+)'>", text)
    return {fid: base64.b64decode(data) for fid, data in found}


def test_moving_average_and_step_losses_by_hand():
    from leadsel.report.plots import Run, _moving, step_losses

    assert np.allclose(_moving(np.array([1.0, 2.0, 3.0, 4.0]), 2), [1.0, 1.5, 2.5, 3.5])
    assert np.allclose(_moving(np.array([1.0, 5.0]), 4), [1.0, 5.0])
    run = Run(dir=None, manifest={}, rows=[{"step_losses": [3.0, 2.0]}, {"step_losses": [1.5]},
                                           {"step_losses": [1.0, 0.5]}])
    losses, starts = step_losses(run)
    assert losses.tolist() == [3.0, 2.0, 1.5, 1.0, 0.5] and starts == [2, 3]


def test_run_report_embeds_every_plot(comparison):
    from leadsel.report import write_report

    run_dir = comparison / "lead-seed3"
    path = write_report(run_dir)
    assert path == run_dir / "report.html"
    text = path.read_text(encoding="utf-8")
    figs = figures(text)
    assert set(figs) == set(RUN_PLOTS)
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 2000 for png in figs.values())
    assert not re.search(r"(src|href)=['\"]?(https?:|//)", text)  # self-contained: nothing fetched
    man = json.loads((run_dir / "run.json").read_text())
    assert f"<td>distinct samples trained</td><td>{man['rounds']['distinct_trained']}</td>" in text
    rows = [json.loads(x) for x in (run_dir / "rounds.jsonl").read_text().splitlines()]
    assert all(r["idu_quantiles"] and len(r["step_losses"]) == r["n_steps"] for r in rows)


def test_the_arms_table_counts_pulls_and_averages_rewards(comparison):
    import pyarrow.parquet as pq

    from leadsel.report.page import arms_table, noise_trained
    from leadsel.report.plots import Run

    run = Run.load(comparison / "lead-seed3")
    rows = [json.loads(x) for x in (run.dir / "rounds.jsonl").read_text().splitlines()]
    cluster = pq.read_table(run.dir / "scores.parquet").column("cluster").to_pylist()
    text = arms_table(run)
    for k in range(max(cluster) + 1):   # per arm: pool samples, pulls, mean raw and scaled reward
        mine = [r for r in rows if r["arm"] == k]
        raw = f"{np.mean([r['reward'] for r in mine]):.4f}" if mine else "–"
        scaled = f"{np.mean([r['reward_norm'] for r in mine]):+.3f}" if mine else "–"
        assert f"<tr><td>{k}</td><td>{cluster.count(k)}</td><td>{len(mine)}</td><td>{raw}</td><td>{scaled}</td></tr>" in text
    assert "planted noise" not in text and noise_trained(run) is None   # this pool has none
    # planted noise: marked ids, two of the three trained ones
    fake = Run(dir=run.dir, manifest=run.manifest, rows=rows[:1],
               scores={"id": np.array(["a~swapped", "b", "c~swapped", "d~swapped"]), "cluster": np.array([0, 0, 1, 1]),
                       "times_used": np.array([1, 1, 2, 0])})
    assert noise_trained(fake) == "66.7% (pool: 75.0%)"
    assert "<th>planted noise</th>" in arms_table(fake) and "<td>0</td><td>2</td><td>50%</td>" in arms_table(fake)
    assert arms_table(Run(dir=run.dir, manifest={}, rows=[], scores={})) == ""


def test_a_static_run_says_what_it_lacks(comparison):
    from leadsel.report import write_report

    text = write_report(comparison / "random-seed3", comparison / "random.html").read_text(encoding="utf-8")
    figs = figures(text)
    assert set(figs) == {"plot-loss", "plot-composition", "plot-heldout", "plot-cost"}
    assert "random uses no bandit." in text and "This method keeps no IDU." in text


def test_comparison_report_holds_the_table_and_every_plot(comparison):
    from leadsel.report import write_report

    text = write_report(comparison).read_text(encoding="utf-8")
    assert set(figures(text)) == set(RUN_PLOTS)
    assert "<td>lead</td><td>2</td>" in text and "<td>random</td><td>2</td>" in text and "<td>base</td>" in text
    assert text.index("<td>lead</td>") < text.index("<td>random</td>")  # compare.methods order


def test_report_of_a_non_run_is_a_clear_error(tmp_path, capsys):
    from leadsel.cli import main

    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "neither a run directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "holds no finished run" in capsys.readouterr().err


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (make test installs it when run as root)")
@pytest.mark.parametrize("which", ["lead-seed3", "."])
def test_report_renders_in_headless_chromium(comparison, tmp_path, which):
    from leadsel.report import write_report

    page = write_report(comparison / which, tmp_path / "report.html")
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(flags + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    body = re.search(r"<body[^>]*>", dom.stdout)
    assert body, dom.stderr[-2000:]
    attrs = dict(re.findall(r'data-([\w-]+)="([^"]*)"', body.group(0)))
    assert attrs.get("plots") == attrs.get("plots-ok") == str(len(RUN_PLOTS)), attrs
    assert "errors" not in attrs  # no script error on the page
    assert f"{len(RUN_PLOTS)} of {len(RUN_PLOTS)} plots rendered" in dom.stdout
    shot = tmp_path / "shot.png"
    subprocess.run(flags + ["--window-size=1200,3000", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 50_000
