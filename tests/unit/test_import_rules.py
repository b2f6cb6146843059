"""The tree's dependency rules, checked on the source (ast), so a new import that breaks one fails
here by name: the venue does not depend on its benchmarks, the SDK does not carry the node shell,
and a shared constant has one definition."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def sources(*dirs: str) -> list[Path]:
    return sorted(p for d in dirs for p in (ROOT / d).rglob("*.py"))


def imported(path: Path) -> set[str]:
    """Every module `path` imports, at any depth of its code (lazy imports count)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_the_venue_does_not_import_its_benchmarks():
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in imported(p) if m.split(".")[0] == "perf")
                 for p in sources("cluster", "nodes")}
    assert not {k: v for k, v in offenders.items() if v}


def test_the_sdk_does_not_import_the_node_shell():
    shell = {"cluster.transport", "cluster.node", "cluster.runner", "cluster.supervisor"}
    assert not imported(ROOT / "cluster" / "client.py") & shell


def test_the_benchmarks_use_no_private_socket_calls_of_the_shell():
    found = []
    for path in sources("perf"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr in ("_send", "_recv"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
    assert not found


def test_ppm_is_defined_once():
    definitions = []
    for path in sources("cluster", "nodes", "perf"):
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id in ("PPM", "PPM_INT") for t in node.targets):
                definitions.append(str(path.relative_to(ROOT)))
    assert definitions == ["cluster/rules/units.py"]


def test_a_planted_violation_is_found(tmp_path):
    """The checks above read what they claim to (a file importing perf is seen)."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from perf.null_services import build\n    import perf.bench\n")
    assert {"perf.null_services", "perf.bench"} <= imported(bad)


def test_the_status_file_is_named_in_one_place():
    """cluster/runstate.py reads it for everyone (the CLI, load and bench tools)."""
    named = [str(p.relative_to(ROOT)) for p in sources("cluster", "nodes", "perf")
             if any(isinstance(node, ast.Constant) and node.value == "status.json"
                    for node in ast.walk(ast.parse(p.read_text())))]
    assert named == ["cluster/runstate.py"]


def test_the_band_and_the_protection_price_are_computed_in_one_place():
    """cluster/rules/bands.py: matching enforces them, risk reserves and liquidates against them."""
    import re

    pattern = re.compile(r"(\bband_ppm|protection_ppm|slippage_ppm)\)? // PPM")
    found = [str(p.relative_to(ROOT)) for p in sources("cluster", "nodes")
             if pattern.search(p.read_text())]
    assert found == ["cluster/rules/bands.py"], found


def test_the_rules_import_only_the_standard_library_msgspec_and_each_other():
    """cluster/rules/ is the venue's pure rule book: no node, no shell, no config loader."""
    import sys

    def allowed(module: str) -> bool:
        top = module.split(".")[0]
        if top == "cluster":
            return module == "cluster.rules" or module.startswith("cluster.rules.")
        # (mutmut: `make mutate`'s trampoline, only in its mutated copy of the tree)
        return top in sys.stdlib_module_names or top in ("__future__", "msgspec", "mutmut")

    offenders = {str(p.relative_to(ROOT)): sorted(m for m in imported(p) if not allowed(m))
                 for p in sources("cluster/rules")}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, offenders
    assert {"cluster/rules/ladder.py", "cluster/rules/units.py"} <= {
        str(p.relative_to(ROOT)) for p in sources("cluster/rules")}


def test_no_rule_module_is_left_outside_the_rules_package():
    """The rules moved into cluster/rules/ (#18): no copy or shim of them stays in cluster/."""
    left = [name for name in ("ladder", "prices", "funding", "units", "bands", "stress")
            if (ROOT / "cluster" / f"{name}.py").exists()]
    left += [str(p.relative_to(ROOT)) for p in sources("nodes") if p.name == "adl.py"]
    assert not left


def test_fees_and_initial_margin_round_up_in_one_place():
    """cluster/rules/margin.py: a fee or a requirement in ppm rounds up against the account there
    (risk's reservations, admission and settlement, the liquidator and the tools call it)."""
    import re

    pattern = re.compile(r"-\(-\(.*\) // \(?(\w+ \* )?PPM\)?|ceil_div\(.*, (\w+ \* )?PPM\)")
    found = [str(p.relative_to(ROOT)) for p in sources("cluster", "nodes")
             if pattern.search(p.read_text()) and "rules" not in p.parts]
    assert found == [], found
