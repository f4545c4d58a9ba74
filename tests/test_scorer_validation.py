"""Built-in scorers are checked when they are made (in Python and from TOML), not at the first run."""

from __future__ import annotations

from pathlib import Path

import pytest

from specexec import Policy, PolicyError, scorers


def test_majority_extract_must_compile() -> None:
    with pytest.raises(PolicyError) as info:
        scorers.majority(extract="(")
    assert info.value.path == "$.extract" and "regular expression" in str(info.value)
    assert scorers.majority(extract=r"answer is (\d+)").answer("the answer is 7") == "7"


@pytest.mark.parametrize("max_tokens", [0, -1, True])
def test_llm_judge_max_tokens_must_be_positive(max_tokens: int) -> None:
    with pytest.raises(PolicyError) as info:
        scorers.llm_judge("judge", max_tokens=max_tokens)
    assert info.value.path == "$.max_tokens"


@pytest.mark.parametrize(
    "prompt", ["Rate {bogus}", "{question} {answer.upper}", "{0}", "{}", "unclosed {", "{answer!z}"]
)
def test_llm_judge_prompt_may_use_only_question_and_answer(prompt: str) -> None:
    with pytest.raises(PolicyError) as info:
        scorers.llm_judge("judge", prompt=prompt)
    assert info.value.path == "$.prompt" and "{question}" in str(info.value) and "{answer}" in str(info.value)


def test_llm_judge_good_prompts() -> None:
    assert scorers.llm_judge("j", prompt="Q: {question} A: {answer} {{literal}}").max_tokens == 8
    assert scorers.llm_judge("j", prompt="no placeholders at all").prompt == "no placeholders at all"
    with pytest.raises(PolicyError) as info:
        scorers.llm_judge("")
    assert info.value.path == "$.backend"


PICK = 'mode = "pick"\ncandidates = ["a", "b"]\n'


@pytest.mark.parametrize(
    ("scorer", "path"),
    [
        ('{ kind = "majority", extract = "(" }', "$.scorer.extract"),
        ('{ kind = "llm_judge", backend = "j", max_tokens = 0 }', "$.scorer.max_tokens"),
        ('{ kind = "llm_judge", backend = "j", prompt = "{bogus}" }', "$.scorer.prompt"),
    ],
)
def test_scorer_errors_in_toml_say_where(tmp_path: Path, scorer: str, path: str) -> None:
    file = tmp_path / "p.toml"
    file.write_text(PICK + f"scorer = {scorer}\n")
    with pytest.raises(PolicyError) as info:
        Policy.from_toml(file)
    assert (info.value.path, info.value.source) == (path, str(file))
