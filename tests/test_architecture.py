"""The house's shape: layers only downward (import-linter's contracts in pyproject.toml), no
import cycle, shallow import chains, small modules, the toy world reached only as a plugin."""

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
MAX_CHAIN = 8  # modules in the deepest chain of imports inside fairsynth
MAX_LINES = 330  # "no module over ~300 lines"


def _graph() -> dict[str, set[str]]:
    g = grimp.build_graph("fairsynth")
    return {m: set(g.find_modules_directly_imported_by(m)) for m in g.modules}


def _longest_chain(edges: dict[str, set[str]]) -> list[str]:
    memo: dict[str, list[str]] = {}

    def longest(m: str, path: frozenset) -> list[str]:
        if m in memo:
            return memo[m]
        best = [m]
        for w in sorted(edges[m] - path):
            p = longest(w, path | {m})
            if len(p) + 1 > len(best):
                best = [m, *p]
        memo[m] = best
        return best

    return max((longest(m, frozenset()) for m in sorted(edges)), key=len)


def test_import_linter_contracts_are_kept():
    bindir = Path(sys.executable).parent
    r = subprocess.run(
        [str(bindir / "lint-imports"), "--no-logo", "--no-cache"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "BROKEN" not in r.stdout and r.stdout.count("KEPT") >= 5


def test_no_import_cycle_between_any_modules():
    edges = _graph()
    seen: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(m: str, stack: list[str]) -> None:
        seen[m] = 1
        for w in sorted(edges[m]):
            if seen.get(w) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack, m, w]))
            if w not in seen:
                visit(w, [*stack, m])
        seen[m] = 2

    for m in sorted(edges):
        if m not in seen:
            visit(m, [])


def test_the_deepest_import_chain_is_short():
    chain = _longest_chain(_graph())
    assert len(chain) <= MAX_CHAIN, " -> ".join(chain)


def test_the_chain_measure_sees_a_long_chain():
    edges = {f"m{i}": {f"m{i + 1}"} for i in range(9)} | {"m9": set()}
    assert len(_longest_chain(edges)) == 10


def test_modules_are_small():
    big = {
        str(p.relative_to(ROOT)): n
        for folder in ("fairsynth", "tasks", "flows")
        for p in (ROOT / folder).rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not big, big


def test_the_toy_world_is_found_as_a_plugin():
    from fairsynth.core import plugins
    from fairsynth.toyfaces import DDPM_DIR

    assert plugins.resolve("model", "toyfaces") == DDPM_DIR
    assert plugins.resolve("model", "some/hub-id") == "some/hub-id"
    assert "skin" in plugins.provided("attributes")
    try:
        plugins.provided("reference", "no-such-world")
    except LookupError as exc:
        assert "toyfaces" in str(exc) and "fairsynth.plugins" in str(exc)
    else:
        raise AssertionError("an unknown world was found")
