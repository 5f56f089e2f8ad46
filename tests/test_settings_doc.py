"""docs/serving.md's settings tables are the ones scripts/settings_table.py generates from the code:
a setting added, removed or changed (type, default, bounds, description), or an environment variable
read outside Settings, fails here until the page is regenerated (python scripts/settings_table.py)."""
import importlib.util

import pytest

from conftest import ROOT
from service.settings import Settings


def _script():
    spec = importlib.util.spec_from_file_location("settings_table", ROOT / "scripts" / "settings_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_setting_has_a_description():
    missing = [name for name, f in Settings.model_fields.items() if not (f.description or "").strip()]
    assert not missing, f"Settings fields without a description (service/settings.py): {missing}"


def test_the_settings_table_in_serving_md_is_current():
    st = _script()
    text = (ROOT / "docs" / "serving.md").read_text(encoding="utf-8")
    _, block, _ = st.split(text)
    want = st.render_block() + "\n"
    assert block == want, ("docs/serving.md's settings tables are stale: run python scripts/settings_table.py "
                           "(python scripts/settings_table.py --check shows the difference)")


def test_every_setting_and_variable_is_in_the_table():
    st = _script()
    block = st.render_block()
    for name in Settings.model_fields:
        assert f"| `CHARRNN_{name.upper()}` |" in block
    for var in st.env_reads():
        assert f"`{var}`" in block, f"{var} is read by the code but not in the table"


def test_an_undescribed_field_or_variable_fails_the_render(monkeypatch):
    st = _script()

    class Undescribed(Settings):
        extra_knob: int = 3

    with pytest.raises(ValueError, match="extra_knob"):
        st.render_block(Undescribed)
    monkeypatch.delitem(st.PROCESS_VARS, "PORT")  # read by gunicorn.conf.py, no longer described
    with pytest.raises(ValueError, match="PORT"):
        st.render_block()
