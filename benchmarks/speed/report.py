"""The markdown table and PNG chart of every benchmark result of one device in a results folder."""

from __future__ import annotations

import json
from pathlib import Path


def load_results(out: Path, device: str) -> list[dict]:
    """Records `<out>/<device>-*.json`, ordered by shape size then batch size."""
    records = [json.loads(p.read_text()) for p in sorted(Path(out).glob(f"{device}-*.json"))]
    return sorted(records, key=lambda r: (r["data"]["interactions"], r["spec"]["batch_rows"]))


def markdown(records: list[dict]) -> str:
    """One table per (shape, batch): s/epoch, ratios, floor, loss check, memory, inference."""
    if not records:
        return "No results.\n"
    first = records[0]
    lines = [f"# Training benchmark: {first['machine'].get('gpu', first['machine']['cpu'])}", "",
             f"Machine: {first['machine']['cpu']}, {first['machine']['cores']} cores"
             + (f", GPU {first['machine']['gpu']}" if "gpu" in first["machine"] else "")
             + (f"; {first['machine']['allocator']}" if "allocator" in first["machine"] else "") + ".  ",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in first["versions"].items()) + ".  ",
             "Commands: " + "; ".join(f"`{c}`" for c in dict.fromkeys(r["command"] for r in records)), "",
             summary(records), ""]
    for r in records:
        spec, data, floor = r["spec"], r["data"], r["floor"]
        load = r["load_average_1min"]
        timed = ("median of {e} epochs".format(e=spec["epochs"]) if not spec["max_steps"] else
                 f"projected from the median of {spec['epochs']} runs of {data['timed_steps_per_epoch']} steps")
        lines += [(f"## {spec['shape']}, batch {spec['batch_rows']}, d = {spec['hidden']}, "
                  f"k = k' = {spec['conv_channels']}"),
                  "",
                  f"{data['rows_per_epoch']} users × {data['n_cols']} items × {data['n_channels']} channels, "
                  f"{data['interactions']} interactions, {data['steps_per_epoch']} steps/epoch; s/epoch is the {timed}. "
                  f"Floor {floor['seconds']:.3f} s/epoch ({floor['gemm_flop'] / 1e9:.1f} GFLOP of decoder GEMMs at "
                  f"{max(r['rates']['matmul_flops'].values()) / 1e9:.1f} GFLOP/s + {floor['pass_bytes'] / 1e9:.2f} GB "
                  f"at {r['rates']['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s). 1-min load average during the run: "
                  f"{load['min']:.1f}–{load['max']:.1f} (median {load['median']:.1f}) on {r['machine']['cores']} cores."
                  + (f" bf16 variants: floor {r['floor_bf16']['seconds']:.3f} s/epoch at the bf16 GEMM rate "
                     f"{max(r['rates']['matmul_flops_bf16'].values()) / 1e9:.1f} GFLOP/s." if "floor_bf16" in r else ""),
                  "",
                  ("| variant | warm-up s | s/epoch | × jax-fp32 time | × floor | users/s | interactions/s | "
                  "final loss | Δloss | peak MiB | top-100 s | top-100 overlap |"),
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for name, v in r["variants"].items():
            memory = "n/a" if v.get("peak_memory_mib") is None else f"{v['peak_memory_mib']:.0f}"
            lines.append(f"| {name} | {v['warmup_seconds']:.1f} | {v['seconds_per_epoch']:.3f} | "
                         f"{v['speedup_of_reference']:.2f} | {v['times_floor']:.1f} | {v['users_per_second']:.0f} | "
                         f"{v['interactions_per_second']:.0f} | {v['final_loss']:.4f} | "
                         f"{100 * v['final_loss_rel_diff']:.2f}%{'' if v['loss_matches_reference'] else ' ✗'} | "
                         f"{memory} | {v['infer_seconds']:.2f} | {v['top_k_overlap_with_reference']:.3f} |")
        lines.append("")
    return "\n".join(lines)


def summary(records: list[dict]) -> str:
    """Per (shape, batch): each torch variant's time over the best JAX variant's (> 1: JAX faster)."""
    lines = ["| shape | batch | best JAX | s/epoch | × floor | torch variant: its time / best JAX time | load (1 min) |",
             "| --- | ---: | --- | ---: | ---: | --- | --- |"]
    for r in records:
        v = r["variants"]
        best = min((n for n in v if n.startswith("jax")), key=lambda n: v[n]["seconds_per_epoch"])
        ratios = ", ".join(f"{n} {v[n]['seconds_per_epoch'] / v[best]['seconds_per_epoch']:.2f}"
                           for n in v if n.startswith("torch"))
        load = r["load_average_1min"]
        lines.append(f"| {r['spec']['shape']} | {r['spec']['batch_rows']} | {best} | "
                     f"{v[best]['seconds_per_epoch']:.2f}{' (projected)' if r['spec']['max_steps'] else ''} | "
                     f"{v[best]['times_floor']:.1f} | {ratios} | {load['min']:.1f}–{load['max']:.1f} |")
    return "\n".join(lines)


def chart(records: list[dict], path: Path) -> None:
    """Grouped bars of s/epoch per variant for every (shape, batch), each against its floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(records), figsize=(4.2 * len(records), 4.2), squeeze=False)
    for ax, r in zip(axes[0], records):
        names = list(r["variants"])
        seconds = [r["variants"][n]["seconds_per_epoch"] for n in names]
        ax.bar(range(len(names)), seconds, color=["tab:blue" if n.startswith("jax") else "tab:orange" for n in names])
        ax.axhline(r["floor"]["seconds"], color="k", linestyle="--", linewidth=1, label="floor")
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
        ax.set_title(f"{r['spec']['shape']}, batch {r['spec']['batch_rows']}", fontsize=9)
        ax.set_ylabel("s / epoch" + (" (projected)" if r["spec"]["max_steps"] else ""))
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out, *, device: str) -> None:
    out = Path(out)
    records = load_results(out, device)
    (out / f"{device}.md").write_text(markdown(records))
    if records:
        chart(records, out / f"{device}.png")
