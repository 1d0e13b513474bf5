"""Run folders never lose or mix data: starting over, continuing and refusing
are explicit, and mistakes are one-line errors naming the flag."""

import glob
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, run_cli
from tf_sharpness.cli import flags as flags_lib
from tf_sharpness import reuse, rundir, training
from tf_sharpness.errors import ConfigError

TRAIN = os.path.join(REPO, "scripts", "train.py")


def tiny(logdir, **overrides) -> training.Config:
  base = dict(logdir=logdir, dataset="cifar10_mini", train_size=200, model="fcn",
              depth=1, width=16, batch_size=50, steps=4, spectrum_every=2,
              spectrum_k=2, spectrum_iters=30, hessian_size=40, eval_every=0,
              log_every=1, learning_rate=0.05, checkpoint_every=2)
  base.update(overrides)
  return training.Config(**base)


def snapshot(logdir):
  """Every file of a run folder with its bytes."""
  out = {}
  for path in glob.glob(os.path.join(logdir, "**"), recursive=True):
    if os.path.isfile(path):
      with open(path, "rb") as f:
        out[os.path.relpath(path, logdir)] = f.read()
  return out


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  logdir = str(tmp_path_factory.mktemp("runs") / "done")
  training.train(tiny(logdir))
  return logdir


def test_rerun_without_resume_refuses_and_touches_nothing(finished_run):
  before = snapshot(finished_run)
  with pytest.raises(rundir.RunDirError, match="`resume`.*`overwrite`"):
    training.train(tiny(finished_run))
  assert snapshot(finished_run) == before


@pytest.mark.parametrize("change,named", [
    (dict(learning_rate=0.1), "`learning_rate` is 0.1, the checkpoint has 0.05"),
    (dict(seed=3), "`seed` is 3, the checkpoint has 0"),
    (dict(width=32), "`width` is 32, the checkpoint has 16"),
])
def test_resume_with_other_settings_is_refused(finished_run, change, named):
  before = snapshot(finished_run)
  with pytest.raises(rundir.RunDirError, match="made with other settings") as e:
    training.train(tiny(finished_run, resume=True, steps=6, **change))
  assert named in str(e.value)
  assert "`steps`" not in str(e.value)  # steps may change on resume
  assert snapshot(finished_run) == before  # flags.txt included


def test_resume_may_change_steps(tmp_path):
  logdir = str(tmp_path / "run")
  training.train(tiny(logdir))
  training.train(tiny(logdir, resume=True, steps=6))
  records = training.read_metrics(logdir)
  assert [r["step"] for r in records] == [0, 1, 2, 3, 4, 5, 6]
  assert records[-1]["final"] and "--steps=6" in open(os.path.join(logdir, "flags.txt")).read()


def test_overwrite_starts_over_and_keeps_other_files(finished_run, tmp_path):
  logdir = str(tmp_path / "again")
  training.train(tiny(logdir))
  old_events = set(glob.glob(os.path.join(logdir, "events.out.tfevents.*")))
  with open(os.path.join(logdir, "notes.txt"), "w") as f:
    f.write("mine")
  training.train(tiny(logdir, overwrite=True, steps=2))
  assert not old_events & set(glob.glob(os.path.join(logdir, "events.out.tfevents.*")))
  assert [r["step"] for r in training.read_metrics(logdir)] == [0, 1, 2]
  assert open(os.path.join(logdir, "notes.txt")).read() == "mine"
  with pytest.raises(rundir.RunDirError, match="contradict"):
    training.train(tiny(logdir, overwrite=True, resume=True))


def test_resume_without_a_checkpoint(tmp_path):
  logdir = str(tmp_path / "nockpt")
  training.train(tiny(logdir, checkpoint_every=0))
  before = snapshot(logdir)
  with pytest.raises(rundir.RunDirError, match="no checkpoint to continue from"):
    training.train(tiny(logdir, checkpoint_every=0, resume=True))
  assert snapshot(logdir) == before
  # An empty or missing folder: nothing to resume, a new run starts.
  fresh = str(tmp_path / "fresh")
  training.train(tiny(fresh, resume=True, steps=2))
  assert [r["step"] for r in training.read_metrics(fresh)] == [0, 1, 2]


