"""Write docs/settings.md, the reference of every setting id, from the rules and the configs themselves.

Each id's description and allowed values come from its rule (``bundle.settings.RULES`` and ``WORKFLOW_RULES``,
declared beside the component that consumes the id, with ``bundle.values.described``); its defaults come from
the configs, read with MONAI's ``ConfigParser`` as ``python -m monai.bundle run`` reads them. The checks over
several ids are listed from ``bundle.settings.CHECKS``. Nothing on the page is written by hand, so it cannot
drift from what a run checks.

    python .ci/make_settings_doc.py --check   # say whether docs/settings.md differs from what the rules give
    python .ci/make_settings_doc.py --fix     # rewrite it (``make docs``)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the bundle of this checkout, whichever copy is installed

from monai.bundle import ConfigParser  # noqa: E402

from bundle import settings  # noqa: E402
from bundle.values import BOOLEAN_SPELLINGS, allowed_text  # noqa: E402
from bundle.workflow import WORKFLOW_CONFIGS  # noqa: E402

PAGE = ROOT / "docs" / "settings.md"
WORKFLOWS = WORKFLOW_CONFIGS
# overlays add settings to the workflows they run on; only the ids they set themselves are listed for them
OVERLAYS = {"multi-GPU": ["multi_gpu_train", "multi_gpu_pretrain", "multi_gpu_evaluate"], "TensorRT": ["inference_trt"]}
SHORT = {"pretrain_contrastive": "contrastive", "pretrain_inpainting": "inpainting", "pretrain_pretext": "pretext"}
MAX_VALUE = 80  # characters of a default shown; a longer expression is cut (the config holds it whole)

HEAD = """# Settings

<!-- Written by `make docs` (.ci/make_settings_doc.py) from the rules in bundle/ and the configs: do not edit. -->

Every id is overridable on the command line as `--<id> <value>`, for example
`python -m monai.bundle run --config_file configs/train.json --max_epochs 5`. Each id has one rule, wherever it
appears; every run first checks them all and stops with one message listing every bad setting
([reliability.md](reliability.md)). *Default*: the config's value, expression (`$...`) or reference (`@id`), per
workflow where they differ; *the weights' recipe* is the value recorded beside the weights the run starts from
(`model.pt` for evaluation and inference, `pretrained_ckpt` for training; [reliability.md](reliability.md)).
*Workflows*: `train`, `evaluate` (on top of train.json), `inference`, `contrastive`,
`inpainting`, `pretext` (configs/pretrain_*.json), `curriculum`, the `multi-GPU` overlays
(configs/multi_gpu_*.json) and the `TensorRT` overlay (configs/inference_trt.json).
Boolean ids accept {booleans} in any case.
"""


def cell(text: str) -> str:
    """A Markdown table cell: ``|`` escaped, reStructuredText's double backticks as Markdown's single ones."""
    return text.replace("``", "`").replace("|", "\\|").replace("\n", " ")


def shown(value: Any) -> str:
    """A config value as a code span, cut to ``MAX_VALUE`` characters; a default taken from the weights' recipe
    is told in words."""
    recipe = re.fullmatch(r"\$@weights_recipe\.get\('\w+', (.+)\)", value) if isinstance(value, str) else None
    if recipe:
        return f"the weights' recipe, else `{recipe.group(1)}`"
    text = value if isinstance(value, str) else json.dumps(value)
    if len(text) > MAX_VALUE:  # cut at a space, so that no word is cut in two
        text = text[: MAX_VALUE - 4].rsplit(" ", 1)[0] + " ..."
    return f"`{text}`"


def read_configs() -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Workflow -> {id: its raw value in the config} for every id of that workflow's ``settings``; and for the ids
    with a rule that a config computes from others instead (not in its ``settings``, so not checked there)."""
    found: dict[str, dict[str, Any]] = {}
    computed: dict[str, dict[str, Any]] = {}
    for workflow, names in WORKFLOWS.items():
        parser = ConfigParser()  # raw values are shown: nothing is resolved, so bundle_root keeps its own
        parser.read_config([str(ROOT / "configs" / f"{n}.json") for n in names])
        found[workflow] = {k: parser[k] for k in parser["settings"] if not k.startswith("_")}
        others = set(settings.RULES) - set(found[workflow])
        computed[workflow] = {k: parser[k] for k in sorted(others) if k in parser.get()}
    for overlay, names in OVERLAYS.items():
        for name in names:
            raw = ConfigParser.load_config_file(str(ROOT / "configs" / f"{name}.json"))
            ids = [k.split("#", 1)[1] for k in raw if k.startswith("settings#")]
            found.setdefault(overlay, {}).update({k: raw[k] for k in ids})
    return found, computed


