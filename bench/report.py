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

    def bandwidth(self, threads: int | str = 1) -> float | None:
        """Read bandwidth (what a decode step needs), else copy bandwidth for older results."""
        for key in ("read_bandwidth_gb_s", "copy_bandwidth_gb_s"):
            value = self.machine.get(key, {}).get(str(threads))
            if value:
                return float(value)
        return None

    def prune(self, model: str) -> dict[str, Any] | None:
        return common.read_result(f"prune-{model}")

    def overhead(self, model: str) -> tuple[float | None, float | None]:
        """(through hushd, straight CTranslate2) single-stream decode, measured taking turns."""
        d = self.daemon.get(model, {})
        through = d.get("single", {}).get("decode_tok_s")
        direct = d.get("straight_ct2_decode_tok_s")
        if direct is None:  # results from before the side-by-side runs
            t = self.daemon_threads(model)
            direct = self.decode(self.ct2(model, t)) if t else None
        return through, direct

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


# -- document ---------------------------------------------------------------------------------

def _decode_goal_rows(r: Results, m: str) -> list[list[Any]]:
    target = ">= 1.0x llama.cpp" if m in GOAL_MODELS else "(reported)"
    p = r.prune(m)
    rows: list[list[Any]] = []
    if p and any("llama_cpp_tok_s" in v for v in p["speed"].values()):
        # Side by side: full, pruned and llama.cpp taking turns in every repeat.
        for t, v in sorted(p["speed"].items()):
            for label, key in (("full vocabulary", "full_tok_s"),
                               (f"vocabulary pruned to {p['kept']:,}", "pruned_tok_s")):
                share = ratio(v.get(key), v.get("llama_cpp_tok_s"))
                rows.append([f"Decode vs llama.cpp ({m}, {t} thr, {label})", target,
                             f"{fmt(v.get(key))} / {fmt(v.get('llama_cpp_tok_s'))} tok/s = "
                             f"{rx(share)}",
                             verdict(None if share is None or m not in GOAL_MODELS
                                     else share >= 1.0)])
        ours = max((v.get(k) or 0.0, f"{t} thr, {label}") for t, v in p["speed"].items()
                   for k, label in (("full_tok_s", "full"), ("pruned_tok_s", "pruned")))
        theirs = max((v.get("llama_cpp_tok_s") or 0.0, t) for t, v in p["speed"].items())
        rows.append([f"Decode, best setting vs best setting ({m})", "(reported)",
                     f"{fmt(ours[0])} ({ours[1]}) / {fmt(theirs[0])} ({theirs[1]} thr) = "
                     f"{rx(ratio(ours[0], theirs[0]))}", "-"])
        return rows
    for t in r.threads(m):
        c, ll = r.decode(r.ct2(m, t)), r.decode(r.llama(m, t))
        share = ratio(c, ll)
        rows.append([f"Decode vs llama.cpp ({m}, {t} thr)", target,
                     f"{fmt(c)} / {fmt(ll)} tok/s = {rx(share)}",
                     verdict(None if share is None or m not in GOAL_MODELS else share >= 1.0)])
    return rows


