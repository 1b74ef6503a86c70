"""The reference answers pass their checkers: notebooks run with SOLUTIONS=True check the library itself."""

import pytest

from riser_lite.teach import exercises, solutions

CHECKERS = exercises.CHECKERS


def test_every_solution_has_a_checker():
    assert set(CHECKERS) == set(solutions.SOLUTIONS)


@pytest.mark.parametrize("name", sorted(CHECKERS))
def test_solution_passes_its_checker(name):
    result = CHECKERS[name](solutions.solution(name))
    assert result.passed, result.failures


@pytest.mark.parametrize("name", sorted(CHECKERS))
def test_unstarted_exercise_is_told_only_that(name, capsys):
    """Run All on an untouched notebook: the checker says "not implemented yet" and nothing else."""
    def not_done(*args):
        raise NotImplementedError

    result = CHECKERS[name](not_done)
    assert not result.passed and not result.started and result.failures == ["not implemented yet"]
    out = capsys.readouterr().out
    assert out == f"⏳ check_{name}: not implemented yet.\n"


def test_reveal_prints_the_answer(capsys):
    source = solutions.reveal("simpo_loss")
    assert "def simpo_loss" in source and "logsigmoid" in capsys.readouterr().out
    with pytest.raises(KeyError, match="expected one of"):
        solutions.solution("nope")
