"""BUILD stays true: every .py under the source folders is named in it, and
every file it names exists."""

import glob
import os
import re

from conftest import REPO

FOLDERS = ("tf_sharpness", "tb_plugin", "scripts", "tests", "benchmarks")


def test_every_python_file_is_in_build():
  text = open(os.path.join(REPO, "BUILD")).read()
  named = set(re.findall(r'"([\w/.-]+\.py)"', text))
  present = set()
  for folder in FOLDERS:
    for path in glob.glob(os.path.join(REPO, folder, "**", "*.py"), recursive=True):
      present.add(os.path.relpath(path, REPO))
  assert present - named == set(), f"missing from BUILD: {sorted(present - named)}"
  assert named - present == set(), f"BUILD names missing files: {sorted(named - present)}"
