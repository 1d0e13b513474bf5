"""The command line: `tf-sharpness SUBCOMMAND`, the thin scripts, and the
line between the library and the command-line layer."""

import ast
import glob
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, run_cli
from tf_sharpness import cli


def test_help_lists_every_subcommand_and_unknown_ones_are_refused():
  proc = run_cli("--help")
  assert proc.returncode == 0, proc.stderr
  for name in cli.SUBCOMMANDS:
    assert f"\n  {name} " in proc.stdout
  proc = run_cli("fit")
  assert proc.returncode == 2 and "unknown subcommand 'fit'" in proc.stderr
  assert run_cli().returncode == 2


def test_a_subcommand_help_lists_its_own_flags():
  proc = run_cli("step-length", "--help")  # absl exits 1 after --help
  assert "--learning_rates" in proc.stdout and "--seeds" in proc.stdout
  assert "tf-sharpness step_length" in proc.stdout


def test_installed_console_command():
  scripts = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")}
  assert scripts.get("tf-sharpness") == "tf_sharpness.cli:main"


def test_every_subcommand_module_has_run_and_every_script_is_a_thin_wrapper():
  for module in cli.SUBCOMMANDS:
    path = os.path.join(REPO, "tf_sharpness", "cli", f"{module}.py")
    names = {n.name for n in ast.parse(open(path).read()).body
             if isinstance(n, ast.FunctionDef)}
    assert {"main", "run"} <= names, path
  for path in glob.glob(os.path.join(REPO, "scripts", "*.py")):
    tree = ast.parse(open(path).read())
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    if os.path.basename(path) != "screenshot_spectrum_tab.py":  # a dev tool, not a driver
      assert not functions, f"{path} defines {[f.name for f in functions]}: logic belongs in the package"


def test_one_name_per_subcommand_across_wrapper_cli_module_and_experiment():
  """scripts/NAME.py runs tf_sharpness.cli.NAME, and an experiment's module
  is tf_sharpness.experiments.NAME with EXPERIMENT = "NAME" (the key of its
  JSON); nsgd's is nsgd_table (tf_sharpness.nsgd is the optimizer)."""
  wrappers = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "scripts", "*.py"))}
  assert wrappers - {"screenshot_spectrum_tab"} == set(cli.SUBCOMMANDS)
  for name in cli.SUBCOMMANDS:
    assert (f"tf_sharpness.cli.{name}", [name]) in [
        (f"{m}.{n[0]}", n) for m, n in _imports(os.path.join(REPO, "scripts", f"{name}.py"))
        if n], name
  experiments = {os.path.basename(p)[:-3] for p in glob.glob(
      os.path.join(REPO, "tf_sharpness", "experiments", "*.py"))}
  shared = {"__init__", "results", "seeds"}
  assert experiments - shared == (set(cli.SUBCOMMANDS) - {"train", "report", "sweep_report",
                                                           "eos_report", "measure", "nsgd"}
                                  ) | {"nsgd_table"}
  for name in experiments - shared:
    module = importlib.import_module(f"tf_sharpness.experiments.{name}")
    expected = "nsgd" if name == "nsgd_table" else name
    assert getattr(module, "EXPERIMENT", expected) == expected, name


def _imports(path):
  tree = ast.parse(open(path).read())
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module:
      yield node.module, [a.name for a in node.names]
    elif isinstance(node, ast.Import):
      for a in node.names:
        yield a.name, []


def test_the_library_never_imports_absl_flags_and_nothing_patches_sys_path():
  library = [p for p in glob.glob(os.path.join(REPO, "tf_sharpness", "**", "*.py"),
                                  recursive=True)
             if os.sep + "cli" + os.sep not in p]
  for path in library:
    for module, names in _imports(path):
      assert module != "absl.flags" and not (module == "absl" and "flags" in names), path
      assert module != "tf_sharpness.cli" and not module.startswith("tf_sharpness.cli."), path
  for path in glob.glob(os.path.join(REPO, "**", "*.py"), recursive=True):
    if ".venv" in path or "site-packages" in path:
      continue
    for node in ast.walk(ast.parse(open(path).read())):
      if (isinstance(node, ast.Attribute) and node.attr == "path"
          and isinstance(node.value, ast.Name) and node.value.id == "sys"):
        raise AssertionError(f"{path} uses sys.path")


def test_benchmark_imports_resolve_when_run_as_python_benchmarks_x():
  """`python benchmarks/X.py` puts benchmarks/ on the path (not the repo):
  a benchmark imports its helpers as top-level modules that exist there."""
  folder = os.path.join(REPO, "benchmarks")
  local = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(folder, "*.py"))}
  for path in glob.glob(os.path.join(folder, "*.py")):
    for module, _ in _imports(path):
      assert not module.startswith("benchmarks"), f"{path}: import {module}"
      top = module.split(".")[0]
      if top in local:
        assert module == top, path


