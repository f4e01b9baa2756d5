"""Turn bench/results/*.json into docs/benchmarks.md and the PNG plots in docs/benchmarks/.

Everything in the document is computed from the results, so re-running `make bench` rewrites
it; prose that does not depend on the numbers lives in the templates below.

    .venv/bin/python -m bench.report
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import common

DOCS = common.ROOT / "docs"
PLOTS = DOCS / "benchmarks"
GOAL_MODELS = ("smollm2-135m", "qwen2.5-coder-0.5b")


def fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b:
        return None
    return a / b


def rx(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "**not met**")


class Results:
    def __init__(self, models: Sequence[str]) -> None:
        self.machine = common.read_result("machine") or {}
        self.engine = {m: r for m in models if (r := common.read_result(f"engine-{m}"))}
        self.daemon = {m: r for m in models if (r := common.read_result(f"daemon-{m}"))}
        self.store = common.read_result("store")
        self.policy = common.read_result("policy")
        self.models = [m for m in models if m in self.engine or m in self.daemon]

    def bandwidth(self, threads: int = 1) -> float | None:
        value = self.machine.get("copy_bandwidth_gb_s", {}).get(str(threads))
        return float(value) if value else None

    def ct2(self, model: str, threads: int | str) -> dict[str, Any] | None:
        value = self.engine.get(model, {}).get("ct2", {}).get(str(threads))
        return value if isinstance(value, dict) else None

    def llama(self, model: str, threads: int | str) -> dict[str, Any] | None:
        value = self.engine.get(model, {}).get("llama_cpp", {}).get(str(threads))
        return value if isinstance(value, dict) else None

    def threads(self, model: str) -> list[str]:
        return sorted(self.engine.get(model, {}).get("ct2", {}), key=int)

    def daemon_threads(self, model: str) -> int | None:
        status = self.daemon.get(model, {}).get("status", {})
        value = status.get("intra_threads")
        return int(value) if value else None

    def decode(self, section: dict[str, Any] | None) -> float | None:
        return section["decode"]["decode_tok_s"] if section else None

    def best(self, model: str, engine: str) -> tuple[float | None, str | None]:
        getter = self.ct2 if engine == "ct2" else self.llama
        options = [(self.decode(getter(model, t)), t) for t in self.threads(model)]
        options = [(v, t) for v, t in options if v is not None]
        return max(options) if options else (None, None)


# -- plots ------------------------------------------------------------------------------------

def _plots(r: Results) -> dict[str, str]:
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


# -- document ---------------------------------------------------------------------------------

def _goals(r: Results) -> str:
    rows: list[list[Any]] = []
    for m in r.models:
        t = r.daemon_threads(m)
        direct = r.decode(r.ct2(m, t)) if t else None
        through = r.daemon.get(m, {}).get("single", {}).get("decode_tok_s")
        share = ratio(through, direct)
        rows.append([f"Daemon overhead ({m}, {t} thr)", ">= 0.95x straight CTranslate2",
                     f"{fmt(through)} / {fmt(direct)} tok/s = {rx(share)}",
                     verdict(None if share is None else share >= 0.95)])
    for m in r.models:
        for t in r.threads(m):
            c, ll = r.decode(r.ct2(m, t)), r.decode(r.llama(m, t))
            share = ratio(c, ll)
            target = ">= 1.0x llama.cpp" if m in GOAL_MODELS else "(reported)"
            rows.append([f"Decode vs llama.cpp ({m}, {t} thr)", target,
                         f"{fmt(c)} / {fmt(ll)} tok/s = {rx(share)}",
                         verdict(None if share is None or m not in GOAL_MODELS else share >= 1.0)])
        (bc, tc), (bl, tl) = r.best(m, "ct2"), r.best(m, "llama")
        share = ratio(bc, bl)
        rows.append([f"Decode, best vs best ({m})", "(reported)",
                     f"{fmt(bc)} ({tc} thr) / {fmt(bl)} ({tl} thr) = {rx(share)}", "-"])
    for m in r.models:
        levels = r.daemon.get(m, {}).get("concurrency", {})
        if "1" in levels and "4" in levels:
            share = ratio(levels["4"]["aggregate_tok_s"], levels["1"]["aggregate_tok_s"])
            rows.append([f"4 clients vs 1, aggregate ({m})", ">= 3x",
                         f"{fmt(levels['4']['aggregate_tok_s'])} / "
                         f"{fmt(levels['1']['aggregate_tok_s'])} tok/s = {rx(share)}",
                         verdict(None if share is None else share >= 3)])
    for m in r.models:
        t = r.daemon_threads(m) or 1
        section = r.ct2(m, t)
        if section:
            sp = section["system_prompt"]
            share = ratio(sp["cached_first_token_ms"], sp["uncached_first_token_ms"])
            rows.append([f"First token, cached system prompt ({m}, {t} thr)", "<= 0.5x uncached",
                         f"{fmt(sp['cached_first_token_ms'])} / "
                         f"{fmt(sp['uncached_first_token_ms'])} ms = {rx(share)} "
                         "(CTranslate2 static_prompt, measured straight; hushd now uses it too)",
                         verdict(None if share is None else share <= 0.5)])
    for m in r.models:
        d = r.daemon.get(m)
        if d:
            limit = d["model_dir_mb"] + 200
            rows.append([f"hushd peak RSS ({m})", f"<= size on disk + 200 = {fmt(limit, 0)} MB",
                         f"{fmt(d['peak_rss_mb'], 0)} MB", verdict(d["peak_rss_mb"] <= limit)])
    for m in r.models:
        d = r.daemon.get(m)
        if d:
            target = "<= 2 s" if m == "smollm2-135m" else "(reported)"
            rows.append([f"READY=1 ({m})", target, f"{fmt(d['ready_s'], 2)} s",
                         verdict(d["ready_s"] <= 2) if m == "smollm2-135m" else "-"])
    return table(["goal", "target", "measured", "status"], rows)


def _engine_tables(r: Results) -> str:
    out = []
    for m in r.models:
        e = r.engine.get(m)
        if not e:
            continue
        rows = []
        for t in r.threads(m):
            c, ll = r.ct2(m, t), r.llama(m, t)
            for name, s in (("CTranslate2 int8", c), ("Hush engine layer", c), ("llama.cpp", ll)):
                if not s:
                    continue
                dec = s["engine_layer"] if name == "Hush engine layer" else s["decode"]
                ref = r.decode(ll)
                rows.append([name, t, dec["decode_tok_s"], rx(ratio(dec["decode_tok_s"], ref)),
                             dec["first_token_ms"],
                             s["prefill"]["prefill_tok_s"] if name != "Hush engine layer" else None,
                             rx(ratio(s["prefill"]["prefill_tok_s"],
                                      ll["prefill"]["prefill_tok_s"] if ll else None))
                             if name != "Hush engine layer" else "-",
                             s["load_s"] if name != "Hush engine layer" else None])
        w = e["weights_per_token"]
        out.append(
            f"### {m}\n\n"
            f"Size on disk: CTranslate2 `model.bin` {fmt(e['model_bin_mb'], 0)} MB, GGUF "
            f"{fmt(e['gguf_mb'], 0)} MB. Vocabulary {w['vocab']:,} "
            f"({'tied' if w['tied'] else 'separate'} LM head, {fmt(w['lm_head_params_m'])}M "
            f"weights). Import probe chose {e.get('probe_threads')} intra-op thread(s). "
            f"Decode: {e['ct2'][r.threads(m)[0]]['decode']['new_tokens']} new tokens after a "
            f"{e['ct2'][r.threads(m)[0]]['decode']['prompt_tokens']}-token chat prompt, best of "
            f"{e['settings']['repeat']}.\n\n"
            + table(["engine", "threads", "decode tok/s", "vs llama.cpp", "first token ms",
                     f"prefill tok/s ({e['ct2'][r.threads(m)[0]]['prefill']['prompt_tokens']} tok)",
                     "prefill vs llama.cpp", "load s"], rows)
            + (f"\n\nllama.cpp peak RSS {fmt(e.get('llama_cpp_peak_rss_mb'), 0)} MB; "
               f"CTranslate2 bench process peak RSS {fmt(e.get('ct2_peak_rss_mb'), 0)} MB "
               "(both after all runs above, batch 8 included).")
            + (f"\n\n*llama.cpp not measured: {e['llama_cpp_unavailable']}*"
               if e.get("llama_cpp_unavailable") else "")
        )
    return "\n\n".join(out)


def _batch_table(r: Results) -> str:
    rows = []
    for m in r.models:
        for t in r.threads(m):
            c = r.ct2(m, t)
            if c and c.get("batch"):
                b = c["batch"]
                one = b.get("1", {}).get("aggregate_tok_s")
                rows.append([m, t, *(b.get(k, {}).get("aggregate_tok_s") for k in "1248"),
                             rx(ratio(b.get("4", {}).get("aggregate_tok_s"), one)),
                             rx(ratio(b.get("8", {}).get("aggregate_tok_s"), one))])
    return table(["model", "threads", "batch 1", "batch 2", "batch 4", "batch 8", "4 vs 1",
                  "8 vs 1"], rows)


def _daemon_tables(r: Results) -> str:
    rows = []
    for m in r.models:
        d = r.daemon.get(m)
        if not d:
            continue
        t = r.daemon_threads(m)
        direct = r.decode(r.ct2(m, t)) if t else None
        s = d["single"]
        rows.append([m, f"{t} x {d['status'].get('decode_workers')}", fmt(d["ready_s"], 2),
                     d["idle_rss_mb"], d["peak_rss_mb"], d["model_dir_mb"], s["decode_tok_s"],
                     s["server"].get("decode_tokens_per_s"), direct, rx(ratio(s["decode_tok_s"],
                                                                              direct)),
                     s["first_token_ms"], s["server"].get("first_token_ms")])
    single = table(["model", "intra threads x workers", "READY=1 s", "idle RSS MB",
                    "peak RSS MB", "on disk MB", "decode tok/s (client)", "(daemon's own)",
                    "straight CT2, same threads", "overhead ratio", "first token ms (client)",
                    "(daemon's own)"], rows)
    rows = []
    for m in r.models:
        levels = r.daemon.get(m, {}).get("concurrency", {})
        one = levels.get("1", {}).get("aggregate_tok_s")
        ref = r.best(m, "llama")[0]
        for k in sorted(levels, key=int):
            v = levels[k]
            rows.append([m, k, v["aggregate_tok_s"], rx(ratio(v["aggregate_tok_s"], one)),
                         rx(ratio(v["aggregate_tok_s"], ref)), v["per_client_decode_tok_s"],
                         v["first_token_p50_ms"], v["first_token_p99_ms"],
                         ",".join(str(b) for b in v["batch_sizes"])])
    conc = table(["model", "clients", "aggregate tok/s", "vs 1 client", "vs llama.cpp best",
                  "per-client decode tok/s", "first token p50 ms", "p99 ms",
                  "batch size each client got"], rows)
    return single + "\n\n" + conc


def _system_prompt_table(r: Results) -> str:
    rows = []
    for m in r.models:
        for t in r.threads(m):
            for name, s in (("CTranslate2 static_prompt", r.ct2(m, t)),
                            ("llama.cpp prefix reuse", r.llama(m, t))):
                if s:
                    sp = s["system_prompt"]
                    rows.append([m, name, t, sp["static_tokens"], sp["rest_tokens"],
                                 sp["uncached_first_token_ms"], sp["cached_first_token_ms"],
                                 rx(ratio(sp["cached_first_token_ms"],
                                          sp["uncached_first_token_ms"])),
                                 {True: "yes", False: "**no**"}.get(sp.get("same_greedy_tokens"),
                                                                    "-")])
    return table(["model", "engine", "threads", "system tokens", "rest tokens",
                  "uncached first token ms", "cached ms", "cached / uncached",
                  "same greedy tokens"], rows)


def _prune_table(r: Results) -> str:
    rows = []
    for m in r.models:
        p = common.read_result(f"prune-{m}")
        if not p:
            continue
        q = p["quality"]
        rows.append([m, p["threads"], f"{p['vocab_full']:,} -> {p['kept']:,}",
                     f"{p['full_model_bin_mb']:.0f} -> {p['pruned_model_bin_mb']:.0f}",
                     f"{p['decode_full_tok_s']} -> {p['decode_pruned_tok_s']}",
                     rx(p["speedup"]), f"{100 * q['coverage']:.1f}%",
                     f"{q['ppl_full_covered']} -> {q['ppl_pruned_covered']}",
                     f"{100 * q['top1_agreement']:.1f}%"])
    if not rows:
        return "*not run: `.venv/bin/python -m bench.prune_probe --model gemma3-270m`*"
    return table(["model", "threads", "vocabulary", "model.bin MB", "decode tok/s", "speed-up",
                  "held-out coverage", "perplexity (covered positions)", "top-1 agreement"],
                 rows)


def _summary_table(r: Results) -> str:
    rows = []
    for m in r.models:
        s = r.engine.get(m, {}).get("summary")
        if not s:
            continue
        ref = s.get("llama_cpp", {}).get("seconds")
        for name, key in (("CTranslate2, map step batched", "ct2_batched"),
                          ("CTranslate2, one prompt at a time", "ct2_sequential"),
                          ("llama.cpp, one prompt at a time", "llama_cpp")):
            if key in s:
                v = s[key]
                rows.append([m, name, s["threads"], s["document_tokens"], v["chunks"],
                             v["prompt_tokens"], v["new_tokens"], v["seconds"],
                             rx(ratio(ref, v["seconds"]))])
    return table(["model", "decoding", "threads", "document tokens", "chunks",
                  "prompt tokens read", "tokens written", "seconds",
                  "speed vs llama.cpp"], rows)


def _bandwidth_table(r: Results) -> str:
    bw1, bw2 = r.bandwidth(1), r.bandwidth(2)
    rows = []
    for m in r.models:
        w = r.engine.get(m, {}).get("weights_per_token")
        if not w:
            continue
        for t in r.threads(m):
            bw = bw1 if t == "1" else bw2
            for name, s, key in (("CTranslate2 int8", r.ct2(m, t), "ct2_int8_mb"),
                                 ("llama.cpp GGUF", r.llama(m, t), "gguf_mb")):
                tok_s = r.decode(s)
                if tok_s is None or not bw:
                    continue
                bound = bw * 1e3 / w[key]
                rows.append([m, name, t, fmt(w[key], 0), fmt(bound, 0), tok_s,
                             f"{100 * tok_s / bound:.0f}%",
                             fmt(tok_s * w[key] / 1e3, 1)])
    return table(["model", "engine", "threads", "MB read per token", "bound tok/s",
                  "measured tok/s", "share of bound", "effective GB/s"], rows)


def _store_policy(r: Results) -> str:
    parts = []
    if r.store:
        s = r.store
        parts.append(table(
            ["store operation", "result"],
            [["append, durable commit (p50 / p99)",
              f"{s['append']['p50_ms']:.2f} / {s['append']['p99_ms']:.2f} ms"],
             ["conversations in store", f"{s['dataset']['conversations']:,} x "
              f"{s['dataset']['messages_each']} messages ({s['dataset']['database_mb']:.0f} MB)"],
             ["list first page of 50", f"{s['list_first_page_50_ms']:.2f} ms"],
             ["search, rare word (full scan)", f"{s['search_rare_full_scan_ms']:.0f} ms"],
             ["search, common word, first 50", f"{s['search_common_first_50_ms']:.2f} ms"]]))
    if r.policy:
        p = r.policy
        parts.append(table(
            ["policy redaction (default policy)", "result"],
            [["apply() on input text", f"{p['apply_input_mb_per_s']} MB/s "
              f"({p['apply_input_mb']} MB, {p['apply_findings']} findings)"],
             ["streaming output redactor", f"{p['stream_output_mb_per_s']} MB/s "
              f"({p['stream_us_per_fragment']} us per 2-6 character fragment)"]]))
    return "\n\n".join(parts) or "*not measured in this run*"


def _noise(r: Results) -> str:
    """Signs in the numbers themselves that the machine was busy during the run."""
    flags = []
    for m in r.models:
        for name, getter in (("CTranslate2", r.ct2), ("llama.cpp", r.llama)):
            one, two = r.decode(getter(m, 1)), r.decode(getter(m, 2))
            if one and two and two < 0.8 * one:
                flags.append(f"{name} on {m}: two threads decoded at {two:.1f} tok/s, one at "
                             f"{one:.1f}. A thread that waits at every step for a descheduled "
                             "partner is what another busy process does to a 2-core machine.")
        t = r.daemon_threads(m)
        direct = r.decode(r.ct2(m, t)) if t else None
        through = r.daemon.get(m, {}).get("single", {}).get("decode_tok_s")
        if direct and through and through > 1.1 * direct:
            flags.append(f"{m}: the daemon ({through:.1f} tok/s) beat straight CTranslate2 "
                         f"({direct:.1f}) at {t} thread(s), which cannot hold in steady state: "
                         "one of the two runs was slowed by other work.")
    if not flags:
        return "No run in this set shows the signs of interference checked for."
    return "\n".join(f"- {f}" for f in flags)


def write_report(models: Sequence[str]) -> Path:
    r = Results(models)
    plots = _plots(r) if r.models else {}
    m = r.machine
    bw1, bw2 = r.bandwidth(1), r.bandwidth(2)
    doc = TEMPLATE.format(
        date=dt.date.today().isoformat(),
        cpu=m.get("cpu", "?"), cores=m.get("cores", "?"),
        load=", ".join(f"{x:.1f}" for x in m.get("load_avg_at_start", [])),
        bw1=fmt(bw1), bw2=fmt(bw2),
        goals=_goals(r), engine=_engine_tables(r), batch=_batch_table(r),
        daemon=_daemon_tables(r), system=_system_prompt_table(r), summary=_summary_table(r),
        prune=_prune_table(r), noise=_noise(r),
        bandwidth=_bandwidth_table(r), store=_store_policy(r),
    )
    for name in ("decode.png", "prefill.png", "concurrency.png", "memory.png", "bandwidth.png"):
        image = f"![{name}]({plots[name]})" if name in plots else ""
        doc = doc.replace(f"{{plot:{name}}}", image)
    path = DOCS / "benchmarks.md"
    path.write_text(doc)
    return path


TEMPLATE = """\
# Benchmarks

