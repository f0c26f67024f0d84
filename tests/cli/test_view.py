"""The live view: the model kept by snapshots and deltas, and what it draws."""

from __future__ import annotations

from typing import Any

from rich.color import Color
from rich.console import Console, RenderableType
from rich.segment import Segment

from takler_cli.view import STATE_COLOURS, render, select_rows
from takler_cli.viewmodel import STATES, ViewModel

NOW = 1_000_000.0


def task(name: str, state: str = "queued", **extra: Any) -> dict[str, Any]:
    data = {"kind": "task", "name": name, "state": state, "tryno": 0}
    data.update(extra)
    return data


def family(
    name: str, children: list[dict[str, Any]], state: str = "queued", kind: str = "family"
) -> dict[str, Any]:
    return {"kind": kind, "name": name, "state": state, "children": children}


def bunch(
    *flows: dict[str, Any], now: str = "2024-05-01T12:00:00", server: str = "running"
) -> dict[str, Any]:
    return {"schema": 1, "now": now, "flows": list(flows), "server": {"state": server}}


def model_of(data: dict[str, Any]) -> ViewModel:
    model = ViewModel()
    model.apply_snapshot(data, NOW)
    return model


def draw(renderable: RenderableType, width: int = 120) -> tuple[str, list[list[Segment]]]:
    """The recorded text and the styled lines of ``renderable``."""
    console = Console(record=True, width=width, color_system="truecolor", force_terminal=True)
    console.print(renderable)
    text = console.export_text(styles=False)
    lines = console.render_lines(renderable, console.options.update(width=width), pad=False)
    return text, lines


def row_of(lines: list[list[Segment]], name: str) -> list[Segment]:
    for line in lines:
        words = "".join(s.text for s in line).replace("▾", " ").replace("▸", " ").split()
        if words and words[0] == name:
            return line
    raise AssertionError(f"no row for {name}")


def badge_colour(line: list[Segment]) -> tuple[str, Color | None, Color | None]:
    for seg in line:
        if seg.text.strip() in STATES and seg.style is not None and seg.style.bgcolor is not None:
            return seg.text.strip(), seg.style.bgcolor, seg.style.color
    raise AssertionError("no state badge in " + "".join(s.text for s in line))


def hexcode(colour: Color | None) -> str:
    assert colour is not None
    return colour.get_truecolor().hex


def test_each_state_is_drawn_in_ecflow_colours() -> None:
    tasks = [task(f"t_{state}", state) for state in STATES]
    model = model_of(bunch(family("f", tasks, "aborted", "flow")))
    _, lines = draw(render(model, NOW))
    for state in STATES:
        drawn, bg, fg = badge_colour(row_of(lines, f"t_{state}"))
        assert drawn == state
        assert hexcode(bg) == STATE_COLOURS[state]
        assert hexcode(fg) == "#000000"
    assert STATE_COLOURS["queued"] == "#add8e6"  # light blue
    assert STATE_COLOURS["submitted"] == "#40e0d0"  # turquoise
    assert STATE_COLOURS["suspended"] == "#ffa500"  # orange


def test_header_counts_tasks_per_state_and_shows_the_server_state() -> None:
    flow = family(
        "f", [task("a", "queued"), task("b", "queued"), task("c", "aborted")], "aborted", "flow"
    )
    model = model_of(bunch(flow, server="halted"))
    text, lines = draw(render(model, NOW, title="host:1234"))
    header = text.splitlines()
    assert "host:1234" in header[0] and "halted" in header[0] and "3 tasks" in header[0]
    assert "queued 2" in header[1]
    assert "aborted 1" in header[1]
    assert "active 0" in header[1]
    server_badge = next(s for s in lines[0] if s.text.strip() == "halted")
    assert hexcode(server_badge.style.bgcolor if server_badge.style else None) == "#ee82ee"
    aborted_badge = next(s for s in lines[1] if s.text == "aborted")
    assert hexcode(aborted_badge.style.bgcolor if aborted_badge.style else None) == "#ff0000"


