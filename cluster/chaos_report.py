"""Chaos run reports (#22): a JSON twin and one self-contained HTML file per experiment (plots
rendered with matplotlib and embedded as base64 PNG), and an index page over a suite.

matplotlib is an extra (`pip install -e '.[report]'`, which `make chaos` does): without it the
HTML still carries the verdicts, the timeline and the explanations, and says the plots are
missing and why.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

MODES = ["normal", "carry", "book", "degraded"]
REGIMES = {"normal": 0, "high_volatility": 1.5, "degraded": 3}  # on the modes' axis


def _e(x) -> str:
    return html.escape(str(x))


def _window_series(samples: list[dict], width: int = 10):
    """Per 1 s (10 samples) window ending at each sample: answered/s, p50 and p99 in ms."""
    from cluster.chaos import percentile

    t, thr, p50, p99 = [], [], [], []
    for i, s in enumerate(samples):
        win = samples[max(0, i - width + 1): i + 1]
        lat = [x for w in win for x in w.get("lat_ms", ())]
        t.append(s["t"])
        thr.append(sum(w.get("answered", 0) for w in win) / (len(win) * 0.1))
        p50.append(percentile(lat, 50) if lat else float("nan"))
        p99.append(percentile(lat, 99) if lat else float("nan"))
    return t, thr, p50, p99


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _bands(ax, run: dict) -> None:
    ax.axvspan(run["fault_s"], run["heal_s"], color="tab:red", alpha=0.12, lw=0)
    for r in run["timeline"]:
        if r["action"] != "heal_at_end":
            ax.axvline(r["t"], color="tab:red", lw=0.6, alpha=0.6)
    ax.axvline(run["heal_s"], color="tab:green", lw=0.8, alpha=0.8)


def _exit_panel(ax, exits: list[dict]) -> None:
    """The bot's exits at their decision times: how long each took to fill (a missed one at its
    deadline, as an x) and how far under the mark at the decision it filled."""
    filled = [e for e in exits if not e["missed"]]
    ax.scatter([e["t"] for e in filled], [max(e["delay_ms"], 1) for e in filled], s=12,
               color="tab:blue", label="exit delay (decision to fill)")
    missed = [e for e in exits if e["missed"]]
    if missed:
        ax.scatter([e["t"] for e in missed], [max(e.get("delay_ms", 0), 1000) for e in missed],
                   marker="x", color="tab:red", label="missed")
    ax.set_yscale("log")
    ax.set_ylabel("exit delay ms")
    ax.legend(loc="upper left", fontsize=7)
    right = ax.twinx()
    right.scatter([e["t"] for e in filled if "slippage_ppm" in e],
                  [e["slippage_ppm"] / 1e4 for e in filled if "slippage_ppm" in e], s=10,
                  marker="^", color="tab:orange", label="fill under the decision's mark, %")
    right.set_ylabel("slippage %")
    right.legend(loc="upper right", fontsize=7)


def plots(run: dict) -> str | None:
    """The run's figure as base64 PNG; None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    samples = run["samples"]
    t, thr, p50, p99 = _window_series(samples)
    symbols = sorted({k.split(".", 1)[1] for s in samples for k in s
                      if k.startswith("oracle_mode.")})
    exits = [e for e in run.get("exits", []) if "missed" in e]  # finished exits (ExitBot)
    fig, axes = plt.subplots(6 if exits else 5, 1, figsize=(10, 13 if exits else 11),
                             sharex=True)
    ax = axes[0]
    ax.plot(t, thr, color="tab:blue")
    ax.set_ylabel("answered/s (1 s)")
    ax.set_title("probe orders: throughput (shaded: fault window, green: heal)")
    ax = axes[1]
    ax.plot(t, p50, label="p50", color="tab:blue")
    ax.plot(t, p99, label="p99", color="tab:orange")
    ax.set_yscale("log")
    ax.set_ylabel("latency ms (1 s)")
    ax.legend(loc="upper left")
    ax = axes[2]
    for sym in symbols:
        ax.step(t, [MODES.index(s.get(f"oracle_mode.{sym}", "normal"))
                    if s.get(f"oracle_mode.{sym}") in MODES else float("nan") for s in samples],
                where="post", label=f"oracle {sym}")
        ax.step(t, [REGIMES[s[f"regime.{sym}"]] - 0.1 if s.get(f"regime.{sym}") in REGIMES
                    else float("nan") for s in samples], where="post", ls="--",
                label=f"regime {sym}")
    ax.set_yticks(range(4), MODES)
    ax.set_ylabel("oracle mode / regime")
    ax.legend(loc="upper left", fontsize=7)
    ax = axes[3]
    for key in ("liquidations", "liquidations_paused", "adl_events"):
        ax.step(t, [s.get(key, 0) for s in samples], where="post", label=key)
    ax.set_ylabel("count")
    ax.legend(loc="upper left", fontsize=7)
    ax = axes[4]
    ax.step(t, [s.get("insurance_fund_delta", 0) / 1e6 for s in samples], where="post",
            color="tab:purple")
    ax.set_ylabel("insurance fund delta (collateral)")
    if exits:
        _exit_panel(axes[5], exits)
    axes[-1].set_xlabel("seconds since the load started")
    for ax in axes:
        _bands(ax, run)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = _png(fig)
    plt.close(fig)
    return out


