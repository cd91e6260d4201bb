"""The two prompts of MAGIC, built from samples of ``magic.esconv.dialogues``.

* ChatGPT motivation prompt (step 1): the dialogue clip *including* the target supporter turn, marked
  ``***[strategy]***``, framed by ``CHATGPT_BEGIN`` / ``CHATGPT_END``.
* LLaMA strategy prompt (steps 2-5): the clip *up to* the target turn, framed by ``LLAMA_BEGIN`` /
  ``LLAMA_END``; the fine-tuning target is the motivation.

Clip lines are ``(k) Seeker: <text>`` and ``(k) Supporter: <text> [<strategy>]``, numbered from 1,
whitespace-normalised, each ending in a newline. Two released quirks are kept because the released
motivations and prompts were made with them: the LLaMA clip of a dialogue's first sample has no trailing
newline, and in the ChatGPT clip of a supporter-opened dialogue's first sample the opening supporter turn
is marked ``***[...]***`` as well.
"""
from __future__ import annotations

from magic.esconv.dialogues import Sample, Turn
from magic.llm.templates import CHATGPT_BEGIN, CHATGPT_END, LLAMA_BEGIN, LLAMA_END

# LLaMA-Factory's `default` template: what fine-tuning and inference wrap the instruction in.
DEFAULT_TEMPLATE_PREFIX = "Human: "
DEFAULT_TEMPLATE_SUFFIX = "\nAssistant: "


def _norm(text: str) -> str:
    return " ".join(text.split())


def _line(k: int, turn: Turn, marked: bool = False) -> str:
    if turn.speaker == "usr":
        return f"({k}) Seeker: {_norm(turn.text)}"
    label = f"***[{turn.strategy}]***" if marked else f"[{turn.strategy}]"
    return f"({k}) Supporter: {_norm(turn.text)} {label}"


def _is_first_sample(sample: Sample) -> bool:
    # the first target of its dialogue: turn 1 of a seeker-opened one, turn 2 of a supporter-opened one
    opener = sample.dialogue.turns[0].speaker
    return sample.turn_index == (1 if opener == "usr" else 2)


def llama_clip(sample: Sample) -> str:
    """Dialogue clip shown to the strategy LLM: every turn before the target."""
    turns = sample.dialogue.turns[: sample.turn_index]
    lines = [_line(k + 1, t) for k, t in enumerate(turns)]
    if _is_first_sample(sample) and sample.every_target:
        return "\n".join(lines)  # released quirk: no trailing newline on the first sample
    return "".join(line + "\n" for line in lines)


def llama_prompt(sample: Sample) -> str:
    """The instruction of the strategy LLM (released ``prompts_4_LLaMA*.json`` entries)."""
    return LLAMA_BEGIN + llama_clip(sample) + LLAMA_END


def chatgpt_clip(sample: Sample) -> str:
    """Dialogue clip shown to ChatGPT: every turn up to and including the target, which is marked."""
    turns = sample.dialogue.turns[: sample.turn_index + 1]
    first_sys_opened = _is_first_sample(sample) and turns[0].speaker == "sys"
    lines = []
    for k, t in enumerate(turns):
        marked = k == sample.turn_index or (first_sys_opened and k == 0)
        lines.append(_line(k + 1, t, marked=marked) + "\n")
    return "".join(lines)


def chatgpt_prompt(sample: Sample) -> str:
    """The motivation-collection prompt (one user message)."""
    return CHATGPT_BEGIN + chatgpt_clip(sample) + CHATGPT_END


def wrap_default_template(instruction: str) -> str:
    """LLaMA-Factory ``default`` template around one instruction; the answer follows directly."""
    return DEFAULT_TEMPLATE_PREFIX + instruction + DEFAULT_TEMPLATE_SUFFIX
