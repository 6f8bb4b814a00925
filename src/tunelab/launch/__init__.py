"""The commands on top: running a recipe (recipe.py), accelerate launch per hardware profile, the run plan."""