def test_library_errors_are_told_in_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  from tf_sharpness.cli import flags as flags_lib  # pylint: disable=g-import-not-at-top
  fv = flags.FlagValues()
  for name in ("seeds", "lr_epochs", "learning_rates", "train_size", "logdir"):
    flags.DEFINE_string(name, "", "", flag_values=fv)
  assert (flags_lib.as_flags("`lr_epochs` needs one value or one per `learning_rates`", fv)
          == "--lr_epochs needs one value or one per --learning_rates")
  assert (flags_lib.as_flags("`train_size=10` is below `batch_size=20`; seeds", fv)
          == "--train_size=10 is below `batch_size=20`; seeds")  # not a flag here: kept
  assert flags_lib.as_flags("`logdir`=/x is a file", fv) == "--logdir=/x is a file"
  # The library itself never says --flag: its messages name the setting.
  from tf_sharpness import training  # pylint: disable=g-import-not-at-top
  with pytest.raises(training.ConfigError, match="^`learning_rate` must be > 0"):
    training.Config(learning_rate=-1.0).validate()


def test_no_library_message_names_a_command_line_flag():
  """--name appears only in the command-line layer: no error the library
  raises (or builds) spells a flag."""
  offenders = []
  for path in glob.glob(os.path.join(REPO, "tf_sharpness", "**", "*.py"), recursive=True):
    if os.sep + "cli" + os.sep in path:
      continue
    for node in ast.walk(ast.parse(open(path).read())):
      call = node.exc if isinstance(node, ast.Raise) else node.value if isinstance(
          node, ast.Return) else None
      if not isinstance(call, ast.Call) or not getattr(call.func, "id", getattr(
          call.func, "attr", "")).endswith("Error"):
        continue
      for const in ast.walk(call):
        if isinstance(const, ast.Constant) and isinstance(const.value, str) and re.search(
            r"--[a-z]|--$", const.value):
          offenders.append(f"{os.path.relpath(path, REPO)}:{const.lineno}: {const.value!r}")
  assert not offenders, "\n".join(offenders)


def test_a_plain_install_runs_the_shipped_flagfiles(tmp_path):
  """`pip install .` (not editable) ships the flagfiles: `tf-sharpness eos`
  finds its own and `--flagfile=quick` names the README's job, run from a
  folder outside the checkout with only the installed copy importable."""
  target = tmp_path / "site"
  source = tmp_path / "source"  # a copy without build/: setuptools never prunes stale files
  shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
      ".git", ".venv", "build", "runs", "*.egg-info", "__pycache__", "docs", "shared"))
  pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                        "--no-build-isolation", f"--target={target}", str(source)],
                       capture_output=True, text=True, timeout=600)
  assert pip.returncode == 0, pip.stderr[-3000:]
  assert sorted(os.listdir(target / "tf_sharpness" / "flagfiles")) == sorted(
      os.path.basename(p) for p in glob.glob(os.path.join(REPO, "tf_sharpness", "flagfiles",
                                                          "*.cfg")))
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(target))
  run = lambda *args: subprocess.run([sys.executable, "-m", "tf_sharpness.cli", *args],
                                     cwd=tmp_path, capture_output=True, text=True,
                                     timeout=300, env=env)
  where = subprocess.run([sys.executable, "-c", "import tf_sharpness; print(tf_sharpness.__file__)"],
                         cwd=tmp_path, capture_output=True, text=True, env=env)
  assert where.stdout.startswith(str(target)), where.stdout  # the installed copy
  assert "--learning_rates" in run("eos", "--help").stdout
  eos = run("eos", "--learning_rates=0.05", "--steps=2", "--train_size=20",
            "--spectrum_every=2", f"--out={tmp_path / 'eos'}")
  assert eos.returncode == 0, eos.stderr[-3000:]
  assert os.path.exists(tmp_path / "eos" / "eos.json")
  train = run("train", "--flagfile=quick", "--steps=2", "--spectrum_every=2",
              "--train_size=64", "--batch_size=32", "--hessian_size=32", "--eval_every=0", f"--logdir={tmp_path / 'quick'}")
  assert train.returncode == 0, train.stderr[-3000:]
  with open(tmp_path / "quick" / "flags.txt") as f:
    assert "--model=" in f.read()
  missing = run("train", "--flagfile=nonesuch", "--steps=1")
  assert missing.returncode != 0 and "nonesuch" in missing.stderr


def test_report_reads_any_experiments_json():
  proc = run_cli("report", os.path.join("docs", "results", "walk.json"))
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.startswith("(walk)") and "48.3%" in proc.stdout
  trajectory = run_cli("report", os.path.join("docs", "results", "resnet32.json"))
  assert trajectory.returncode == 0 and "| epoch | step | train loss | lambda_max |" in (
      trajectory.stdout)
  bad = run_cli("report", "README.md")
  assert bad.returncode != 0 and "README.md:" in bad.stderr