Generated by `make bench` (`bench/run.py`, then `bench/report.py`) on {date}. Every figure
below comes from one run on one machine, so the ratios (Hush against llama.cpp, side by side in
the same run) are the headline; absolute numbers move with the machine and with whatever else
it is doing.

**Machine:** {cpu}, {cores} cores available; memory bandwidth (1 GB copy, read + write)
{bw1} GB/s on one thread, {bw2} GB/s on two. Load average when the run started: {load}.
The development machines are shared: another job running at the same time only ever slows a
run down, so each figure is the best of its repeats (the count is given per table), and a ratio
between two runs made seconds apart is more trustworthy than either absolute value.

**The reference peer** is llama.cpp through llama-cpp-python (the `bench` extra) reading the
*same GGUF file* the model was imported from, with the same thread count (`n_threads` and
`n_threads_batch`), greedy decoding, and the *same token ids*: the prompts are rendered and
tokenized once by Hush and handed to both engines as ids, and llama.cpp generates exactly as
many tokens as CTranslate2 did. CTranslate2 runs the int8 model Hush imported from that GGUF.

**Read with care.** Signs of interference in this run's own numbers:

{noise}

The llama.cpp build is the portable one the Makefile makes (`GGML_NATIVE=OFF`, AVX2/FMA/F16C,
AVX-512 off, because a native build died with "Illegal instruction" on these VMs), while
CTranslate2 picks its AVX-512 kernels at run time. On a CPU with AVX-512 this handicaps the
reference; `../shared/MODELS.md` measured llama.cpp at 84 / 125 tok/s (SmolLM2, 1 / 2 threads)
on the machine the project started on. A ratio against llama.cpp is only a headline when the
llama.cpp figures here are in that range.

