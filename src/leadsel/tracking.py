"""Metrics to TensorBoard through accelerate's trackers, when ``report_to: tensorboard``.

Nothing is logged by default. With ``report_to: tensorboard`` the session's Accelerator is made
with ``log_with="tensorboard"`` and ``project_dir=<output_dir>/logs``; the run then logs, on the
optimizer-step axis: ``train/loss``, ``train/lr``, ``train/grad_norm`` per step; ``round/*`` per
round (the numeric fields of its rounds.jsonl row: mean loss, distinct samples so far, arm,
reward, D, ...); ``eval_base/<set>`` and ``eval/<set>`` (held-out loss per sample) at the start and
end. Open them with ``tensorboard --logdir <output_dir>/logs``. A resumed run appends to them.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .schema import to_dict

if TYPE_CHECKING:  # types only: the session imports this module
    from .session import Session

ROUND_KEYS = ("mean_loss", "unique_used", "n_selected", "arm", "reward", "reward_norm", "D", "beta", "cos_phi",
              "delta", "n_new", "mean_idu_before", "seconds")


def accelerator_kwargs(cfg, run_dir) -> dict:
    if cfg.report_to == "none":
        return {}
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        try:
            import tensorboardX  # noqa: F401
        except ImportError:
            raise RuntimeError("report_to: tensorboard needs the tensorboard package: "
                               "pip install 'leadsel[tensorboard]'") from None
    return {"log_with": cfg.report_to, "project_dir": str(run_dir / "logs")}


def _flat(d: dict, prefix: str = "") -> dict:
    """A config as the scalar hyper-parameters TensorBoard accepts (lists and None as text)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (bool, int, float, str)) else str(v)
    return out


def start(s: Session) -> None:
    if s.cfg.report_to != "none":
        s.accelerator.init_trackers(f"{s.cfg.method}-seed{s.cfg.seed}", config=_flat(to_dict(s.cfg)))


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def log_round(s: Session, row: dict, steps: list, last_step: int) -> None:
    """One round: its optimizer steps (the last is ``last_step``), then its row's numbers."""
    if s.cfg.report_to == "none":
        return
    first = last_step - len(steps)
    for i, st in enumerate(steps):
        s.accelerator.log({"train/loss": st.loss, "train/lr": st.lr, "train/grad_norm": st.grad_norm},
                          step=first + i + 1)
    s.accelerator.log({f"round/{k}": row[k] for k in ROUND_KEYS if _num(row.get(k))}, step=last_step)


def log_eval(s: Session, prefix: str, ev: dict | None, step: int) -> None:
    if s.cfg.report_to != "none" and ev:
        s.accelerator.log({f"{prefix}/{name}": v["loss_per_sample"] for name, v in ev.items()}, step=step)


def finish(s: Session) -> None:
    """Close the trackers (not accelerate's end_training, which also ends the process group)."""
    for t in getattr(s.accelerator, "trackers", []):
        t.finish()
