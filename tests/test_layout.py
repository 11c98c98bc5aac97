"""The house keeps its layout: csrc/ by layer with includes pointing down only, Python.h only
in the binding, no include or import circles, no source file far over 700 lines.

These guard what the re-layout (issue 13) built; each check fails on a real violation
(tested by the helper functions below on small made-up graphs, too).
"""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
LAYERS = ["core", "layers", "nets", "diffusion", "python"]   # lowest first
MAX_LINES = 750


def c_includes():
    """{file relative to csrc: [included project headers]}"""
    out = {}
    for f in sorted(CSRC.glob("*/*.[ch]")):
        rel = f.relative_to(CSRC).as_posix()
        out[rel] = re.findall(r'^\s*#\s*include\s+"([^"]+)"', f.read_text(), re.M)
    return out


def find_cycle(graph):
    """A list of nodes forming a cycle in {node: [successors]}, or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = {n: WHITE for n in graph}
    stack = []

    def visit(n):
        color[n] = GREY
        stack.append(n)
        for m in graph.get(n, ()):
            if color.get(m, WHITE) == GREY:
                return stack[stack.index(m):] + [m]
            if color.get(m, WHITE) == WHITE:
                c = visit(m)
                if c:
                    return c
        stack.pop()
        color[n] = BLACK
        return None

    for n in list(graph):
        if color[n] == WHITE:
            c = visit(n)
            if c:
                return c
    return None


def test_find_cycle_finds_cycles():
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) is not None
    assert find_cycle({"a": ["b"], "b": ["c"], "c": []}) is None


def test_csrc_is_laid_out_by_layer():
    dirs = sorted(p.name for p in CSRC.iterdir() if p.is_dir())
    assert dirs == sorted(LAYERS), dirs
    assert not list(CSRC.glob("*.[ch]")), "source files belong in a layer folder"


def test_includes_point_down_and_name_their_folder():
    bad = []
    for f, incs in c_includes().items():
        level = LAYERS.index(f.split("/")[0])
        for inc in incs:
            if "/" not in inc:
                bad.append(f"{f} includes {inc!r} without its folder")
                continue
            folder = inc.split("/")[0]
            if folder not in LAYERS or LAYERS.index(folder) > level:
                bad.append(f"{f} ({LAYERS[level]}) includes {inc} (higher)")
            if not (CSRC / inc).is_file():
                bad.append(f"{f} includes missing {inc}")
    assert not bad, "\n".join(bad)


def test_python_h_only_in_the_binding():
    bad = [f.relative_to(CSRC).as_posix() for f in CSRC.glob("*/*.[ch]")
           if f.parent.name != "python"
           and re.search(r'#\s*include\s+[<"](Python|numpy/)', f.read_text())]
    assert not bad, f"Python/NumPy headers outside csrc/python: {bad}"


def module_of(path, stems):
    """A file's module: a .c and its .h are one, and so are a module's private parts
    (nets/unet_layout.c and nets/unet_blocks.h belong to nets/unet)."""
    stem = path.rsplit(".", 1)[0]
    folder, name = stem.split("/")
    for other in stems:
        o_folder, o_name = other.split("/")
        if o_folder == folder and name.startswith(o_name + "_"):
            return other
    return stem


def test_no_include_cycle():
    incs_of = c_includes()
    stems = {f.rsplit(".", 1)[0] for f in incs_of}
    graph = {}
    for f, incs in incs_of.items():
        node = module_of(f, stems)
        graph.setdefault(node, set()).update(module_of(i, stems) for i in incs)
    graph = {n: sorted(m - {n}) for n, m in graph.items()}
    assert find_cycle(graph) is None, find_cycle(graph)


def test_no_python_import_cycle():
    graph = {}
    for f in sorted((ROOT / "ddpm").glob("*.py")):
        mod = f.stem
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    deps.add(node.module.split(".")[0])
                else:
                    deps.update(a.name for a in node.names)
        graph[mod] = sorted(deps - {mod, "_core"})
    # __init__ imports everything; nothing may import the package back
    users = [m for m, d in graph.items() if "__init__" in d]
    assert not users, users
    assert find_cycle(graph) is None, find_cycle(graph)


def test_no_source_file_far_over_700_lines():
    files = list(CSRC.glob("*/*.[ch]")) + list((ROOT / "ddpm").glob("*.py"))
    big = {f.relative_to(ROOT).as_posix(): n for f in files
           if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert not big, big
