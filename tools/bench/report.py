"""Write the benchmark's results: JSON, a markdown table and PNG charts."""

from __future__ import annotations

import json
from pathlib import Path

PAPER = {"stations": 160, "cpu_percent": 26.0, "memory_percent": 95.0}


def fmt(value, unit="") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        value = f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"
    return f"{value}{unit}"


def table(results: dict) -> str:
    lines = [
        "| run | stations | server CPU % (1 core) | server RSS MB | OCPP p50 / p99 ms | "
        "MQTT→stored p50 / p99 ms | setup p50 / p99 ms | msg/s | telemetry sent / lost | ok |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in results["runs"]:
        for step in run["steps"]:
            mq = step.get("mqtt_latency") or {}
            tel = step.get("telemetry", {})
            lines.append(
                f"| {run['name']} | {step['stations']} | {fmt(step['server']['cpu_percent_mean'])} | "
                f"{fmt(step['server']['rss_mb_max'])} | "
                f"{fmt(step['ocpp'].get('p50_ms'))} / {fmt(step['ocpp'].get('p99_ms'))} | "
                f"{fmt(mq.get('p50_ms'))} / {fmt(mq.get('p99_ms'))} | "
                f"{fmt(step['connect_ms'].get('p50'))} / {fmt(step['connect_ms'].get('p99'))} | "
                f"{fmt(step.get('messages_per_s'))} | {tel.get('acked', '–')} / {tel.get('lost', '–')} | "
                f"{'yes' if step['ok'] else 'no: ' + '; '.join(step['failures'])} |")
    return "\n".join(lines)


def ratios(results: dict) -> str:
    """Our server against the bare ocpp-package central system, step by step."""
    by_name = {run["name"]: run for run in results["runs"]}
    out = ["| stations | CPU % ours / reference | OCPP p99 ms ours / reference | OCPP calls/s ours / reference |",
           "|---:|---:|---:|---:|"]
    for ours_name, ref_name in (("paper-embedded", "paper-reference"), ("sweep-embedded", "sweep-reference")):
        ours, ref = by_name.get(ours_name), by_name.get(ref_name)
        if not ours or not ref:
            continue
        ref_steps = {s["stations"]: s for s in ref["steps"]}
        for step in ours["steps"]:
            other = ref_steps.get(step["stations"])
            if not other:
                continue

            def ratio(a, b):
                return f"{a} / {b}" if a is not None and b is not None else "–"

            out.append(f"| {step['stations']} | "
                       f"{ratio(step['server']['cpu_percent_mean'], other['server']['cpu_percent_mean'])} | "
                       f"{ratio(step['ocpp'].get('p99_ms'), other['ocpp'].get('p99_ms'))} | "
                       f"{ratio(step.get('ocpp_per_s'), other.get('ocpp_per_s'))} |")
    return "\n".join(out) if len(out) > 2 else ""


def profiles(results: dict) -> str:
    """Where the server's Python time goes, per sweep step (tools/bench/profile.py)."""
    out = []
    for run in results["runs"]:
        steps = [s for s in run["steps"] if s.get("profile")]
        if not steps:
            continue
        names = []
        for step in steps:
            for name in step["profile"].get("components", {}):
                if name not in names:
                    names.append(name)
        out += [f"Where the server's time goes ({run['name']}): share of the samples in which "
                "a server thread ran Python code (py-spy, GIL held), by component; *busy* is the "
                "share of wall time with Python running, of one core.", "",
                "| component | " + " | ".join(f"{s['stations']} st." for s in steps) + " |",
                "|---|" + "---:|" * len(steps)]
        out.append("| busy | " + " | ".join(
            fmt(s["profile"].get("busy_percent"), " %") if "error" not in s["profile"]
            else "– (" + s["profile"]["error"][:40] + ")" for s in steps) + " |")
        for name in names:
            out.append(f"| {name} | " + " | ".join(
                fmt(s["profile"].get("components", {}).get(name), " %") for s in steps) + " |")
        last = steps[-1]["profile"]
        if last.get("top_functions"):
            out += ["", f"Top functions by own time at {steps[-1]['stations']} stations:", ""]
            out += [f"- {share} % `{name}`" for name, share in last["top_functions"][:8]]
        out.append("")
    return "\n".join(out).rstrip()


def charts(results: dict, base: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    specs = [
        ("cpu", "server CPU (% of one core)", lambda s: s["server"]["cpu_percent_mean"]),
        ("memory", "server RSS (MB)", lambda s: s["server"]["rss_mb_max"]),
        ("latency", "OCPP CALL→CALLRESULT p99 (ms)", lambda s: s["ocpp"].get("p99_ms")),
    ]
    for key, label, get in specs:
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
        for run in results["runs"]:
            points = [(s["stations"], get(s)) for s in run["steps"] if get(s) is not None]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o", label=run["name"])
        if key == "cpu":
            ax.axhline(PAPER["cpu_percent"], color="grey", linestyle="--", linewidth=1)
            ax.annotate("SIMA paper: 26 % at 160 stations", (PAPER["stations"], PAPER["cpu_percent"]),
                        textcoords="offset points", xytext=(5, 5), fontsize=8, color="grey")
        ax.set_xscale("log")
        ax.set_xlabel("charging stations")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = base.with_name(base.name + f"-{key}.png")
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


def write(results: dict, out_dir: Path, started) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    base = out_dir / started.strftime("%Y-%m-%d")
    json_path = base.with_suffix(".json")
    json_path.write_text(json.dumps(results, indent=2))
    m = results["machine"]
    md = [f"# PicoCharge benchmark, {results['started']}",
          "",
          f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gb']} GB, Python {m['python']}, {m['os']}.",
          f"Run time {results['duration_s']} s. Paper steps held {results['settings']['paper_hold_s']} s, "
          f"sweep steps {results['settings']['sweep_hold_s']} s.",
          "",
          table(results)]
    fw = results.get("firmware")
    if fw:
        # runs before the 32-bit build (2026-11-30) used a 64-bit port at 192 KiB
        heap_kib = fw.get("board", {}).get("heap_kib", "?")
        build = "64-bit" if heap_kib == 192 else "32-bit"
        md += ["", f"Firmware heap on the MicroPython Unix port ({build}) at {heap_kib} KiB, "
               "live data after a "
               "collection (target: under 96 KiB during a session):", "",
               "| what | peak used KiB | completed |", "|---|---:|---|"]
        for name, label in (("charge_point", "charge point session (station test double)"),
                            ("board", "complete board: app, station, OCPP, MQTT")):
            r = fw.get(name, {})
            if "error" in r:
                md.append(f"| {label} | – | no: {r['error']} |")
            else:
                md.append(f"| {label} | {fmt(r.get('peak_used_kib'))} | "
                          f"{'yes' if r.get('completed', r.get('transactions')) else 'no'} |")
    if results.get("commit_cost"):
        from tools.bench.commit_cost import table as commit_table

        md += ["", "Answering after commit (transaction messages as fast as answers come; "
               "FULL fsyncs every commit before its answers):", "",
               commit_table(results["commit_cost"])]
    ed = (fw or {}).get("ed25519")
    if ed and "error" not in ed:
        est = ed["rp2040_verify_s_estimate"]
        md += ["", "Signed firmware bundles: one Ed25519 verification on the MicroPython Unix port "
               f"{ed['verify_ms_unix']} ms, peak heap {ed['peak_heap_bytes']} B (modules "
               "included); RP2040 estimate "
               + ", ".join(f"{v} s ({k}, x{ed['rp2040_over_unix'][k]})" for k, v in est.items())
               + " from published RP2040 times of the same workloads (tools/bench/ed25519_verify.py)."]
    elif ed:
        md += ["", f"Ed25519 verification: not measured ({ed['error']})"]
    rat = ratios(results)
    if rat:
        md += ["", "Against the bare `ocpp`-package central system:", "", rat]
    prof = profiles(results)
    if prof:
        md += ["", prof]
    md_path = base.with_suffix(".md")
    md_path.write_text("\n".join(md) + "\n")
    return [json_path, md_path] + charts(results, base)
