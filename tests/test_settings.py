import pytest
from pydantic import ValidationError

from service.settings import Settings


def test_from_env_parses_and_validates():
    s = Settings.from_env({"CHARRNN_MAX_BATCH": "8", "CHARRNN_DEVICE": "cpu", "CHARRNN_REQUEST_TIMEOUT_S": "2.5",
                           "OTHER": "x"})
    assert (s.max_batch, s.device, s.request_timeout_s, s.weights) == (8, "cpu", 2.5, "weights/shakespeare")
    assert "max_batch" in s.limits() and "weights" not in s.limits()
    assert Settings.from_env({}, max_n=3).max_n == 3  # explicit overrides win


@pytest.mark.parametrize("env", [{"CHARRNN_MAX_BATCH": "many"}, {"CHARRNN_MAX_BATCH": "0"},
                                 {"CHARRNN_DEVICE": "tpu"}, {"CHARRNN_REQUEST_TIMEOUT_S": "-1"},
                                 {"CHARRNN_PRECISION": "int3"}])
def test_bad_settings_fail_at_startup_naming_the_field(env):
    with pytest.raises(ValidationError) as e:
        Settings.from_env(env)
    name = next(iter(env)).removeprefix("CHARRNN_").lower()
    assert name in str(e.value)


def test_the_engine_stops_at_interpreter_exit(tmp_path):
    """create_app's engine thread is stopped by an atexit hook, whatever server runs the app."""
    import subprocess
    import sys
    from conftest import ROOT, env_with_path
    code = ("import torch; from model import CharRNN, ModelConfig, Vocab; from model.checkpoint import save_weights\n"
            "from service import create_app; from service.settings import Settings; import service.engine as E\n"
            f"v = Vocab(list('ab ')); save_weights(CharRNN(ModelConfig(3, 4, 8, 1, 0.0)), v, r'{tmp_path}/w')\n"
            f"app = create_app(Settings(weights=r'{tmp_path}/w', device='cpu'))\n"
            "eng = app.extensions['charrnn'].engine\n"
            "stop = E.Engine.stop\n"
            "def spy(self, *a, **k):\n    print('engine stopped', flush=True); return stop(self, *a, **k)\n"
            "E.Engine.stop = spy\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env_with_path(), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "engine stopped" in r.stdout