def _goals(r: Results) -> str:
    rows: list[list[Any]] = []
    for m in r.models:
        through, direct = r.overhead(m)
        share = ratio(through, direct)
        rows.append([f"Daemon overhead ({m}, {r.daemon_threads(m)} thr)",
                     ">= 0.95x straight CTranslate2",
                     f"{fmt(through)} / {fmt(direct)} tok/s = {rx(share)}",
                     verdict(None if share is None else share >= 0.95)])
    for m in r.models:
        rows += _decode_goal_rows(r, m)
    for m in r.models:
        levels = r.daemon.get(m, {}).get("concurrency", {})
        if "1" in levels and "4" in levels:
            share = ratio(levels["4"]["aggregate_tok_s"], levels["1"]["aggregate_tok_s"])
            rows.append([f"4 clients vs 1, aggregate ({m})", ">= 3x",
                         f"{fmt(levels['4']['aggregate_tok_s'])} / "
                         f"{fmt(levels['1']['aggregate_tok_s'])} tok/s = {rx(share)}",
                         verdict(None if share is None else share >= 3)])
    for m in r.models:
        sp = r.daemon.get(m, {}).get("system_prompt")
        where = "through hushd, the daemon's own first-token time"
        if not sp and (section := r.ct2(m, r.daemon_threads(m) or 1)):
            sp, where = section["system_prompt"], "straight CTranslate2 static_prompt"
        if sp:
            share = ratio(sp["cached_first_token_ms"], sp["uncached_first_token_ms"])
            rows.append([f"First token, cached system prompt ({m})", "<= 0.5x uncached",
                         f"{fmt(sp['cached_first_token_ms'])} / "
                         f"{fmt(sp['uncached_first_token_ms'])} ms = {rx(share)} ({where})",
                         verdict(None if share is None else share <= 0.5)])
    for m in r.models:
        d = r.daemon.get(m)
        if d:
            limit = d["model_dir_mb"] + 200
            single = d.get("single_stream_peak_rss_mb")
            if single is not None:
                rows.append([f"hushd peak RSS, one client chatting ({m})",
                             f"<= size on disk + 200 = {fmt(limit, 0)} MB",
                             f"{fmt(single, 0)} MB", verdict(single <= limit)])
            rows.append([f"hushd peak RSS, after 8 concurrent clients ({m})", "(reported)",
                         f"{fmt(d['peak_rss_mb'], 0)} MB", "-"])
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
        through, direct = r.overhead(m)
        s = d["single"]
        rows.append([m, f"{t} x {d['status'].get('decode_workers')}", fmt(d["ready_s"], 2),
                     d["idle_rss_mb"], d.get("single_stream_peak_rss_mb"), d["peak_rss_mb"],
                     d["model_dir_mb"], through, s["server"].get("decode_tokens_per_s"), direct,
                     rx(ratio(through, direct)), s["first_token_ms"],
                     s["server"].get("first_token_ms")])
    single = table(["model", "intra threads x workers", "READY=1 s", "idle RSS MB",
                    "peak RSS MB, one client", "after 8 clients", "on disk MB",
                    "decode tok/s (client)", "(daemon's own)", "straight CT2, taking turns",
                    "overhead ratio", "first token ms (client)", "(daemon's own)"], rows)
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
        p = r.prune(m)
        if not p or "speed" not in p:
            continue
        q = p["quality"]
        for t, v in sorted(p["speed"].items()):
            rows.append([m, t, f"{p['vocab_full']:,} -> {p['kept']:,}",
                         f"{p['full_model_bin_mb']:.0f} -> {p['pruned_model_bin_mb']:.0f}",
                         v.get("full_tok_s"), v.get("pruned_tok_s"), v.get("llama_cpp_tok_s"),
                         rx(ratio(v.get("pruned_tok_s"), v.get("full_tok_s"))),
                         rx(ratio(v.get("pruned_tok_s"), v.get("llama_cpp_tok_s"))),
                         f"{100 * q['coverage']:.1f}%", f"{100 * q['top1_agreement']:.1f}%",
                         f"{q['ppl_full']} -> {q['ppl_pruned']}",
                         f"{q['bits_per_byte_full']} -> {q['bits_per_byte_pruned']}",
                         f"{q['tokens_full']:,} -> {q['tokens_pruned']:,}"])
    if not rows:
        return "*not run: `.venv/bin/python -m bench.prune_bench --model NAME --vocab N`*"
    return table(["model", "threads", "vocabulary", "model.bin MB", "full tok/s",
                  "pruned tok/s", "llama.cpp tok/s", "speed-up", "pruned vs llama.cpp",
                  "held-out coverage", "top-1 agreement", "perplexity (same tokens)",
                  "bits per byte (own tokens)", "held-out tokens"], rows)


