"""The models the repository ships (models/): each is a complete release
whose files match its manifest (a clone that lost or mangled a weight file,
e.g. a Git LFS pointer in its place, fails here rather than at the user's
first command), with a model card, and the README's recipe points at one."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mtmeta.release import CARD, verify_release

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted(p for p in (ROOT / "models").glob("*") if p.is_dir())


@pytest.mark.parametrize("folder", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_release_is_complete_and_checksummed(folder: Path) -> None:
    manifest = verify_release(folder, include_card=True)
    weights = [n for n, f in manifest["files"].items() if f["role"] == "weights"]
    assert weights and all((folder / n).stat().st_size <= 60_000_000 for n in weights)
    assert "## Scores" in (folder / CARD).read_text(encoding="utf-8")


def test_first_command_recipe_names_a_shipped_model() -> None:
    recipe = yaml.safe_load((ROOT / "recipes" / "adapt-ro.yaml").read_text(encoding="utf-8"))
    assert (ROOT / recipe["pretrained"]).resolve() in [p.resolve() for p in SHIPPED]
