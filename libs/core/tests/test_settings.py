"""One naming scheme for settings: a renamed setting is read under its new name, and under its
old one for a release, with a warning that names the new one."""

from __future__ import annotations

import logging

import pytest
from pydantic import Field

from switchboard.core import settings as core_settings
from switchboard.core.settings import ServiceSettings, renamed


class ExampleSettings(ServiceSettings):
    router_addr: str = Field(
        "127.0.0.1:50051", validation_alias=renamed("EX_ROUTER_ADDR", "EX_ROUTER_TARGET")
    )


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core_settings, "_warned", set())
    monkeypatch.delenv("EX_ROUTER_ADDR", raising=False)
    monkeypatch.delenv("EX_ROUTER_TARGET", raising=False)


def test_the_new_name_is_read_without_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("EX_ROUTER_ADDR", "router:1")
    with caplog.at_level(logging.WARNING):
        assert ExampleSettings().router_addr == "router:1"
    assert "renamed" not in caplog.text and "now called" not in caplog.text


def test_the_old_name_is_still_read_with_a_warning_naming_the_new_one(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("EX_ROUTER_TARGET", "router:2")
    with caplog.at_level(logging.WARNING):
        assert ExampleSettings().router_addr == "router:2"
        assert ExampleSettings(EX_ROUTER_TARGET="router:3").router_addr == "router:3"
    assert caplog.text.count("EX_ROUTER_TARGET is now called EX_ROUTER_ADDR") == 1


def test_the_new_name_wins_over_the_old(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EX_ROUTER_TARGET", "old:1")
    monkeypatch.setenv("EX_ROUTER_ADDR", "new:1")
    assert ExampleSettings().router_addr == "new:1"
