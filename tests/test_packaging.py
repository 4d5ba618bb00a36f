"""midsweep as users install and meet it: a wheel carries the configs and runs from any directory, a user's own
config directory adds groups, and the three commands' --help read cleanly."""
import dataclasses
import os
import re
import shutil
import site
import subprocess
import sys
import time
import venv
import zipfile
from pathlib import Path

import pytest

from runner import REPO
from midsweep.config import GROUPS

PACKAGES = {"midsweep": "midsweep", "analysis": "midsweep_analysis", "hydra_plugins": "hydra_plugins"}
"""Source folder -> the name it is installed under."""
ALL_GROUPS = [*GROUPS, "experiment", "sweep"]


def run(cmd: list, cwd: Path, timeout: int = 600, **env) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env})
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


def checkout_copy(dest: Path) -> Path:
    """The files a fresh clone would have (tracked and new, not ignored), links kept as links: the wheel is built
    from them and not from whatever build/ or egg-info a developer's tree holds."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout to know the source files")
    names = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], REPO).stdout.split("\0")
    for name in filter(None, names):
        src, out = REPO / name, dest / name
        if not os.path.lexists(src):  # deleted in the working tree, not yet in git
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), out)
        else:
            shutil.copy2(src, out)
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A wheel built from a copy of the checkout, installed into a fresh venv whose other dependencies come
    from this environment's site-packages (no download); the build and install times are printed."""
    tmp = tmp_path_factory.mktemp("packaging")
    src = checkout_copy(tmp / "src")
    t0 = time.perf_counter()
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", tmp / "dist", src], tmp)
    t1 = time.perf_counter()
    env = tmp / "venv"
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    purelib = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp).stdout.strip()
    # a path in a .pth file is only added to sys.path: the editable install's own .pth there is not run
    (Path(purelib) / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    wheel = next((tmp / "dist").glob("midsweep-*.whl"))
    run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel], tmp)
    t2 = time.perf_counter()
    print(f"\nwheel build {t1 - t0:.1f}s, venv + install {t2 - t1:.1f}s, wheel {wheel.stat().st_size / 1e3:.0f} kB")
    return wheel, env / "bin", tmp / "elsewhere"


@pytest.mark.slow
def test_wheel_holds_every_module_the_configs_the_sweeps_and_the_license(installed):
    wheel, _, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {f"{name}/{p.relative_to(REPO / folder).as_posix()}" for folder, name in PACKAGES.items()
               for p in (REPO / folder).rglob("*.py")}
    missing = sorted(modules - names)
    assert not missing, f"not in the wheel: {missing}. Fix: see setup.py"
    top = {n.split("/")[0] for n in names if "/" in n and ".dist-info/" not in n}
    assert top == {*PACKAGES.values(), "midsweep_conf"}, f"top-level names in the wheel: {sorted(top)}"
    configs = {f"midsweep_conf/{p.relative_to(REPO / 'conf').as_posix()}" for p in (REPO / "conf").rglob("*.yaml")}
    sweeps = {f"midsweep_conf/sweep/{p.name}" for p in (REPO / "sweeps").glob("*.yaml")}
    assert sweeps and configs | sweeps <= names  # (rglob does not enter the conf/sweep link)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


@pytest.mark.slow
def test_installed_wheel_trains_and_previews_from_an_unrelated_directory(installed):
    _, bin_dir, cwd = installed
    cwd.mkdir(exist_ok=True)
    where = run([bin_dir / "python", "-c", "import midsweep, midsweep_conf, midsweep_analysis.cli; "
                 "print(midsweep.__file__, midsweep_conf.__file__, midsweep_analysis.cli.__file__)"], cwd).stdout
    assert str(REPO) not in where and str(bin_dir.parent) in where  # the installed copy, not this checkout
    cache = os.environ["MIDSWEEP_CACHE"]
    run([bin_dir / "midsweep-train", "experiment=nano_test", "train.tokens=2048", "eval.every_tokens=1024",
         "train.out_dir=out"], cwd, MIDSWEEP_CACHE=cache)
    (summary,) = (cwd / "out").glob("*/summary.json")
    assert '"status": "done"' in summary.read_text()
    grid = run([bin_dir / "midsweep-train", "-m", "experiment=nano_test", "mixture.weight=0.1,0.3",
                "train.out_dir=grid", "hydra.launcher.preview=true"], cwd, MIDSWEEP_CACHE=cache)
    assert "2 point(s)" in grid.stdout + grid.stderr
    study = run([bin_dir / "midsweep-train", "-m", "sweep=plasticity_window", "train.out_dir=study",
                 "hydra.launcher.preview=true"], cwd, MIDSWEEP_CACHE=cache)
    assert "preview only" in study.stdout + study.stderr
    assert not list(cwd.glob("grid/*/status.json"))  # a preview runs nothing


