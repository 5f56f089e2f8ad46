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