## Goals

{goals}

How to read it: "straight CTranslate2" is `Generator.generate_tokens` with nothing of Hush's
per token; "through hushd" is a client on the Unix socket, with the daemon's policy, store and
scheduler in the way, measured at the client (first token event to last token event). The
daemon runs with the thread settings it reports in `hush status` (`intra_threads`, and
`decode_workers` = CTranslate2 `inter_threads`), which come from the import probe
(`threads.json` in the model directory).

## Single stream, per model

Decode tok/s counts the tokens after the first one over the time after the first one (the first
token carries the prompt). "First token" is for the short chat prompt, "prefill" the ~1.3k-token
prompt's length divided by its time to first token. "Hush engine layer" is `Engine.stream`
(detokenizing, stop strings, a queue between threads) on the same prompt.

{engine}

{{plot:decode.png}}

{{plot:prefill.png}}

## Through the daemon

{daemon}

Concurrent clients each open their own connection and send at the same moment; the scheduler
batches requests with the same sampling options. llama.cpp's one context serves one sequence at
a time, so its aggregate with N clients is its single-stream speed: that is the "vs llama.cpp
best" column.

{{plot:concurrency.png}}

{{plot:memory.png}}

## CTranslate2 batch scaling (straight, no daemon)

Aggregate tokens per second, prefill included, for N different prompts decoded as one batch.

