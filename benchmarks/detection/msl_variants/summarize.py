"""Table of out/<variant>_seed<s>.json and per-channel TP/FP changes against `base`."""
import json
from pathlib import Path

OUT = Path(__file__).parent / "out"
VARIANTS = ["harness_product", "base", "exog", "k5", "k10"]
SEEDS = [7, 8, 9]


def load(v, s):
    p = OUT / f"{v}_seed{s}.json"
    return json.loads(p.read_text()) if p.exists() else None


print("| variant | seed | TP | FP | FN | precision | recall | F1 | alerted | train s | epochs (best) |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for v in VARIANTS:
    rows = [(s, load(v, s)) for s in SEEDS]
    rows = [(s, d) for s, d in rows if d]
    for s, d in rows:
        t = d["training"]
        print(f"| {v} | {s} | {d['tp']} | {d['fp']} | {d['fn']} | {d['precision']:.3f} | {d['recall']:.3f} | "
              f"{d['f1']:.3f} | {d['alerted_fraction']:.3f} | {t.get('seconds', '-')} | "
              f"{t.get('epochs_run', '-')} ({t.get('best_epoch', '-')}) |")
    if rows:
        m = lambda key: sum(d[key] for _, d in rows) / len(rows)
        print(f"| **{v}** | mean | {m('tp'):.1f} | {m('fp'):.1f} | {m('fn'):.1f} | {m('precision'):.3f} | "
              f"{m('recall'):.3f} | **{m('f1'):.3f}** | {m('alerted_fraction'):.3f} | | |")

print("\nPer channel, TP / FP summed over seeds 7-9, where a variant differs from base:")
base = [load("base", s) for s in SEEDS]
for v in ["exog", "k5", "k10"]:
    runs = [load(v, s) for s in SEEDS]
    if not all(runs):
        continue
    changes = []
    for ch in sorted(base[0]["channels"]):
        btp = sum(b["channels"][ch]["tp"] for b in base); bfp = sum(b["channels"][ch]["fp"] for b in base)
        vtp = sum(r["channels"][ch]["tp"] for r in runs); vfp = sum(r["channels"][ch]["fp"] for r in runs)
        if (btp, bfp) != (vtp, vfp):
            changes.append(f"{ch} TP {btp}->{vtp} FP {bfp}->{vfp}")
    print(f"- {v}: " + "; ".join(changes))
