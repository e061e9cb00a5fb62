"""The package's structure: no import circles between its modules, counting imports made
inside functions (a circle hidden in a function still couples the two modules)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "coolchic"


def _import_graph() -> dict[str, set[str]]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (iterative Tarjan)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            child = next(edges, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_the_cycle_finder_finds_a_circle_and_passes_a_chain():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_two_modules_of_the_package_import_each_other_even_through_others():
    graph = _import_graph()
    assert "coolchic.decoder.constants" in graph and graph["coolchic.decoder.reconstruct"]
    assert _cycles(graph) == []


# what a decoder must never load: the training loop, its recipes and quantizers, the encoders
TRAINING = {"coolchic.train", "coolchic.train_batch", "coolchic.presets", "coolchic.quant",
            "coolchic.encode", "coolchic.encode_batch", "coolchic.rate_control", "coolchic.cli"}


def _reachable(graph: dict[str, set[str]], start: str, *, skip: str) -> set[str]:
    """The modules `start` imports, directly or through others, not entering `skip`."""
    seen, todo = set(), [start]
    while todo:
        for child in graph[todo.pop()]:
            if child not in seen and not child.startswith(skip):
                seen.add(child)
                todo.append(child)
    return seen


def test_the_decoder_package_reaches_no_training_code_even_through_others():
    # The amortized codecs are skipped: `decode` hands their streams to their own decoders,
    # whose modules hold their training too (the runtime test, test_codec.py's
    # test_decoder_imports_no_training_code, checks what decoding a coolchic stream loads).
    graph = _import_graph()
    decoder = sorted(name for name in graph if name.startswith("coolchic.decoder"))
    assert {"coolchic.decoder.api", "coolchic.decoder.dispatch", "coolchic.decoder.native"} <= set(decoder)
    for name in decoder:
        reached = _reachable(graph, name, skip="coolchic.amortized")
        assert not reached & TRAINING, (name, sorted(reached & TRAINING))
        assert not any(r.startswith("coolchic.evaluate") for r in reached), name
        optim = [r for r in reached if "torch.optim" in _source(r).read_text()]
        assert not optim, (name, optim)


def _source(module: str) -> Path:
    path = PACKAGE.parent.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
