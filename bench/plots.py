"""The PNG plots of docs/benchmarks.md, drawn from the same results as its tables."""

from __future__ import annotations

from typing import Any

from .report import PLOTS, Results


def plots(r: Results) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    PLOTS.mkdir(parents=True, exist_ok=True)
    made: dict[str, str] = {}
    models = r.models

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(PLOTS / name, dpi=110)
        plt.close(fig)
        made[name] = f"benchmarks/{name}"

    # Decode tok/s: every engine and thread count, per model.
    series: list[tuple[str, list[float]]] = []
    for t in ("1", "2"):
        series.append((f"CTranslate2 int8, {t} thr", [r.decode(r.ct2(m, t)) or 0 for m in models]))
        series.append((f"llama.cpp, {t} thr", [r.decode(r.llama(m, t)) or 0 for m in models]))
    series.append(("through hushd", [r.daemon.get(m, {}).get("single", {}).get("decode_tok_s", 0)
                                     for m in models]))
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series):
        ax.bar([x + i * width for x in range(len(models))], values, width, label=label)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(models))], models)
    ax.set_ylabel("decode tokens/s (single stream)")
    ax.legend(fontsize=8)
    ax.set_title("Single-stream greedy decode")
    save(fig, "decode.png")

    # Prefill tok/s and time to first token.
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    labels, prefill, ttft = [], [], []
    for m in models:
        for t in r.threads(m):
            for name, section in (("ct2", r.ct2(m, t)), ("llama", r.llama(m, t))):
                if section:
                    labels.append(f"{m.split('-')[0]}\n{name} {t}t")
                    prefill.append(section["prefill"]["prefill_tok_s"])
                    ttft.append(section["decode"]["first_token_ms"])
    colors = ["tab:blue" if "ct2" in label else "tab:orange" for label in labels]
    left.bar(range(len(labels)), prefill, color=colors)
    left.set_xticks(range(len(labels)), labels, fontsize=6)
    left.set_ylabel("prefill tokens/s (~1.3k-token prompt)")
    right.bar(range(len(labels)), ttft, color=colors)
    right.set_xticks(range(len(labels)), labels, fontsize=6)
    right.set_ylabel("first token, short chat prompt (ms)")
    save(fig, "prefill.png")

    # Concurrency through the daemon.
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    for m in models:
        levels = r.daemon.get(m, {}).get("concurrency", {})
        if not levels:
            continue
        xs = sorted(levels, key=int)
        left.plot([int(x) for x in xs], [levels[x]["aggregate_tok_s"] for x in xs], "o-",
                  label=m)
        right.plot([int(x) for x in xs], [levels[x]["first_token_p99_ms"] for x in xs], "o-",
                   label=m)
        ref = r.best(m, "llama")[0]
        if ref:
            left.axhline(ref, linestyle=":", linewidth=1, color=left.lines[-1].get_color())
    left.set_xlabel("concurrent clients")
    left.set_ylabel("aggregate tokens/s (dotted: llama.cpp, one stream)")
    right.set_xlabel("concurrent clients")
    right.set_ylabel("p99 time to first token (ms)")
    left.legend(fontsize=8)
    save(fig, "concurrency.png")

    # Memory.
    fig, ax = plt.subplots(figsize=(7, 3.6))
    mem = [("size on disk (model dir)",
            [r.daemon.get(m, {}).get("model_dir_mb", 0) for m in models]),
           ("hushd peak RSS", [r.daemon.get(m, {}).get("peak_rss_mb", 0) for m in models]),
           ("llama.cpp worker peak RSS", [r.engine.get(m, {}).get("llama_cpp_peak_rss_mb", 0)
                                          for m in models])]
    width = 0.8 / len(mem)
    for i, (label, values) in enumerate(mem):
        ax.bar([x + i * width for x in range(len(models))], values, width, label=label)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(models))], models)
    ax.set_ylabel("MB")
    ax.legend(fontsize=8)
    save(fig, "memory.png")

    # Share of the memory-bandwidth bound.
    bw = r.bandwidth(1)
    if bw:
        fig, ax = plt.subplots(figsize=(7, 3.6))
        labels, shares = [], []
        for m in models:
            weights = r.engine.get(m, {}).get("weights_per_token", {})
            for t in r.threads(m):
                for name, section, key in (("ct2", r.ct2(m, t), "ct2_int8_mb"),
                                           ("llama", r.llama(m, t), "gguf_mb")):
                    tok_s = r.decode(section)
                    if tok_s and weights.get(key):
                        labels.append(f"{m.split('-')[0]}\n{name} {t}t")
                        shares.append(tok_s * weights[key] / 1e3 / bw)
        ax.bar(range(len(labels)), shares,
               color=["tab:blue" if "ct2" in label else "tab:orange" for label in labels])
        ax.axhline(1.0, color="k", linewidth=1)
        ax.set_xticks(range(len(labels)), labels, fontsize=6)
        ax.set_ylabel("weight GB/s read / 1-thread copy GB/s")
        save(fig, "bandwidth.png")
    return made