def _openmp_table(r: Results) -> str:
    rows = []
    for m in r.models:
        o = common.read_result(f"openmp-{m}")
        for t, v in sorted((o or {}).get("threads", {}).items()):
            rows.append([m, t, v["gnu_tok_s"], v["llvm_tok_s"],
                         rx(ratio(v["llvm_tok_s"], v["gnu_tok_s"])),
                         "yes" if v["same_greedy_tokens"] else "**no**"])
    if not rows:
        return "*not run: `.venv/bin/python -m bench.openmp_bench --model NAME`*"
    return table(["model", "threads", "libgomp decode tok/s", "libomp decode tok/s",
                  "libomp / libgomp", "same greedy tokens"], rows)


def _gemm_table(r: Results) -> str:
    rows = []
    for m in r.models:
        g = common.read_result(f"gemm-{m}")
        if not g:
            continue
        for t, run in sorted(g["runs"].items()):
            for gemm in run["gemms"]:
                rows.append([m, t, gemm["shape_k_x_n"], gemm["calls_per_token"],
                             gemm["ms_per_call"], gemm["ms_per_token"], gemm["weights_gb_s"]])
            rows.append([m, t, "**all int8 GEMMs**", "", "", run["int8_gemm_ms_per_token"], ""])
    if not rows:
        return "*not run: `.venv/bin/python -m bench.gemm_probe --model NAME`*"
    return table(["model", "threads", "weight (in x out)", "calls per token", "ms per call",
                  "ms per token", "weights read GB/s"], rows)


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
    rows = []
    for m in r.models:
        w = r.engine.get(m, {}).get("weights_per_token")
        if not w:
            continue
        for t in r.threads(m):
            bw = r.bandwidth(t)
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
        through, direct = r.overhead(m)
        if direct and through and through > 1.1 * direct:
            flags.append(f"{m}: the daemon ({through:.1f} tok/s) beat straight CTranslate2 "
                         f"({direct:.1f}) by more than 10%. hushd decodes with "
                         "`generate_batch` and a callback, the straight runs with "
                         "`generate_tokens` (an iterator fed from another thread), so some "
                         "lead is real; this much also suggests one run was slowed by other "
                         "work.")
    if not flags:
        return "No run in this set shows the signs of interference checked for."
    return "\n".join(f"- {f}" for f in flags)


def write_report(models: Sequence[str]) -> Path:
    r = Results(models)
    from .plots import plots as draw

    plots = draw(r) if r.models else {}
    m = r.machine
    bw1, bw2 = r.bandwidth(1), r.bandwidth(2)
    template = (common.BENCH / "report_template.md").read_text()
    doc = template.format(
        date=dt.date.today().isoformat(),
        cpu=m.get("cpu", "?"), cores=m.get("cores", "?"),
        load=", ".join(f"{x:.1f}" for x in m.get("load_avg_at_start", [])),
        bw1=fmt(bw1), bw2=fmt(bw2),
        copy1=fmt(m.get("copy_bandwidth_gb_s", {}).get("1")),
        copy2=fmt(m.get("copy_bandwidth_gb_s", {}).get("2")),
        goals=_goals(r), engine=_engine_tables(r), batch=_batch_table(r),
        daemon=_daemon_tables(r), system=_system_prompt_table(r), summary=_summary_table(r),
        prune=_prune_table(r), gemm=_gemm_table(r), openmp=_openmp_table(r), noise=_noise(r),
        bandwidth=_bandwidth_table(r), store=_store_policy(r),
    )
    for name in ("decode.png", "prefill.png", "concurrency.png", "memory.png", "bandwidth.png"):
        image = f"![{name}]({plots[name]})" if name in plots else ""
        doc = doc.replace(f"{{plot:{name}}}", image)
    path = DOCS / "benchmarks.md"
    path.write_text(doc)
    return path




if __name__ == "__main__":
    from .run import DEFAULT_MODELS

    print(write_report([m.name for m in DEFAULT_MODELS]))