{batch}

## System prompt caching

Time to first token for a prompt with a long system prompt, uncached and with the system
prompt's state cached: CTranslate2's `static_prompt` (cached after the first call) and
llama.cpp's reuse of the shared KV-cache prefix. These figures were measured straight through
CTranslate2; hushd has passed the system prompt as `static_prompt` since this run.

{system}

## Vocabulary pruning (speed probe and quality cost)

`bench/prune_probe.py` (run by `bench/run.py` for gemma3-270m, whose LM head is 62% of it) keeps the
tokens a corpus uses most, plus every control, byte and single-character token, re-imports the
GGUF with only those rows in the tied embedding / LM head, and times greedy decode against the
full model at the same thread count. Quality comes from the full model's logits on held-out
text: the pruned model's next-token distribution is the full one renormalized over the kept
tokens. Coverage is the share of held-out tokens the kept set contains (the rest a pruned
tokenizer would spell with smaller pieces); perplexity is over the covered positions; top-1
agreement counts every position, a pruned full-model argmax as a miss. The corpus (Python's docs,
licences, standard library sources) is what every machine has, not what users write: a product
pruning needs a corpus in the users' languages, and the coverage column is the figure to watch.

{prune}

## Summarization end to end

Hush's map-reduce summarizer (`hush.daemon.summarize.Summarizer`, short length) over a synthetic
document of a few chunks: with CTranslate2 decoding the map step as one batch, one prompt at a
time, and with llama.cpp doing the decoding one prompt at a time (the same chunks and prompt
templates; llama.cpp's repetition penalty works over a shorter window, so its outputs, and
their length, differ a little). `bench/summarize_bench.py` runs the 10,000-word corpus
document when more time is available.

