"""Markdown tables of a harness run: medians per side, then takler/ecFlow ratios against the targets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.measure import median
from benchmarks.workloads import ALL

Results = dict[str, Any]


def _f(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def _med(runs: list[dict[str, Any]], key: str) -> float | None:
    return median(r.get(key) for r in runs)


def machine_lines(r: Results) -> list[str]:
    m = r["machine"]
    lines = [
        f"Machine: {m['cpus']} CPUs ({m['cpu']}), {m['memory']}, {m['os']}, kernel {m['kernel']}, "
        f"Python {m['python']}; takler {r.get('takler_version', '?')}; "
        + (
            f"ecFlow: {m['ecflow']}"
            if r.get("ecflow")
            else f"ecFlow not measured ({r.get('ecflow_missing')})"
        ),
        f"Settings: {r['settings']}",
    ]
    return lines


def runs_lines(r: Results) -> list[str]:
    rows = []
    for name, sides in r.get("runs", {}).items():
        n = ALL[name].tasks
        for side, runs in sides.items():
            total, server = _med(runs, "total_cpu_s"), _med(runs, "server_cpu_s")
            rows.append(
                [
                    name,
                    side,
                    _f(_med(runs, "wall_s")),
                    _f(_med([x for x in runs if x["clean"]], "wall_s")),
                    _f(_med(runs, "begin_s")),
                    _f(server),
                    _f(total),
                    _f(None if total is None else total / n * 1e3),
                    _f(None if server is None else server / n * 1e3),
                    _f(None if not runs else _med(runs, "server_hwm_kib") / 1024, 1),  # type: ignore[operator]
                    f"{sum(x['ok'] for x in runs)}/{len(runs)}",
                    f"{sum(x['clean'] for x in runs)}/{len(runs)}",
                ]
            )
    if not rows:
        return []
    return [
        "### Workload runs (medians)",
        "",
        *_table(
            [
                "workload",
                "side",
                "wall s",
                "wall s, undisturbed runs",
                "begin s",
                "server CPU s",
                "total CPU s",
                "total CPU ms/task",
                "server CPU ms/task",
                "server peak RSS MiB",
                "ok",
                "undisturbed",
            ],
            rows,
        ),
        "",
    ]


def latency_lines(r: Results) -> list[str]:
    lat = r.get("latency")
    if not lat:
        return []
    rows = [
        [key, _f(v["median"] * 1e3), _f(v["p95"] * 1e3), str(v["n"])]
        for key, v in lat.items()
        if isinstance(v, dict) and "median" in v
    ]
    lines = ["### Latency", "", *_table(["measurement", "median ms", "p95 ms", "n"], rows), ""]
    for key, v in lat.items():
        if key.startswith("load "):
            lines.append(f"{key}: {_f(v['load_s'], 3)} s ({_how(v)})")
    return [*lines, ""]


def _how(v: dict[str, Any]) -> str:
    if v.get("how") == "start":
        return (
            f"server started with the flow: build {v['build_s']:.3f} s + start {v['start_s']:.3f} s"
        )
    return "load command"


def scale_lines(r: Results) -> list[str]:
    rows = []
    for name, sides in r.get("scale", {}).items():
        for side, reps in sides.items():
            rows.append(
                [
                    name,
                    side,
                    _f(_med(reps, "load_s"), 3),
                    _how(reps[0]) if reps else "-",
                    _f((_med(reps, "rss_empty_kib") or 0) / 1024, 1),
                    _f((_med(reps, "rss_after_load_kib") or 0) / 1024, 1),
                    _f(_med(reps, "rss_per_task_kib")),
                    _f(_med(reps, "checkpoint_s"), 3),
                    _f((_med(reps, "checkpoint_bytes") or 0) / 1e6),
                    _f(_med(reps, "restore_s"), 3),
                ]
            )
    if not rows:
        return []
    return [
        "### Scale (loaded, not begun; medians)",
        "",
        *_table(
            [
                "flow",
                "side",
                "load s",
                "how",
                "RSS empty MiB",
                "RSS loaded MiB",
                "KiB/task",
                "checkpoint s",
                "checkpoint MB",
                "restart s",
            ],
            rows,
        ),
        "",
    ]


def store_lines(r: Results) -> list[str]:
    st = r.get("store")
    if not st:
        return []
    rows = [[key, f"{value:.0f}"] for key, value in st.items()]
    return [
        "### Commands a second (`alter` of a label)",
        "",
        *_table(["server", "commands/s"], rows),
        "",
    ]


# ------------------------------------------------------------------ targets


def _run_fig(r: Results, name: str, key: str) -> Callable[[str], float | None]:
    return lambda side: _med(r.get("runs", {}).get(name, {}).get(side, []), key)


def _lat_fig(r: Results, key: str) -> float | None:
    v = r.get("latency", {}).get(key)
    return v["median"] if v else None


def _scale_fig(r: Results, name: str, key: str) -> Callable[[str], float | None]:
    return lambda side: _med(r.get("scale", {}).get(name, {}).get(side, []), key)


def targets(r: Results) -> list[tuple[str, float | None, float | None, float, str]]:
    """(target, takler figure, ecFlow figure, goal ratio, unit)."""
    out = []
    for name, goal in (("W-chain-100", 0.1), ("W-wide-1000-limit20", 0.3), ("W-wide-200", 1.0)):
        fig = _run_fig(r, name, "wall_s")
        out.append((f"{name} wall", fig("takler"), fig("ecFlow"), goal, "s"))
    n = ALL["W-wide-1000-limit20"].tasks
    for key, label, goal in (
        ("total_cpu_s", "total CPU per task", 1.0),
        ("server_cpu_s", "server CPU per task", 2.0),
    ):
        fig = _run_fig(r, "W-wide-1000-limit20", key)
        t, e = fig("takler"), fig("ecFlow")
        out.append(
            (f"W-wide-1000-limit20 {label}", t and t / n * 1e3, e and e / n * 1e3, goal, "ms")
        )
    ping = _lat_fig(r, "ecflow_client --ping (ecFlow)")
    for key in (
        "takler_label in bash (child.takler)",
        "takler ecflow_client --ping",
        "takler ecflow_client --label",
    ):
        t = _lat_fig(r, key)
        out.append(
            (
                f"child command, whole process: {key} vs ecflow_client --ping",
                t and t * 1e3,
                ping and ping * 1e3,
                1.0,
                "ms",
            )
        )
    t, e = _lat_fig(r, "ping in one client (takler)"), _lat_fig(r, "ping in one client (ecFlow)")
    out.append(("ping inside one client process", t and t * 1e3, e and e * 1e3, 2.0, "ms"))
    t, e = (
        _lat_fig(r, "full state of scale-10k (takler)"),
        _lat_fig(r, "full state of scale-10k (ecFlow)"),
    )
    out.append(("full state of scale-10k", t and t * 1e3, e and e * 1e3, 2.0, "ms"))
    for key, label, unit in (
        ("load_s", "load", "s"),
        ("rss_per_task_kib", "RSS per task", "KiB"),
        ("restore_s", "restore after restart", "s"),
    ):
        fig = _scale_fig(r, "scale-100k", key)
        out.append((f"scale-100k {label}", fig("takler"), fig("ecFlow"), 2.0, unit))
    return out


def target_lines(r: Results) -> list[str]:
    rows = []
    for label, t, e, goal, unit in targets(r):
        if t is None:
            continue
        ratio = t / e if e else None
        if ratio is None:
            verdict = "-"
        elif ratio <= goal:
            verdict = "met"
        else:
            verdict = f"missed ({ratio / goal:.1f}x over)"
        rows.append(
            [
                label,
                f"{t:.3g} {unit}",
                "-" if e is None else f"{e:.3g} {unit}",
                _f(ratio),
                f"≤ {goal:g}",
                verdict,
            ]
        )
    if not rows:
        return []
    return [
        "### takler / ecFlow, against the targets",
        "",
        *_table(["target", "takler", "ecFlow", "ratio", "goal", "verdict"], rows),
        "",
    ]


def render(r: Results) -> str:
    lines = ["## Benchmarks", "", *machine_lines(r), ""]
    for part in (target_lines, runs_lines, latency_lines, scale_lines, store_lines):
        lines += part(r)
    for name, error in r.get("errors", {}).items():
        lines.append(f"**{name} failed**: {error}")
    return "\n".join(lines)