def curve_plot(curve: dict, points: list[dict]) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    xs = [p["x_ms"] for p in points]
    fig, axes = plt.subplots(len(curve["y"]), 1, figsize=(8, 2.6 * len(curve["y"])),
                             sharex=True, squeeze=False)
    for ax, y in zip(axes[:, 0], curve["y"]):
        ax.plot(xs, [p["y"].get(y) for p in points], marker="o")
        ax.set_ylabel(y, fontsize=8)
        ax.set_xscale("symlog", linthresh=1)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel(curve["x_label"])
    fig.tight_layout()
    out = _png(fig)
    plt.close(fig)
    return out


CSS = """body{font-family:sans-serif;max-width:1100px;margin:1em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;
font-size:13px;vertical-align:top}.PASS{background:#d8f5d0}.FAIL{background:#f8d0d0}
.NODATA,.SKIPPED{background:#eee}code{font-size:12px}"""


def _verdict_table(verdicts: list[dict]) -> str:
    rows = "".join(
        f"<tr class='{v['verdict'].replace(' ', '')}'><td><b>{_e(v['verdict'])}</b></td>"
        f"<td>{_e(v['name'])}</td><td><code>{_e(v['metric'])}</code> {_e(v['check'])} "
        f"({_e(v['phase'])}) {_e(v['expected'])}</td><td>{_e(v['evidence'])}</td></tr>"
        for v in verdicts)
    return ("<table><tr><th>verdict</th><th>hypothesis</th><th>predicate</th>"
            f"<th>evidence</th></tr>{rows}</table>")


def _client_links_table(stats: dict) -> str:
    """Each client's netsim links (netsim/proxy.py): per setting in force during the run, the
    delay its proxy measured on the chunks it carried."""
    rows = "".join(
        f"<tr><td>{_e(link)}</td><td><code>{_e(setting)}</code></td><td>{m['chunks']}</td>"
        f"<td>{m['p50']}</td><td>{m['p99']}</td><td>{m['max']}</td></tr>"
        for client in stats.values() for link, s in client.get("links", {}).items()
        for setting, m in s.get("measured_ms", {}).items())
    return ("<h3>netsim client links: the delay applied, as measured</h3><table><tr><th>link"
            "</th><th>setting</th><th>chunks</th><th>p50 ms</th><th>p99 ms</th><th>max ms</th>"
            f"</tr>{rows}</table>")


