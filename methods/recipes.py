"""The training recipes of the baselines: the paper's common one, and each reference repository's
own, behind one option (``recipe``) that every baseline's config has.

Policy (docs/baselines.md, "Recipes"): every method's ``paper`` preset trains with the paper's
common recipe by default (its appendix: OHEM cross-entropy without class weights, batch 6,
AdamW with weight decay 0.01, warm-up poly, 100 epochs); ``recipe: reference`` gives what the
method's reference repository itself does where that differs, loss included. In the ``tiny``
preset (CPU, 500 steps) a ``reference`` recipe changes the loss and the shape of the schedule
(warm-up, decay, weight decay) but keeps the tiny length, batch and learning rate, which no
reference has.
"""

from __future__ import annotations

from typing import Any, Mapping

from mlebench.errors import ConfigError

RECIPES = ("paper", "reference")


def check_recipe(method: str, recipe: str) -> None:
    if recipe not in RECIPES:
        raise ConfigError(f"{method}: unknown recipe {recipe!r}; known: {', '.join(RECIPES)}")


def recipe_defaults(
    base: Mapping[str, Any], recipe: str, reference: Mapping[str, Mapping[str, Any]], preset: str
) -> dict[str, Any]:
    """``base`` (the preset's common recipe), with the ``reference`` overrides for ``preset`` when
    ``recipe == "reference"``."""
    options = dict(base)
    if recipe == "reference":
        options.update(reference.get(preset, {}))
    return options