def defaults(name: str, found: dict[str, dict[str, Any]]) -> str:
    """The id's default; where workflows differ, each value followed by the workflows that have it."""
    groups: dict[str, list[str]] = {}
    for workflow, values in found.items():
        if name in values:
            groups.setdefault(shown(values[name]), []).append(SHORT.get(workflow, workflow))
    if len(groups) == 1:
        return next(iter(groups))
    return "; ".join(f"{value} ({', '.join(names)})" for value, names in groups.items())


def workflows_of(name: str, found: dict[str, dict[str, Any]], computed: dict[str, dict[str, Any]]) -> str:
    """The workflows whose settings have the id ("all": every workflow); computed ones say so."""
    have = [SHORT.get(w, w) for w, values in found.items() if name in values]
    have += [f"{SHORT.get(w, w)} (computed from other ids)" for w, values in computed.items() if name in values]
    return "all" if set(have) >= {SHORT.get(w, w) for w in WORKFLOWS} else ", ".join(have)


def describe(name: str) -> tuple[str, str]:
    """The id's description and allowed values, with what a workflow's own rule allows instead."""
    base = settings.RULES.get(name)
    own = {w: rules[name] for w, rules in settings.WORKFLOW_RULES.items() if name in rules}
    description = getattr(base if base is not None else next(iter(own.values())), "description", "")
    allowed = [allowed_text(base)] if name in settings.RULES else []
    allowed += [f"{SHORT.get(w, w)}: {allowed_text(rule)}" for w, rule in own.items()]
    return description, "; ".join(allowed)


def ids_table(found: dict[str, dict[str, Any]], computed: dict[str, dict[str, Any]]) -> list[str]:
    """One row per id: what it is, what it allows, its defaults and the workflows that have it."""
    names = sorted(set(settings.RULES) | {k for rules in settings.WORKFLOW_RULES.values() for k in rules})
    lines = ["| id | description | allowed | default | workflows |", "| --- | --- | --- | --- | --- |"]
    for name in names:
        description, allowed = describe(name)
        default = defaults(name, found) or defaults(name, computed)
        row = [f"`{name}`", cell(description), cell(allowed), cell(default), workflows_of(name, found, computed)]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def checks_list() -> list[str]:
    """The checks over several ids, each with its docstring's first line."""
    lines = ["## Checks across ids", ""]
    for check in settings.CHECKS:
        first = (check.__doc__ or "").strip().splitlines()[0]
        lines.append(f"- `{check.__module__}.{check.__name__}`: {cell(first)}")
    return lines


def render() -> str:
    """The whole page."""
    found, computed = read_configs()
    booleans = ", ".join(f"`{yes}`/`{no}`" for yes, no in BOOLEAN_SPELLINGS)
    head = HEAD.format(booleans=booleans)
    return "\n".join([head, *ids_table(found, computed), "", *checks_list()]) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``--fix`` writes the page; ``--check`` returns 1 when the committed page differs from what ``render`` gives."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 if docs/settings.md is not what the rules give")
    mode.add_argument("--fix", action="store_true", help="rewrite docs/settings.md")
    args = parser.parse_args(argv)
    page = render()
    if args.fix:
        PAGE.write_text(page)
        return 0
    if not PAGE.is_file() or PAGE.read_text() != page:
        print("docs/settings.md differs from the rules and configs: run `make docs`")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
