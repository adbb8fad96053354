"""TensorFlow's start-up lines are filtered by TF_CPP_MIN_LOG_LEVEL; nothing else is."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from distrain.tfimport import keep_line

INFO = b"I0000 00:00:1795459916.477560    5892 port.cc:153] oneDNN custom operations are on."
WARN = b"W0000 00:00:1758131045.228001 3722035 gpu_device.cc:2341] Cannot dlopen some GPU"
ERROR = b"E0000 00:00:1758131045.203198 3722035 cuda_dnn.cc:8579] Unable to register cuDNN"
FATAL = b"F0000 00:00:1758131045.203198 3722035 main.cc:1] Check failed"
NOTICE = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


@pytest.mark.parametrize("level, shown", [
    (0, {INFO, WARN, ERROR, FATAL, NOTICE}),
    (1, {WARN, ERROR, FATAL}),
    (2, {ERROR, FATAL}),
    (3, {FATAL}),
])
def test_absl_lines_below_the_level_are_dropped(level, shown):
    for line in (INFO, WARN, ERROR, FATAL, NOTICE):
        assert keep_line(line, level) == (line in shown), (line, level)


def test_other_lines_always_pass():
    for line in (b"Traceback (most recent call last):", b"", b"ImportError: libfoo.so",
                 b"I0000 is not a log line", b"2024-01-11 05:40:05.061907: plain text"):
        assert keep_line(line, 3)


@pytest.mark.timeout(120)
def test_importing_tensorflow_the_quiet_way_prints_nothing():
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    code = ("import sys; from distrain.tfimport import import_tensorflow; "
            "tf = import_tensorflow(); print('after', file=sys.stderr); print(tf.__version__)")
    result = subprocess.run([sys.executable, "-c", code], env=environment,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "after\n"  # descriptor 2 is back and nothing else came through
    assert result.stdout.strip()


@pytest.mark.timeout(60)
def test_the_filter_drops_hidden_lines_and_passes_the_rest_in_order(tmp_path):
    fake = tmp_path / "tensorflow"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "import os\n"
        "os.write(2, b'I0000 00:00:1795459916.477560    5892 port.cc:153] hidden\\n')\n"
        "os.write(2, b'a line of its own\\n')\n"
        "os.write(2, b'E0000 00:00:1795459916.477560    5892 x.cc:1] an error\\n')\n"
        "os.write(2, b'no newline at the end')\n")
    code = ("import sys; from distrain.tfimport import import_tensorflow; "
            "import_tensorflow(); sys.stderr.write('|after')")
    for level, expected in (
            ("1", "a line of its own\nE0000 00:00:1795459916.477560    5892 x.cc:1] an error\n"
                  "no newline at the end|after"),
            ("3", "a line of its own\nno newline at the end|after")):
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL=level,
                     PYTHONPATH=os.pathsep.join([str(tmp_path), ROOT])))
        assert result.returncode == 0, result.stderr
        assert result.stderr == expected
