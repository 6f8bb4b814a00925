"""`tunelab settings`: every setting of every recipe family, by group, with its type, default and help.

The families are the `Recipe` base and every subclass of it that a `tunelab.<feature>.config` module
defines, found at run time, so a new family or setting appears without edits here. What is listed per
setting is what `--help` shows (`tunelab.config.settings_by_group`); `--markdown` gives the page
committed as docs/settings.md, which a test keeps equal to this output.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil

import tunelab
from tunelab.config import Recipe, settings_by_group

COMMAND = "tunelab settings --markdown > docs/settings.md"


def recipe_families() -> list[type[Recipe]]:
    """`Recipe` and every subclass of it in tunelab, after importing each feature's config module; bases first."""
    for module in pkgutil.iter_modules(tunelab.__path__):
        if module.ispkg and importlib.util.find_spec(f"tunelab.{module.name}.config") is not None:
            importlib.import_module(f"tunelab.{module.name}.config")
    families, pending = [], [Recipe]
    while pending:
        family = pending.pop(0)
        if family not in families:
            families.append(family)
            pending += sorted((cls for cls in family.__subclasses__() if cls.__module__.startswith("tunelab.")),
                              key=lambda cls: cls.__name__)
    return families


def family_settings(family: type[Recipe]) -> list[tuple[str, list[tuple]]]:
    """The settings `family` adds to its parent family or gives another default, by group (all of them for
    `Recipe`); groups left empty are dropped."""
    parent = parent_family(family)
    inherited = {f.name: shown for _, group in settings_by_group(parent()) for f, shown in group} if parent else {}
    grouped = [(group, [(f, shown, inherited.get(f.name)) for f, shown in settings
                        if inherited.get(f.name) != shown])
               for group, settings in settings_by_group(family())]
    return [(group, settings) for group, settings in grouped if settings]


def parent_family(family: type[Recipe]) -> type[Recipe] | None:
    return next((base for base in family.__bases__ if issubclass(base, Recipe)), None)


def family_title(family: type[Recipe]) -> str:
    parent = parent_family(family)
    return f"{family.__name__}: every recipe" if parent is None else f"{family.__name__}, beside {parent.__name__}"


def settings_text() -> str:
    """The reference as plain text, for the terminal."""
    lines = []
    for family in recipe_families():
        lines += [family_title(family), f"  {_summary(family)}"]
        for group, settings in family_settings(family):
            lines.append(f"  {group}:")
            for f, shown, before in settings:
                changed = f"; {before} in {parent_family(family).__name__}" if before is not None else ""
                lines += [f"    --{f.name} {f.type} (default: {shown}{changed})", f"        {f.metadata['help']}"]
        lines.append("")
    return "\n".join(lines)


def settings_markdown() -> str:
    """The reference as the Markdown page docs/settings.md."""
    lines = [
        "# Settings reference",
        "",
        "Every setting of every recipe family, by group: its type, its default and what it does. Give a setting on "
        "the command line as `--name value` (after the recipe file), or in a YAML file passed with `--config` as "
        "`name: value`; the command line wins. A recipe file sets its own values on top of these defaults: "
        "`--help` after a recipe (`tunelab run RECIPE --help`) lists the values that recipe and command line give.",
        "",
        f"This page is generated from each setting's declaration (`field(metadata={{\"help\": ...}})`) by `{COMMAND}`;"
        " a test fails when it differs from the code.",
    ]
    for family in recipe_families():
        lines += ["", f"## {family_title(family)}", "", _summary(family)]
        for group, settings in family_settings(family):
            lines += ["", f"### {group} ({family.__name__})", "", "| setting | type | default | what it does |",
                      "| --- | --- | --- | --- |"]
            lines += [f"| `--{f.name}` | {_code(str(f.type))} | {_code(shown)}{_changed(family, before)} | "
                      f"{_cell(f.metadata['help'])} |" for f, shown, before in settings]
    return "\n".join(lines) + "\n"


def _summary(family: type[Recipe]) -> str:
    return (family.__doc__ or family.__name__).strip().splitlines()[0]


def _changed(family: type[Recipe], before: str | None) -> str:
    return "" if before is None else f" ({_code(before)} in {parent_family(family).__name__})"


def _code(text: str) -> str:
    return f"`{_cell(text)}`" if text else "*(empty)*"


def _cell(text: str) -> str:
    """Text that stays inside one Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")
