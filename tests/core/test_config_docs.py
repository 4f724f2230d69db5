"""docs/configuration.md describes every environment variable the code reads,
and nothing the code does not read; its tables are what the generator makes now."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from tests.services_kit import ROOT

DOC = ROOT / "docs" / "configuration.md"
COMPOSE = ROOT / "docker-compose.yml"


def load_generator():
    spec = importlib.util.spec_from_file_location("gen_config_doc", ROOT / "scripts" / "gen-config-doc.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gen = load_generator()


def documented_names() -> set[str]:
    # A name ending in "_" is a prefix the prose talks about, not a variable.
    return set(re.findall(r"`([A-Z][A-Z0-9_]*[A-Z0-9])`", DOC.read_text()))


def test_generated_tables_are_up_to_date():
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen-config-doc.py"), "--check"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr + done.stdout


def test_every_settings_field_of_every_settings_class_is_documented():
    classes = gen.settings_classes()
    names = {f"{c.__module__}.{c.__name__}" for c in classes}
    # The two known classes must be found; any new one is picked up the same way.
    assert {"hivemind_celery.core.settings.Settings", "nodepool.settings.NodePoolSettings"} <= names
    documented = documented_names()
    missing = [
        env
        for cls in classes
        for name, field in cls.model_fields.items()
        for env in gen.env_names(cls, name, field)
        if env not in documented
    ]
    assert missing == []


def test_every_variable_read_directly_is_documented():
    reads = gen.direct_reads()
    assert "HIVEMIND_TEST_REDIS" in reads  # the scan does see the tests' reads
    missing = {name: sorted(files) for name, files in reads.items() if name not in documented_names()}
    assert missing == {}


def test_no_documented_variable_is_unknown_to_the_code():
    known = {
        env
        for cls in gen.settings_classes()
        for name, field in cls.model_fields.items()
        for env in gen.env_names(cls, name, field)
    }
    known |= set(gen.direct_reads())
    known |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]+)", COMPOSE.read_text())) if COMPOSE.exists() else set()
    stale = {name for name in documented_names() if name.startswith("HIVEMIND_") and name not in known}
    assert stale == set()


class _Example(BaseSettings):
    """A settings class made for this test."""

    model_config = SettingsConfigDict(env_prefix="EXAMPLE_")
    url: str = Field("redis://x", validation_alias=AliasChoices("THE_URL", "EXAMPLE_URL"), description="A | B")
    secret: SecretStr = Field(SecretStr(""), description="Never logged.")
    hosts: list[str] = Field(default_factory=list, description="Hosts <comma list>.")
    mode: Literal["a", "b"] = Field("a", description="Mode.")
    limit: float | None = Field(None, description="Seconds.")
    whole: float = Field(3600.0, description="Whole seconds.")
    flag: bool = Field(True, description="Switch.")


def test_a_settings_class_renders_to_the_right_rows():
    rows = {v.names[0]: v for v in gen.variables_of(_Example)}
    assert rows["THE_URL"].names == ("THE_URL", "EXAMPLE_URL")
    assert rows["THE_URL"].default == "`redis://x`"
    assert rows["THE_URL"].meaning == "A \\| B"
    assert (rows["EXAMPLE_SECRET"].type, rows["EXAMPLE_SECRET"].default) == ("secret text", "(empty)")
    assert (rows["EXAMPLE_HOSTS"].type, rows["EXAMPLE_HOSTS"].default) == ("comma list of text", "(empty)")
    assert rows["EXAMPLE_HOSTS"].meaning == "Hosts &lt;comma list&gt;."
    assert rows["EXAMPLE_MODE"].type == "a \\| b"
    assert (rows["EXAMPLE_LIMIT"].type, rows["EXAMPLE_LIMIT"].default) == ("number (optional)", "(unset)")
    assert rows["EXAMPLE_WHOLE"].default == "`3600`"
    assert rows["EXAMPLE_FLAG"].default == "true"


def test_an_undescribed_variable_read_in_code_stops_the_generator(tmp_path: Path, monkeypatch):
    package = tmp_path / "hivemind_celery"
    package.mkdir()
    # Split so this file itself does not read like a variable read to the scan.
    (package / "thing.py").write_text("import os\nLEVEL = os.environ" + '.get("HIVEMIND_BRAND_NEW")\n')
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "go.sh").write_text('echo "${HIVEMIND_FROM_SHELL:-x}"\n')
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    assert set(gen.direct_reads()) == {"HIVEMIND_BRAND_NEW", "HIVEMIND_FROM_SHELL"}
    with pytest.raises(SystemExit, match="HIVEMIND_BRAND_NEW.*HIVEMIND_FROM_SHELL"):
        gen.render()
