"""Benchmark: text-feature cache size per hour of audio and extraction throughput on CPU, per kind.

    python bench/text_features.py [--hours 0.05] [--threads 1]

Kinds: none (g2p only), bert (a tiny char-vocabulary DeBERTa-v2 on SBV2's path), encoder (a tiny DeBERTa-v2
behind a fast sub-word tokenizer), causal (a tiny Llama; token rows, and token rows + sentence vector), all
random and written locally by tests/test_text_features.py's builders. Prints, per kind, the text cache's
bytes per hour of audio, the feature rows per hour, the extraction throughput (utterances/s of the
featurizer alone, batches of 16) and its FLOPs per utterance; then what 1024-d DeBERTa-v2 large features at
fp16 take per hour, by arithmetic from the measured rows per hour. Works in a temporary directory.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hours", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from fixtures_data import write_tiny_bert
    from test_text_features import write_tiny_deberta_fast, write_tiny_llama

    from model.config import tiny_config
    from model.data import build_builtin_corpus, prepare_data
    from model.data.corpus import read_esd_list
    from model.text.features import TextFeaturizer, spec_of
    from model.text.g2p import g2p

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = build_builtin_corpus(
            tmp / "corpus", args.hours, seed=0, sample_rate=16000, speakers=2, workers=1, progress=False
        )
        items = read_esd_list(corpus.esd_list)[0]
        texts = [g2p(i.text).text for i in items]
        models = {
            "bert": write_tiny_bert(tmp / "bert", texts, hidden=32, layers=3),
            "encoder": write_tiny_deberta_fast(tmp / "deberta", texts, hidden=32),
            "causal": write_tiny_llama(tmp / "llama", texts, hidden=32),
        }
        kinds = {
            "none": {},
            "bert (char DeBERTa, 32-d)": {"text_features": "bert", "bert_model": str(models["bert"])},
            "encoder (sub-word DeBERTa, 32-d)": {"text_features": str(models["encoder"])},
            "causal (Llama, token, 32-d)": {"text_features": str(models["causal"])},
            "causal (Llama, both, 64-d)": {
                "text_features": str(models["causal"]),
                "text_features_level": "both",
            },
        }
        print(
            f"corpus: {len(items)} utterances, {corpus.hours:.4f} h, {sum(len(t) for t in texts)} characters"
        )
        rows_per_h = None
        for name, kw in kinds.items():
            cfg = tiny_config()
            d = cfg.data
            d.corpus, d.cache_dir, d.val_utterances, d.prepare_workers = (
                str(corpus.esd_list),
                str(tmp / "cache"),
                2,
                1,
            )
            for k, v in kw.items():
                setattr(d, k, v)
            p = prepare_data(cfg)
            hours = sum(i.duration for i in p.train_items + p.val_items) / 3600
            size = p.cache.size_bytes()["text"]
            line = f"{name:34s} text cache {size / hours / 2**20:8.2f} MiB/h"
            if kw:
                feat = TextFeaturizer(spec_of(d), device="cpu")
                t0 = time.perf_counter()
                out = feat(texts, batch_size=16)
                dt = time.perf_counter() - t0
                rows = sum(o["bert"].shape[0] for o in out if "bert" in o)
                rows_per_h = rows / corpus.hours
                flops = sum(o["flops"] for o in out) / len(out)
                line += (
                    f"  rows {rows_per_h:9.0f}/h  {len(texts) / dt:7.1f} utt/s  {flops:.3g} FLOPs/utt"
                    f"  params {feat.params}"
                )
            print(line)
        if rows_per_h:
            deberta = rows_per_h * 1024 * 2
            print(
                f"DeBERTa-v2 large (1024-d) at fp16, by arithmetic: {rows_per_h:.0f} rows/h x 1024 x 2 B = "
                f"{deberta / 2**20:.1f} MiB/h (plus the g2p entry, as 'none')"
            )


if __name__ == "__main__":
    main()
