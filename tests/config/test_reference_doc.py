"""docs/config.md is rendered from the models; it must not drift from them."""

from __future__ import annotations

from pathlib import Path

from veloxy.config.model import Config
from veloxy.config.reference import SECTIONS, render

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def test_config_reference_is_up_to_date() -> None:
    assert DOC.read_text() == render(), (
        "docs/config.md is stale: run `python -m veloxy.config.reference > docs/config.md`")


def test_every_key_is_documented() -> None:
    text = render()
    for _, model in SECTIONS:
        for name in model.model_fields:
            if name not in ("source", "name"):
                assert f"**`{name}`**" in text
    assert "`listen`" in text and Config.model_fields["listen"].description