def _run_body(run: dict) -> str:
    img = plots(run)
    parts = [_verdict_table(run["verdicts"])]
    parts.append(f"<p>load from t=0; faults from t={run['fault_s']:.2f}s, healed at "
                 f"t={run['heal_s']:.2f}s, observed to t={run['end_s']:.1f}s. End of run: "
                 + ", ".join(f"{_e(k)} = {_e(v)}" for k, v in run["finals"].items()) + "</p>")
    if run.get("positions"):
        parts.append("<p>positions opened: " + "; ".join(
            f"{_e(p['account'])} {_e(p['side'])} {_e(p['qty'])} {_e(p['symbol'])}"
            for p in run["positions"]) + "</p>")
    if run.get("makers"):
        parts.append("<p>makers: " + _e(json.dumps(run["makers"])) + "</p>")
    if run.get("client_links"):
        parts.append(_client_links_table(run["client_links"]))
    parts.append(f"<img alt='metrics' src='data:image/png;base64,{img}'>" if img else
                 "<p><i>plots missing: matplotlib is not installed (make chaos installs the "
                 "[report] extra)</i></p>")
    rows = "".join(f"<tr><td>{r['t']:.2f}</td><td>{_e(r['action'])}</td><td>{_e(r['command'])}"
                   f"</td><td><code>{_e(json.dumps(r['args']))}</code></td>"
                   f"<td>{'ok' if r['ok'] else _e(r['error'])}</td></tr>" for r in run["timeline"])
    parts.append("<h3>Fault timeline</h3><table><tr><th>t (s)</th><th>step</th><th>command</th>"
                 f"<th>args</th><th>applied</th></tr>{rows}</table>")
    rows = "".join(f"<tr><td>{r['t']:.2f}</td><td>{_e(r['node'])}</td><td>{_e(r['rule'])}</td>"
                   f"<td>{_e(r['subject'])}</td><td>{_e(r['decision'])}</td>"
                   f"<td><code>{_e(json.dumps(r['numbers'])[:300])}</code></td></tr>"
                   for r in run["explanations"])
    parts.append(f"<h3>Explanation records from the fault on ({run['explanations_total']}; "
                 "the probe's and makers' own IOC remainders and refusals are counted, not "
                 "listed)</h3><table><tr><th>t (s)</th><th>node</th><th>rule</th><th>subject"
                 f"</th><th>decision</th><th>numbers</th></tr>{rows}</table>")
    return "\n".join(parts)


def render(report: dict) -> str:
    """One experiment's report (a single run, or the points of a curve) as one HTML page."""
    exp = report["experiment"]
    status = "PASS" if report["passed"] else "FAIL"
    head = (f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(exp['name'])}</title>"
            f"<style>{CSS}</style></head><body><h1>{_e(exp['name'])} "
            f"<span class='{status}'>{status}</span></h1><p>{_e(exp['description'])}</p>")
    if "points" not in report:
        return head + _run_body(report) + "</body></html>"
    curve = report["curve"]
    img = curve_plot(curve, report["points"])
    rows = "".join(f"<tr class='{'PASS' if p['run']['passed'] else 'FAIL'}'><td>{_e(p['x'])}</td>"
                   + "".join(f"<td>{_e(p['y'].get(y))}</td>" for y in curve["y"]) + "</tr>"
                   for p in report["points"])
    body = [f"<h2>Curve: {_e(', '.join(curve['y']))} against {_e(curve['x_label'])}</h2>",
            f"<p>{_e(curve.get('note', ''))}</p>",
            f"<table><tr><th>{_e(curve['x_label'])}</th>"
            + "".join(f"<th>{_e(y)}</th>" for y in curve["y"]) + f"</tr>{rows}</table>",
            f"<img alt='curve' src='data:image/png;base64,{img}'>" if img else
            "<p><i>curve plot missing: matplotlib is not installed</i></p>"]
    for p in report["points"]:
        body.append(f"<h2>Point {_e(curve['x_label'])} = {_e(p['x'])}</h2>" + _run_body(p["run"]))
    return head + "\n".join(body) + "</body></html>"


def write(report: dict, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = report["experiment"]["id"]
    js = out_dir / f"{stem}.json"
    js.write_text(json.dumps(report, default=str))
    page = out_dir / f"{stem}.html"
    page.write_text(render(report))
    return js, page


def index(entries: list[dict], out_dir: Path) -> Path:
    """entries: {id, name, status (PASS/FAIL/SKIPPED), why, seconds}."""
    rows = "".join(
        f"<tr class='{e['status']}'><td><b>{_e(e['status'])}</b></td><td>"
        + (f"<a href='{_e(e['id'])}.html'>{_e(e['name'])}</a>" if e["status"] != "SKIPPED"
           else _e(e["name"]))
        + f"</td><td>{_e(e.get('why', ''))}</td><td>{_e(e.get('seconds', ''))}</td></tr>"
        for e in entries)
    page = out_dir / "index.html"
    page.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>perpx chaos suite"
                    f"</title><style>{CSS}</style></head><body><h1>perpx chaos suite</h1>"
                    "<table><tr><th>verdict</th><th>experiment</th><th>failed hypotheses / "
                    f"why skipped</th><th>wall s</th></tr>{rows}</table></body></html>")
    return page
