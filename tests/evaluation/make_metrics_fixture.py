"""Write ``metrics_fixture.json``: metrics.json as the pre-MONAI-handler evaluation wrote it for ``cases.CASES``.

The report then recomputed every metric by hand (``classification_report``); ``test_report.py`` checks that the
MONAI-handler report gives the same fields and values. Regenerate, from the repository root, with::

    .venv/bin/python tests/evaluation/make_metrics_fixture.py [REV]

It extracts ``bundle/`` at ``REV`` (default: the last commit with the hand-counted report) into a temporary folder
with ``git archive`` and runs the cases there, so the fixture always comes from the old code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).with_name("metrics_fixture.json")
OLD_REV = "477b71375367c23f92933a376c878dc45a00d81e"


def _run_old_report(out_dir: str) -> dict:
    """Run the cases through the old handlers as the old configs/evaluate.json attached them."""
    import bundle
    from bundle.evaluation.attention import LungAttentionReport
    from bundle.evaluation.report import EvaluationReport
    from tests.evaluation.cases import CASES, make_batches, run_engine

    assert not Path(bundle.__file__).resolve().is_relative_to(ROOT), f"not the extracted copy: {bundle.__file__}"
    result = {}
    for name, case in CASES.items():
        names, multi_label = case["class_names"], case["multi_label"]
        out = os.path.join(out_dir, name)
        attention = LungAttentionReport(out, names, 0, "gradcampp", multi_label)
        report = EvaluationReport(out, names, multi_label, extra_metrics=[attention.summary])
        run_engine(make_batches(names, multi_label, case["seed"]), len(names), multi_label, {}, [attention, report])
        metrics = dict(report.metrics)
        metrics["plots"] = {k: os.path.basename(v) for k, v in metrics["plots"].items()}  # paths vary by run
        result[name] = metrics
    return result


def main(rev: str = OLD_REV) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "archive", rev, "bundle"], cwd=ROOT, check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([tmp, str(ROOT)]))
        code = (
            "import json, sys; from tests.evaluation.make_metrics_fixture import _run_old_report; "
            f"json.dump(_run_old_report({tmp!r}), sys.stdout)"
        )
        # -P: no script folder on sys.path, so ``bundle`` resolves to the extracted copy ahead of the editable install
        child = subprocess.run([sys.executable, "-P", "-c", code], cwd=tmp, env=env, check=True, capture_output=True)
    cases = json.loads(child.stdout)
    # indent=4: the layout .ci/format_json.py checks (the model zoo's pretty-format-json)
    FIXTURE.write_text(json.dumps({"generated_from": rev, "cases": cases}, indent=4) + "\n")
    print(f"wrote {FIXTURE} from bundle/ at {rev}")


if __name__ == "__main__":
    main(*sys.argv[1:])
