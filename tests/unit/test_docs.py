"""What the README, docs/design.md and scripts/demo.sh tell a newcomer matches what the code does."""
from __future__ import annotations

import re
import subprocess

import click

from _helpers import REPO


def _choices(command: click.Command, option: str) -> set[str]:
    param = next(p for p in command.params if option in getattr(p, "opts", ()))
    return set(param.type.choices)


def test_documents_the_code_cites_are_in_the_repository():
    cited = set()
    for path in list(REPO.glob("*/**/*.py")) + list(REPO.glob("*.md")):
        if ".venv" in path.parts or path.parts[-2:-1] == ("tests",):
            continue
        cited |= {(m, path.name) for m in re.findall(r"\b([A-Z][A-Z_-]+\.md)\b", path.read_text())}
        cited |= {(m, path.name) for m in re.findall(r"\b(docs/[\w-]+\.md)\b", path.read_text())}
    assert ("docs/design.md", "loaders.py") in cited, "no citations found: the pattern is wrong"
    missing = sorted(f"{doc} (cited in {where})" for doc, where in cited if not (REPO / doc).is_file())
    assert not missing, missing


def test_readme_synth_kinds_and_loader_options_match_the_cli():
    from fastvid.cli.data import synth_cmd
    from fastvid.cli.engine import bench_cmd

    readme = (REPO / "README.md").read_text()
    documented = re.search(r"fastvid data synth DIR --kind ([\w|]+)", readme).group(1).split("|")
    assert set(documented) == _choices(synth_cmd, "--kind")
    # bench's --loader names loaders to compare; it has no 'auto' and the README must not say so.
    for line in re.findall(r"`--loader auto[^`]*` on ([^.]+)", readme):
        assert "bench" not in line.split("(")[0], line
    assert "auto" not in bench_cmd.params[[p.name for p in bench_cmd.params].index("loader_text")].help


def test_demo_shows_training_progress():
    script = (REPO / "scripts" / "demo.sh").read_text()
    train = re.search(r"fastvid train [^\n]*(?:\\\n[^\n]*)*", script).group(0)
    assert "--no-progress" not in train
    subprocess.run(["bash", "-n", str(REPO / "scripts" / "demo.sh")], check=True)


def test_demo_ends_with_the_training_report_and_the_bench_report():
    script = (REPO / "scripts" / "demo.sh").read_text()
    commands = re.findall(r"^fastvid (\w[\w-]*) ([^\n]*)", script, flags=re.M)
    assert commands[-2:] == [("report", '"$OUT/run"'), ("report", '"$OUT/bench"')]
    # best.pt's eval.json lands in the run dir, so the training report draws its confusion matrix.
    evals = [args for cmd, args in commands if cmd == "eval" and "best.pt" in args]
    assert evals and '--out "$OUT/run/eval.json"' in script
    tail = script.split('fastvid report "$OUT/bench"', 1)[1]
    assert "$OUT/run/report.md" in tail and "$OUT/bench/report.md" in tail  # says where they are
