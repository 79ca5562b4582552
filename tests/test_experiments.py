"""Experiment files (experiments/*.toml): each runs what its make target ran before, cell for cell, so the results of
earlier runs keep their names (the keys of a sweep.json); a bad file gets an error that names it and what is wrong."""
from pathlib import Path

import pytest

from ssmax_tiny import cli, sweep

EXPERIMENTS = Path(__file__).parent.parent / "experiments"
# the command lines the make targets ran before the files existed
BEFORE = {
  "demo.toml": ["demo"],
  "lm.toml": ["lm-compare"],
  "lm-prope.toml": ["lm-compare", "--positionals", "p-rope", "--out", "runs/lm-prope"],
  "passkey.toml": ["lm-compare", "--passkey-rate", "1", "--answer-weight", "10", "--steps", "4000", "--positionals", "rope,p-rope,none",
                   "--attentions", "softmax,ssmax,scale_invariant", "--seeds", "0,1", "--samples", "16", "--out", "runs/lm-passkey"],
}


def _args(argv: list[str]):
  return cli.build_parser().parse_args(argv)


@pytest.mark.parametrize("name", sorted(p.name for p in EXPERIMENTS.glob("*.toml")))
def test_every_experiment_file_is_a_command_line_and_short(name):
  path = EXPERIMENTS / name
  assert len(path.read_text().splitlines()) < 30
  args = _args(cli.experiment_argv(path, cli.build_parser()))
  assert args.command in ("demo", "lm-compare") and len(cli.cells(args)) > 1


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_a_file_runs_the_cells_its_make_target_ran(name):
  from_file = _args(cli.experiment_argv(EXPERIMENTS / name, cli.build_parser()))
  before = _args(BEFORE[name])
  assert [sweep.key(c) for c in cli.cells(from_file)] == [sweep.key(c) for c in cli.cells(before)]
  assert from_file.out == before.out


def test_options_after_the_file_replace_the_files():
  args = _args(cli.experiment_argv(EXPERIMENTS / "lm.toml", cli.build_parser()) + ["--seeds", "0", "--dtype", "bfloat16"])
  assert args.seeds == [0] and len(cli.cells(args)) == 6 and all(c["model"]["dtype"] == "bfloat16" for c in cli.cells(args))


@pytest.mark.parametrize("text, words", [
  ('command = "lm-compare"\n[train]\nstep = 3\n', ["bad.toml", "step is not an option of lm-compare", "steps"]),
  ('command = "fit"\n', ["bad.toml", "command='fit'", "demo", "lm-compare"]),
  ('command = "demo"\n[train\n', ["bad.toml"]),
])
def test_a_bad_file_is_refused_with_its_name(tmp_path, capsys, text, words):
  (tmp_path / "bad.toml").write_text(text)
  assert cli.main(["run", str(tmp_path / "bad.toml")]) == 2
  err = capsys.readouterr().err
  for w in words: assert w in err, (w, err)
