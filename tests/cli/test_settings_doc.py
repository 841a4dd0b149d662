"""docs/settings.md is what the settings models say now: a new or changed setting without a rewritten
page fails here (rewrite it with scripts/gen_settings_doc.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sx.cli import settings_reference
from sx.scheduler import SchedulerSettings
from sx.worker import WorkerSettings

ROOT = Path(__file__).resolve().parent.parent.parent


def test_the_settings_reference_is_current() -> None:
    page = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    assert page == settings_reference(), "docs/settings.md is stale: run scripts/gen_settings_doc.py"


def test_every_setting_is_in_the_reference_with_its_twin() -> None:
    page = settings_reference()
    for model in (WorkerSettings, SchedulerSettings):
        for field in model.model_fields:
            assert f"| `{field}` |" in page and f"`SX_{field.upper()}`" in page, field


def test_the_readme_links_the_reference() -> None:
    assert "(docs/settings.md)" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_script_checks_for_staleness() -> None:
    script = ROOT / "scripts" / "gen_settings_doc.py"
    done = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
