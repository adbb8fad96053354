"""The import rules of docs/architecture.md."""
import ast
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "distrain"
COLLECTIVE_MODULES = ["runtime.py", "process_sets.py", "reducing.py", "gathering.py",
                      "broadcasting.py", "sync_points.py", "basics.py", "op_bridge.py",
                      "gradients.py", "name_matching.py", "collective_timeline.py"]
CORE = ["__init__.py", "environment.py", "protocol.py", "cores.py", "ops.py", "errors.py",
        "files.py", "failfast.py", "tfimport.py", "keras_compat.py", "horovod_settings.py",
        "collectives.py",
        "overlap.py", "engine", "backends", "keras", "tensorflow",
        "elastic"] + COLLECTIVE_MODULES
ABOVE_THE_CORE = ("train", "timing", "costmodel", "bench")
ABOVE_THE_COLLECTIVES = ("train", "timing", "costmodel", "bench", "run")


def _modules(*names: str) -> list[pathlib.Path]:
    paths = []
    for name in names:
        path = PACKAGE / name
        paths.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return paths


def _imports(path: pathlib.Path) -> list[str]:
    """Every module ``path`` imports, at any depth (function-level imports included);
    ``from distrain import x`` counts as ``distrain.x``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
            found.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _name(path: pathlib.Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


def test_the_package_imports_the_modules_it_uses_not_the_lazy_package_names():
    """``import distrain`` then ``distrain.allreduce(...)`` goes through the package's lazy
    ``__getattr__``, an edge that no import rule here could see."""
    defined = {target.id for node in ast.parse((PACKAGE / "__init__.py").read_text()).body
               if isinstance(node, ast.Assign) for target in node.targets
               if isinstance(target, ast.Name)}
    found = []
    for path in _modules("."):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.extend(f"{_name(path)}:{node.lineno} imports distrain"
                             for alias in node.names if alias.name == "distrain")
            elif isinstance(node, ast.ImportFrom) and node.module == "distrain":
                found.extend(f"{_name(path)}:{node.lineno} takes {alias.name} from distrain"
                             for alias in node.names if alias.name not in defined
                             and not (PACKAGE / alias.name).is_dir()
                             and not (PACKAGE / f"{alias.name}.py").is_file())
    assert found == []


def test_the_rank_wrapper_and_the_modules_it_shares_use_the_standard_library_only():
    shared = ("distrain.protocol", "distrain.cores")
    found = [f"{_name(path)} imports {module}"
             for path in _modules("run/rank.py", "protocol.py", "cores.py")
             for module in _imports(path)
             if module.split(".")[0] not in sys.stdlib_module_names
             and not (module in shared or module.startswith(tuple(m + "." for m in shared)))]
    assert found == []


def test_the_core_never_imports_the_layers_above_it():
    above = tuple(f"distrain.{layer}" for layer in ABOVE_THE_CORE)
    found = [f"{_name(path)} imports {module}" for path in _modules(*CORE)
             for module in _imports(path)
             if module in above or module.startswith(tuple(a + "." for a in above))]
    assert found == []


def test_the_engine_imports_only_ops_and_itself_and_neither_mpi_nor_tensorflow():
    found = [f"{_name(path)} imports {module}" for path in _modules("engine")
             for module in _imports(path)
             if module.split(".")[0] in ("mpi4py", "tensorflow", "keras", "horovod")
             or (module.startswith("distrain") and module != "distrain"
                 and not module.startswith(("distrain.ops", "distrain.engine")))]
    assert found == []


def test_nothing_above_the_collective_layer_reaches_into_a_backend():
    """Above the collective layer code uses distrain.collectives: no backend, no engine,
    none of the modules behind collectives.py."""
    behind = {f"distrain.{m[:-3]}" for m in COLLECTIVE_MODULES}
    found = []
    for path in _modules(*ABOVE_THE_COLLECTIVES):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module in behind or \
                    isinstance(node, ast.ImportFrom) and node.module == "distrain" and any(
                        f"distrain.{a.name}" in behind for a in node.names):
                found.append(f"{_name(path)}:{node.lineno} imports {node.module}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr == "backend":
                found.append(f"{_name(path)}:{node.lineno} calls .backend()")
            if isinstance(node, ast.Attribute) and node.attr in ("engine", "transport"):
                found.append(f"{_name(path)}:{node.lineno} reads .{node.attr}")
    assert found == []


def _heavy_modules_loaded_by(code: str) -> list[str]:
    """The heavy packages (TensorFlow, Keras, mpi4py, numpy, Horovod) a fresh interpreter
    has loaded after running ``code``."""
    report = ("\nimport sys\n"
              "print(sorted({m.split('.')[0] for m in sys.modules} & "
              "{'tensorflow', 'keras', 'mpi4py', 'numpy', 'horovod'}))\n")
    done = subprocess.run([sys.executable, "-c", code + report], capture_output=True,
                          text=True, timeout=100)
    assert done.returncode == 0, done.stderr
    return ast.literal_eval(done.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(120)
def test_the_launcher_process_loads_neither_tensorflow_nor_mpi4py():
    modules = sorted(f"distrain.run.{p.stem}" for p in (PACKAGE / "run").glob("*.py")
                     if p.stem != "__main__")
    code = ("import importlib\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "import distrain\n"
            "from distrain.run.cli import build_parser\n"
            "build_parser().parse_args(['-np', '2', 'python', 'train.py'])\n")
    assert _heavy_modules_loaded_by(code) == []


@pytest.mark.timeout(120)
def test_the_tensorflow_face_loads_keras_only_when_sync_batch_normalization_is_used():
    """SyncBatchNormalization subclasses a Keras layer: distrain.tensorflow loads it on
    first use."""
    assert set(_heavy_modules_loaded_by("import distrain.tensorflow")) <= {"numpy"}


def test_the_package_starts_distrain_run_through_an_interpreter_never_through_path():
    found = [f"{_name(path)}:{node.lineno}" for path in _modules(".")
             for node in ast.walk(ast.parse(path.read_text(), str(path)))
             if isinstance(node, ast.List) and node.elts
             and isinstance(node.elts[0], ast.Constant) and node.elts[0].value == "distrain-run"]
    assert found == []


def test_one_module_owns_the_record_kinds_and_the_exit_codes():
    """Records and exit codes (124, 130, 143, 75, ...) are named in distrain/protocol.py and
    used by name everywhere else."""
    codes = {75, 124, 127, 130, 137, 143}
    allowed = {"distrain/protocol.py"}
    found = []
    for path in _modules("."):
        if _name(path) in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and not isinstance(node.value, bool) and (
                    node.value in codes if isinstance(node.value, int)
                    else isinstance(node.value, str) and "\x1edistrain" in node.value):
                found.append(f"{_name(path)}:{node.lineno} {node.value!r}")
    assert found == []
