"""One prompt template for every stage."""

import ast
import inspect
from pathlib import Path

import riser_lite
from riser_lite.data.types import Example
from riser_lite.items.prompts import example_prompt, format_prompt, format_response

PACKAGE = Path(riser_lite.__file__).parent


def test_prompt_text_is_pinned():
    assert format_prompt(["A", "B"]) == "A user's recent items, oldest first:\n- A\n- B\nNext item:\n"
    assert format_response("C") == "C\n"


def test_example_prompt_keeps_the_newest_history_items():
    catalog = {i: f"item {i}" for i in range(20)}
    ex = Example(user="u", history=tuple(range(15)), target=19)
    prompt = example_prompt(ex, catalog, max_history=10)
    assert prompt == format_prompt([f"item {i}" for i in range(5, 15)])


def test_no_stage_formats_prompts_itself():
    """Every module that builds model input goes through riser_lite.items.prompts (no second template)."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "prompts.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if "Next item:" in node.value or "recent items, oldest first" in node.value:
                    offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders, f"prompt text duplicated outside prompts.py: {offenders}"


def test_stages_use_the_shared_template():
    """The stages that turn examples into model input import the shared functions."""
    users = []
    for path in PACKAGE.rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        if "example_prompt" in source or "encode_response" in source:
            users.append(path.stem)
    stages = ("sft", "evaluate", "rollout", "rl")
    expected = {"catalog"} | {m for m in stages if (PACKAGE / f"{m}.py").exists()}
    assert expected <= set(users), f"stages not using riser_lite.items.prompts: {expected - set(users)}"
    assert inspect.getsource(format_prompt)  # the template is importable source, not data