def test_task_rows_show_try_time_in_state_label_meter_and_reason() -> None:
    fetch = task(
        "fetch",
        "active",
        tryno=2,
        state_since="2024-05-01T11:57:55",
        labels=[{"name": "info", "default": "", "value": "3 files"}],
        meters=[{"name": "progress", "minimum": 0, "maximum": 10, "value": 4}],
    )
    broken = task("broken", "aborted", tryno=1, reason="exit code 3")
    model = model_of(bunch(family("f", [fetch, broken], "aborted", "flow")))
    text, _ = draw(render(model, NOW))
    fetch_line = next(line for line in text.splitlines() if "fetch" in line)
    assert "active" in fetch_line
    assert " 2 " in fetch_line
    assert "2m05s" in fetch_line  # 12:00:00 - 11:57:55
    assert "progress 4/10" in fetch_line
    assert "info: 3 files" in fetch_line
    assert "exit code 3" in next(line for line in text.splitlines() if "broken" in line)


def test_a_family_whose_tasks_are_all_complete_folds_to_one_line() -> None:
    done = family("done", [task(f"d{i}", "complete") for i in range(5)], "complete")
    busy = family("busy", [task("x", "active"), task("y", "queued")], "active")
    model = model_of(bunch(family("f", [done, busy], "active", "flow")))
    text, _ = draw(render(model, NOW))
    assert "▸ done" in text
    assert "5 tasks complete" in text
    assert "d0" not in text and "d4" not in text
    assert "▾ busy" in text and " x " in text and " y " in text


def big_flow(families: int = 100, per_family: int = 100) -> dict[str, Any]:
    fams = []
    for i in range(families):
        tasks = [task(f"t{i}_{j}", "queued") for j in range(per_family)]
        fams.append(family(f"fam{i}", tasks))
    fams[37]["children"][5] = task("the_aborted", "aborted", reason="segfault")
    fams[61]["children"][80] = task("the_active", "active")
    return bunch(family("big", fams, "aborted", "flow"))


def test_aborted_and_active_tasks_stay_visible_in_a_large_flow() -> None:
    model = model_of(big_flow())
    assert model.task_count() == 10_000
    text, _ = draw(render(model, NOW, height=30))
    lines = text.splitlines()
    assert len(lines) <= 30
    assert any("the_aborted" in line and "segfault" in line for line in lines)
    assert any("the_active" in line for line in lines)
    # quiet families fold into summaries with their counts
    assert any("fam0" in line and "100 queued" in line for line in lines) or any(
        "more" in line for line in lines
    )


def test_when_even_busy_tasks_overflow_aborted_come_first() -> None:
    tasks = [task(f"run{i}", "active") for i in range(40)] + [
        task(f"bad{i}", "aborted") for i in range(5)
    ]
    model = model_of(bunch(family("f", tasks, "aborted", "flow")))
    rows = select_rows(model, 12)
    assert len(rows) == 12
    names = [r.node.name for r in rows if r.node is not None]
    assert all(f"bad{i}" in names for i in range(5))
    assert "more busy tasks" in rows[-1].note


def test_deltas_update_states_counts_and_the_event_pane() -> None:
    flow = family("f", [family("g", [task("a"), task("b")])], "queued", "flow")
    model = model_of(bunch(flow))
    model.apply_delta(
        {
            "type": "delta",
            "changes": [
                {"path": "/f/g/a", "kind": "tries", "name": None, "old": 0, "new": 1},
                {
                    "path": "/f/g/a",
                    "kind": "status",
                    "name": None,
                    "old": "queued",
                    "new": "submitted",
                },
                {
                    "path": "/f/g/a",
                    "kind": "status",
                    "name": None,
                    "old": "submitted",
                    "new": "aborted",
                },
                {"path": "/f/g/b", "kind": "label", "name": "msg", "old": "", "new": "hello"},
            ],
            "server": {"state": "running"},
        },
        NOW + 5,
    )
    assert model.count("aborted") == 1 and model.count("queued") == 1
    assert model.nodes["/f/g"].counts["aborted"] == 1
    assert model.missing_reasons == {"/f/g/a"}
    model.set_reason("/f/g/a", "killed by signal 9")
    text, lines = draw(render(model, NOW + 6))
    assert "killed by signal 9" in text
    events = text.split("latest events", 1)[1]
    assert "submitted" in events and "/f/g/a" in events and "try 1" in events
    assert "aborted" in events and "killed by signal 9" in events
    drawn, bg, _ = badge_colour(row_of(lines, "a"))
    assert drawn == "aborted" and hexcode(bg) == "#ff0000"