@pytest.mark.slow
def test_a_users_config_dir_adds_options_to_the_installed_groups(installed):
    _, bin_dir, cwd = installed
    mine = cwd / "my_conf"
    (mine / "model").mkdir(parents=True, exist_ok=True)
    (mine / "model" / "wide_nano.yaml").write_text("size: nano\nd_model: 128\nn_heads: 4\nseq_len: 64\n")
    (mine / "experiment").mkdir(exist_ok=True)
    (mine / "experiment" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model: wide_nano\nname: mine\n")
    for how in (["--config-dir", mine], [f"hydra.searchpath=[file://{mine}]"]):
        out = run([bin_dir / "midsweep-train", *how, "experiment=mine", "--cfg", "job"], cwd).stdout
        assert "name: mine" in out and "d_model: 128" in out
    # (Hydra lists the options of --config-dir in --help, not those of a hydra.searchpath override)
    helped = run([bin_dir / "midsweep-train", "--config-dir", mine, "--help"], cwd).stdout
    assert re.search(r"^model: .*\bwide_nano\b", helped, re.M)


# ---- --help


@pytest.fixture(scope="module")
def train_help():
    return run([sys.executable, "-m", "midsweep.train", "--help"], REPO).stdout


@pytest.mark.slow
def test_train_help_lists_every_group_with_its_options_and_no_schema(train_help):
    for group in ALL_GROUPS:
        options = sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))
        line = re.search(rf"^{group}: (.*)$", train_help, re.M)
        assert line, f"group {group} missing from --help"
        assert line.group(1).split(", ") == options
    assert "schema" not in train_help.lower()


@pytest.mark.slow
def test_train_help_documents_every_field_with_its_docstring(train_help):
    from midsweep.config import RunConfig
    from midsweep.app_help import field_docs

    words = " ".join(train_help.split())  # the help wraps docstrings at its own width
    for group, cls in GROUPS.items():
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            assert f"{group}.{f.name}:" in train_help
            assert " ".join(docs[f.name].split()) in words, f"{group}.{f.name}: docstring missing from --help"
    assert field_docs(RunConfig)["name"] in words


@pytest.mark.slow
@pytest.mark.parametrize("command", [["midsweep.launch.cli"], ["midsweep_analysis.cli"]])
def test_the_other_commands_help_reads_cleanly(command):
    text = run([sys.executable, "-m", *command, "--help"], REPO).stdout
    assert text.startswith("usage: midsweep") and "``" not in text
    description = text.split("\n\n")[1]
    assert description.rstrip().endswith(".")  # a whole sentence, not a docstring cut at its first line


@pytest.mark.slow
@pytest.mark.parametrize("command", ["status", "gc"])
def test_subcommand_help_describes_what_it_does(command):
    text = run([sys.executable, "-m", "midsweep.launch.cli", command, "--help"], REPO).stdout
    description = text.split("\n\n")[1]
    assert len(description.split()) > 10 and "``" not in description, description


@pytest.mark.slow
@pytest.mark.parametrize("command", [["midsweep.train"], ["midsweep.launch.cli"]])
def test_version_is_midsweeps(command):
    from importlib import metadata

    text = run([sys.executable, "-m", *command, "--version"], REPO).stdout
    assert text.strip() == f"midsweep {metadata.version('midsweep')}"


def test_the_analysis_package_imports_itself_by_relative_names():
    """analysis/ is installed as midsweep_analysis: an absolute ``analysis`` import would fail in a wheel, or
    pick up another project's package of that name."""
    import ast

    absolute = [f"{p.name}:{node.lineno}" for p in (REPO / "analysis").glob("*.py")
                for node in ast.walk(ast.parse(p.read_text()))
                if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("analysis")
                or isinstance(node, ast.Import) and any(a.name.startswith("analysis") for a in node.names)]
    assert not absolute, f"absolute imports of 'analysis' at {absolute}. Fix: from . import x / from .module import y"


@pytest.mark.slow
def test_the_users_config_directory_replaces_shipped_options_and_files_that_do_nothing_are_named(tmp_path):
    mine, extra = tmp_path / "mine", tmp_path / "extra"
    for path, text in {mine / "data" / "cluster.yaml": "tokenizer: my-org/my-tokenizer\n",
                       mine / "data" / "biultin.yaml": "tokenizer: bytes\n",
                       mine / "datta" / "x.yaml": "tokenizer: bytes\n",
                       extra / "data" / "builtin.yaml": "tokenizer: bytes\n"}.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    env = {"MIDSWEEP_CONFIG_DIR": str(mine)}
    job = run([sys.executable, "-m", "midsweep.train", "data=cluster", "--cfg", "job"], REPO, **env).stdout
    assert "tokenizer: my-org/my-tokenizer" in job  # read without a flag, before the shipped data/cluster.yaml
    proc = run([sys.executable, "-m", "midsweep.train", "-m", "--config-dir", extra, "experiment=nano_test",
                f"train.out_dir={tmp_path / 'out'}", "hydra.launcher.preview=true"], REPO, **env)
    out = proc.stdout + proc.stderr
    warned = [line for line in out.splitlines() if " is not used: " in line or " shadows nothing" in line]
    assert len(warned) == 3, out
    assert f"{extra / 'data' / 'builtin.yaml'} is not used: " in warned[2] and "data=<new name>" in warned[2]
    assert "'datta' is no config group (did you mean 'data'?)" in warned[1]
    assert "adds an option data=biultin" in warned[0] and "name it builtin.yaml" in warned[0]
    assert f"user config directory {mine}: replaces the shipped data/cluster" in out