def test_checkpoint_from_another_folder_is_refused(tmp_path, finished_run):
  """A checkpoints/ folder copied from a run with another seed."""
  import shutil
  logdir = str(tmp_path / "copied")
  os.makedirs(logdir)
  shutil.copytree(os.path.join(finished_run, "checkpoints"),
                  os.path.join(logdir, "checkpoints"))
  with pytest.raises(rundir.RunDirError, match="`seed` is 5"):
    training.train(tiny(logdir, resume=True, seed=5, steps=6))


def test_half_written_metrics_line_is_dropped_on_resume(tmp_path, caplog):
  logdir = str(tmp_path / "half")
  training.train(tiny(logdir, steps=4, checkpoint_every=2))
  path = os.path.join(logdir, "metrics.jsonl")
  with open(path, "a") as f:
    f.write('{"step": 5, "loss": 1.2')  # a kill in the middle of a write
  with caplog.at_level("WARNING", logger="tf_sharpness"):
    training.train(tiny(logdir, resume=True, steps=6))
  assert "half-written last line" in caplog.text
  assert [r["step"] for r in training.read_metrics(logdir)] == list(range(7))


def test_finished_run_is_reused_even_without_a_last_measurement(tmp_path, monkeypatch):
  logdir = str(tmp_path / "reuse")
  cfg = tiny(logdir, spectrum_every=0, steps=3, log_every=2)
  first = reuse.train_or_reuse(cfg)
  assert {k: first[-1][k] for k in ("step", "epoch", "final")} == {
      "step": 3, "epoch": 0.75, "final": True}
  assert set(first[-1]) <= {"step", "epoch", "final", "distance_from_init"}
  monkeypatch.setattr(training, "train", lambda cfg: pytest.fail("trained again"))
  assert reuse.train_or_reuse(cfg) == first


def test_unfinished_run_continues_from_its_checkpoint(tmp_path, monkeypatch):
  logdir = str(tmp_path / "unfinished")
  training.train(tiny(logdir, steps=2, checkpoint_every=2))
  resumed = []
  real = training.train
  monkeypatch.setattr(training, "train", lambda cfg: resumed.append(cfg.resume) or real(cfg))
  records = reuse.train_or_reuse(tiny(logdir, steps=4, checkpoint_every=2))
  assert resumed == [True] and [r["step"] for r in records] == [0, 1, 2, 3, 4]


def test_start_of_a_longer_run_is_reused_up_to_the_steps_asked(tmp_path, monkeypatch):
  logdir = str(tmp_path / "longer")
  longer = reuse.train_or_reuse(tiny(logdir, steps=6, checkpoint_every=2, log_every=1))
  assert [r["step"] for r in longer] == list(range(7))
  monkeypatch.setattr(training, "train", lambda cfg: pytest.fail("trained again"))
  assert reuse.train_or_reuse(tiny(logdir, steps=4, checkpoint_every=2, log_every=1)
                              ) == longer[:5]
  with pytest.raises(rundir.RunDirError, match="`target_train_loss`"):
    reuse.train_or_reuse(tiny(logdir, steps=4, checkpoint_every=2, log_every=1,
                                 target_train_loss=0.1))


@pytest.mark.parametrize("logdir,message", [
    ("FILE", "is a file, not a folder"),
    ("", "--logdir must be a folder path"),
    ("FILE/sub", "cannot be created"),
])
def test_bad_logdir_is_one_line(tmp_path, logdir, message):
  path = tmp_path / "afile"
  path.write_text("x")
  logdir = logdir.replace("FILE", str(path))
  proc = run_cli("train", f"--logdir={logdir}", "--steps=1", "--train_size=100",
                    "--model=fcn", "--depth=1", "--width=8", timeout=120)
  assert proc.returncode == 1
  assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-1500:]


def test_rerun_message_from_the_command_line(finished_run):
  cfg = tiny(finished_run)
  proc = run_cli("train", *flags_lib.flagfile_text(cfg).split(), timeout=120)
  assert proc.returncode == 1
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and "--resume" in last and "--overwrite" in last