def test_counts_after_many_deltas_match_a_fresh_snapshot() -> None:
    flow = family(
        "f",
        [family(f"g{i}", [task(f"t{j}") for j in range(10)]) for i in range(10)],
        "queued",
        "flow",
    )
    model = model_of(bunch(flow))
    states = ["submitted", "active", "complete", "aborted", "queued", "complete"]
    for step, new in enumerate(states):
        for i in range(10):
            path = f"/f/g{i}/t{(i + step) % 10}"
            old = model.nodes[path].state
            model.apply_change({"path": path, "kind": "status", "old": old, "new": new}, NOW)
    fresh = ViewModel()
    fresh.apply_snapshot(
        bunch(
            family(
                "f",
                [
                    family(
                        f"g{i}",
                        [task(f"t{j}", model.nodes[f"/f/g{i}/t{j}"].state) for j in range(10)],
                    )
                    for i in range(10)
                ],
                "queued",
                "flow",
            )
        ),
        NOW,
    )
    assert +model.counts == +fresh.counts
    for i in range(10):
        assert +model.nodes[f"/f/g{i}"].counts == +fresh.nodes[f"/f/g{i}"].counts


def test_nodes_added_and_deleted() -> None:
    model = model_of(bunch(family("f", [task("a")], "queued", "flow")))
    model.apply_delta(
        {
            "changes": [
                {"path": "/new", "kind": "node_added", "new": "flow"},
                {"path": "/new/x", "kind": "node_added", "new": "task"},
                {"path": "/new/x", "kind": "status", "old": "unknown", "new": "queued"},
            ]
        },
        NOW,
    )
    assert model.task_count() == 2 and model.count("queued") == 2
    text, _ = draw(render(model, NOW))
    assert "▾ new" in text and " x " in text
    model.apply_change({"path": "/f", "kind": "node_deleted", "old": "flow"}, NOW)
    assert model.task_count() == 1 and "/f/a" not in model.nodes
    assert [e.kind for e in model.events][-1] == "deleted"


def test_labels_and_meters_added_and_deleted_are_shown() -> None:
    model = model_of(bunch(family("f", [task("a", "active")], "active", "flow")))
    label = {"kind": "label", "name": "note", "default": "", "value": "hello"}
    meter = {"kind": "meter", "name": "step", "minimum": 0, "maximum": 9, "threshold": None,
             "value": 3}  # fmt: skip
    for name, data in (("note", label), ("step", meter)):
        model.apply_change({"path": "/f/a", "kind": "attribute", "name": name, "new": data}, NOW)
    node = model.nodes["/f/a"]
    assert node.labels == {"note": "hello"} and node.meters == {"step": [3, 9]}
    text, _ = draw(render(model, NOW))
    assert "hello" in text
    model.apply_change({"path": "/f/a", "kind": "attribute", "name": "note", "old": label}, NOW)
    model.apply_change({"path": "/f/a", "kind": "attribute", "name": "step", "old": meter}, NOW)
    assert node.labels == {} and node.meters == {}


def test_progress_bar_counts_complete_tasks() -> None:
    flow = family(
        "f", [task("a", "complete"), task("b", "complete"), task("c", "active")], "active", "flow"
    )
    text, _ = draw(render(model_of(bunch(flow)), NOW, progress=True))
    assert "2/3 tasks complete" in text


def test_subtree_snapshot_at_a_path() -> None:
    model = ViewModel()
    model.apply_snapshot(family("g", [task("a", "active")], "active"), NOW, path="/f/g")
    assert set(model.nodes) == {"/f/g", "/f/g/a"}
    model.apply_change({"path": "/f/other", "kind": "node_added", "new": "task"}, NOW)
    assert "/f/other" not in model.nodes
    text, _ = draw(render(model, NOW))
    assert "▾ g" in text and " a " in text