{summary}

## Store and policy

{store}

## Against the memory-bandwidth limit

Decoding one token reads every weight matrix once, so a single stream can go no faster than
bandwidth / bytes of weights per token. Bytes per token are counted from the GGUF's tensors:
CTranslate2 int8 keeps one byte per weight plus a float32 scale per row; llama.cpp reads the
GGUF's quantized blocks as stored. The token-embedding table counts only when it doubles as the
LM head (tied embeddings); otherwise one row of it is read. The bound uses the copy bandwidth
measured in the same run with the same number of threads (a copy both reads and writes, so the
pure read bandwidth can be somewhat higher: a share above 100% is possible and means the engine
reads at least that fast). KV-cache reads and activations are not counted; at these lengths
they are small next to the weights.

{bandwidth}

{{plot:bandwidth.png}}

Reading it: a share near 100% means decoding is bandwidth-bound, and only fewer bytes per token
(a smaller quantization, a pruned LM head) can make it faster; a share well below it means the
time goes elsewhere (compute, thread synchronization, per-token work) and the bytes are not yet
the limit. Copy bandwidth is flat from one thread to two here, so a second thread can only help a
single stream that is not yet bandwidth-bound. For Gemma 3 the LM head is most of the bytes
(see the vocabulary-pruning table for what reading less of it gives).

## Reproduce

    make bench    # installs .[test,bench] (llama-cpp-python builds ~8 min), runs it all
    .venv/bin/python -m bench.run --models smollm2-135m            # one model
    .venv/bin/python -m bench.run --report-only                    # re-render this page
    HUSH_BENCH_LLAMA_PYTHON=/path/to/python .venv/bin/python -m bench.run   # llama.cpp elsewhere

Models come from the cache (`hush model pull NAME`); GGUFs from `<cache>/downloads/`. Results
are written as JSON to `bench/results/` (not committed), this page and the plots in
`docs/benchmarks/` are. The whole run takes about 20 minutes on 2 cores; qwen2.5-coder-1.5b is
left out for time (`--models qwen2.5-coder-1.5b` adds it).
"""


if __name__ == "__main__":
    from .run import DEFAULT_MODELS

    print(write_report([m.name for m in DEFAULT_MODELS]))