def test_ctrl_c_flushes_and_exits_130(tmp_path):
  logdir = str(tmp_path / "int")
  cfg = tiny(logdir, steps=10**6, checkpoint_every=5, spectrum_every=0)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  # A shell that starts a command in the background (`cmd &` without job
  # control) sets SIGINT to "ignore", and a child inherits that: give the
  # run the default disposition, as a terminal would.
  proc = subprocess.Popen([sys.executable, TRAIN, *flags_lib.flagfile_text(cfg).split()],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  state = os.path.join(logdir, "checkpoints", "checkpoint")
  deadline = time.time() + 120
  while not os.path.exists(state) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  proc.send_signal(signal.SIGINT)
  try:
    _, err = proc.communicate(timeout=180)  # a loaded 2-core machine is slow to exit
  except subprocess.TimeoutExpired:
    proc.kill()
    _, err = proc.communicate()
    pytest.fail(f"still running 180 s after Ctrl-C; its log ends:\n{err[-3000:]}")
  assert proc.returncode == 130, err[-2000:]
  assert "interrupted" in err and "--resume continues from the checkpoint at step" in err
  assert "Traceback" not in err
  assert len(training.read_metrics(logdir)) >= 5


_INTERNAL_ERROR_CHECK = """
import sys
from tf_sharpness.cli import train  # scripts/train.py: defines its flags on absl's global FLAGS
from tf_sharpness import training
from tf_sharpness.cli import flags as flags_lib
from tf_sharpness.errors import ConfigError
flags_lib.config_from_flags = lambda: training.Config(logdir="unused")
def raise_(error):
  def train_(cfg):
    raise error
  return train_
training.train = raise_(ConfigError("`width` must be >= 1"))
print("config error exit", train.main(["train.py"]), flush=True)
training.train = raise_(ValueError("Shape mismatch inside TensorFlow"))
train.main(["train.py"])
"""


def test_internal_errors_are_not_reported_as_flag_errors():
  """Only user mistakes become 'error: ...'; a bug keeps its traceback.  (In
  a subprocess: the script defines flags on absl's global FLAGS, which other
  scripts loaded by the tests define too.)"""
  proc = subprocess.run([sys.executable, "-c", _INTERNAL_ERROR_CHECK],
                        capture_output=True, text=True, timeout=120, cwd=REPO,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert "config error exit 1" in proc.stdout, proc.stderr[-1500:]
  assert "error: --width must be >= 1" in proc.stderr
  assert proc.returncode != 0
  assert "Traceback" in proc.stderr and "Shape mismatch" in proc.stderr
  assert "error: Shape mismatch" not in proc.stderr


@pytest.mark.parametrize("overrides,message", [
    (dict(spectrum_k=40, spectrum_iters=30), "`spectrum_k=40` needs at least as many"),
    (dict(optimizer="nsgd", nsgd_top_k=40, spectrum_iters=30), "`nsgd_top_k=40`"),
    (dict(width=1, spectrum_k=4000, spectrum_iters=4000),
     "ask for 4000 eigenpairs, but the model has only 3093 parameters"),
])
def test_limits_are_checked_before_any_work(tmp_path, overrides, message):
  """Named errors before a k x parameters buffer is allocated."""
  cfg = tiny(str(tmp_path / "lim"), **overrides)
  with pytest.raises(ConfigError, match=message):
    training.train(cfg)


def test_spectrum_k_1_with_surfaces(tmp_path):
  """The 2-D surface needs e2: the measurement asks for 2 eigenpairs."""
  logdir = str(tmp_path / "k1")
  training.train(tiny(logdir, spectrum_k=1, slice_2d_every=2, slice_2d_points=3,
                      landscape_size=40, landscape_minibatches=1, steps=2))
  records = [r for r in training.read_metrics(logdir) if "surface_e1_e2_min" in r]
  assert [r["step"] for r in records] == [0]
  assert all(len(r["top_eigenvalues"]) == 1 for r in training.read_metrics(logdir)
             if "top_eigenvalues" in r)
