"""The HTML twin of a `perpx cascade sweep`: the amplification curves, bad debt against the fund,
the critical points and the R(p) map, with matplotlib plots when it is installed
(`pip install -e '.[report]'`, which `make cascade-report` does) and tables always."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path


def _plots(result: dict) -> list[tuple[str, str]]:
    """(title, base64 PNG) per plot; none when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []

    def png(fig) -> str:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)
        return base64.b64encode(buf.getvalue()).decode()

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for curve in result["curves"]:
        label = (f"{curve['regime']}, latency {curve['latency_rounds']}, depth "
                 f"x{curve['depth_scale_ppm'] / 1e6:g}")
        xs = [abs(p["shock_bps"]) for p in curve["points"]]
        amps = [float(p["amplification"] or 0) for p in curve["points"]]
        debt = [p["bad_debt"] / 1e6 for p in curve["points"]]
        axes[0].plot(xs, amps, marker="o", label=label)
        axes[1].plot(xs, debt, marker="o", label=label)
    axes[0].set_xlabel("exogenous shock (bps)")
    axes[0].set_ylabel("amplification A(x)")
    axes[0].set_title("amplification curve")
    axes[1].set_xlabel("exogenous shock (bps)")
    axes[1].set_ylabel("bad debt (collateral units)")
    axes[1].set_title("bad debt")
    axes[0].legend(fontsize=7)
    out.append(("amplification and bad debt", png(fig)))

    for symbol, rmap in sorted(result["r_map"].items()):
        rows = [r for r in rmap["rows"] if r["liquidation_notional"]]
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(12, 3.5))
        rs = [min(10.0, float(r["R"])) if r["R"] != "inf" else 10.0 for r in rows]
        ax.bar([r["from_bps"] for r in rows], rs, width=rmap["bucket_bps"] * 0.9,
               color=["#c0392b" if v >= 1 else "#2e86c1" for v in rs], align="edge")
        ax.axhline(1, color="black", linewidth=0.8)
        ax.set_xlabel("distance from mark (bps)")
        ax.set_ylabel("R(p) (capped at 10)")
        ax.set_title(f"{symbol}: reproduction number per bucket (red: self-sustaining)")
        out.append((f"R(p) {symbol}", png(fig)))
    return out


def _table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render(result: dict) -> str:
    p = result["params"]
    parts = [f"<h1>perpx cascade sweep: {html.escape(p['shock_symbol'])}</h1>",
             f"<p>snapshot sha256 {result['snapshot_sha256']}; recovery {p['recovery_ppm']} ppm"
             f"/round, permanent {p['permanent_ppm']} ppm, shock over {p['shock_rounds']} "
             "round(s)</p>"]
    plots = _plots(result)
    if plots:
        for title, data in plots:
            parts.append(f"<h2>{html.escape(title)}</h2><img src='data:image/png;base64,{data}'>")
    else:
        parts.append("<p><em>plots need matplotlib: pip install -e '.[report]' (make "
                     "cascade-report)</em></p>")
    parts.append("<h2>critical shock (bad debt above the fund)</h2>")
    parts.append(_table(["regime", "latency", "depth scale", "critical shock bps"],
                        [[c["regime"], c["latency_rounds"], c["depth_scale_ppm"] / 1e6,
                          c["critical_shock_bps"] if c["critical_shock_bps"] is not None else "none"]
                         for c in result["curves"]]))
    parts.append("<h2>critical depth (amplification falls to a_max at the largest shock)</h2>")
    parts.append(_table(["regime", "latency", "shock bps", "a_max", "depth scale", "note"],
                        [[c["regime"], c["latency_rounds"], c["shock_bps"], c["a_max"],
                          c["depth_scale_ppm"] / 1e6 if c["depth_scale_ppm"] else "-", c["note"]]
                         for c in result["critical_depth"]]))
    parts.append("<h2>runs</h2>")
    parts.append(_table(["regime", "latency", "depth", "shock bps", "A", "final A", "accounts",
                         "notional", "rounds", "bad debt", "fund drawdown", "ADL"],
                        [[r["regime"], r["latency_rounds"], r["depth_scale_ppm"] / 1e6,
                          r["shock_bps"], r["amplification"], r["final_amplification"],
                          r["accounts_liquidated"], r["cascade_notional"], r["rounds"],
                          r["bad_debt"], r["fund_drawdown"], r["adl_volume"]]
                         for r in result["runs"]]))
    for symbol, rmap in sorted(result["r_map"].items()):
        parts.append(f"<h2>R(p) {html.escape(symbol)}: self-sustaining from "
                     f"{rmap['self_sustaining'][:20]} bps</h2>")
        parts.append(_table(["from bps", "to bps", "liquidation notional", "book notional", "R"],
                            [[r["from_bps"], r["to_bps"], r["liquidation_notional"],
                              r["book_notional"], r["R"]] for r in rmap["rows"]]))
    style = ("<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
             "font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style>")
    return f"<!doctype html><html><head><meta charset='utf-8'>{style}</head><body>" \
           + "\n".join(parts) + "</body></html>\n"


def write(result: dict, out_dir: Path) -> Path:
    path = Path(out_dir) / "sweep.html"
    path.write_text(render(result))
    return path
