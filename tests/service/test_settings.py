"""Settings are declared once (service.settings); the docs' table and every view derive from it."""

from pathlib import Path

import pytest

from service import create_app
from service.settings import SETTINGS, ConfigError, DefaultConfig, markdown_table

CONFIGURATION_PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_the_documented_table_is_the_declared_settings():
    stale = "docs/configuration.md's table is stale: paste `python -m service.settings`"
    assert markdown_table() in CONFIGURATION_PAGE.read_text(), stale


def test_every_setting_the_app_reads_has_a_flask_default():
    for setting in SETTINGS:
        if setting.env == f"TOXISERVE_{setting.name}":
            assert hasattr(DefaultConfig, setting.name)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"MAX_BATCH_SIZE": 0}, "TOXISERVE_MAX_BATCH_SIZE must be between"),
        ({"STORE_FAILURE_MODE": "sideways"}, "TOXISERVE_STORE_FAILURE_MODE must be one of"),
        ({"REQUEST_DEADLINE": "soon"}, "TOXISERVE_REQUEST_DEADLINE must be a number"),
        ({"RATE_LIMITS_PER_KEY": "[1]"}, "TOXISERVE_RATE_LIMITS_PER_KEY must be a JSON object"),
        ({"GRPC_PORT": 70000}, "TOXISERVE_GRPC_PORT must be between"),
    ],
)
def test_a_bad_value_stops_the_service_naming_its_variable(override, message):
    with pytest.raises(ConfigError, match=message):
        create_app({"TESTING": True, "API_KEYS": "t:key-0123456789abcdef", **override})


def test_process_settings_reach_the_typed_view(monkeypatch):
    monkeypatch.setenv("PORT", "9123")
    monkeypatch.setenv("TOXISERVE_GRPC_THREADS", "3")
    settings = (
        create_app({"TESTING": True, "API_KEYS": "t:key-0123456789abcdef", "GRPC_THREADS": 3})
        .extensions["toxiserve"]
        .settings
    )
    assert (settings.port, settings.grpc_threads, settings.max_queue_wait) == (9123, 3, 0.5)
