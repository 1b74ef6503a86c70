"""The reference answers pass their checkers: notebooks run with SOLUTIONS=True check the library itself."""

import pytest

from riser_lite.teach import exercises, solutions

CHECKERS = {
    "group_advantages": exercises.check_group_advantages,
    "learnable_groups": exercises.check_learnable_groups,
    "convert_groups_to_pairs": exercises.check_convert_groups_to_pairs,
    "certainty_weights": exercises.check_certainty_weights,
    "clipped_surrogate": exercises.check_clipped_surrogate,
    "simpo_loss": exercises.check_simpo_loss,
}


def test_every_solution_has_a_checker():
    assert set(CHECKERS) == set(solutions.SOLUTIONS)


@pytest.mark.parametrize("name", sorted(CHECKERS))
def test_solution_passes_its_checker(name):
    result = CHECKERS[name](solutions.solution(name))
    assert result.passed, result.failures


def test_unfinished_exercise_fails_its_checker():
    def not_done(*args):
        raise NotImplementedError

    result = exercises.check_group_advantages(not_done)
    assert not result.passed and "NotImplementedError" in result.failures[0]


def test_reveal_prints_the_answer(capsys):
    source = solutions.reveal("simpo_loss")
    assert "def simpo_loss" in source and "logsigmoid" in capsys.readouterr().out
    with pytest.raises(KeyError, match="expected one of"):
        solutions.solution("nope")
