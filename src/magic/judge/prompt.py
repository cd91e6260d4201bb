"""Every prompt of step 9 in one file: the judge prompt (``--show_prompt`` prints it), how its answer is read,
and the direct-LLM supporter's prompts.

The five criteria are those of ESConv's human evaluation: Liu et al., "Towards Emotional Support Dialog
Systems", ACL 2021, Section 6 (annotators compared two systems' replies pairwise: win / tie / lose). The
definitions below state what each criterion asks in that paper's terms, written for one reply to a given
dialogue instead of a whole chat with a bot.

A record's ``context`` is the situation, then the turns before the target supporter turn; speakers alternate
(step 0 merges consecutive turns of one speaker) and the turn just before the target is the seeker's, so the
speakers are assigned backwards from the end.
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

from magic.esconv.dialogues import canonical_strategy

CRITERIA = ("Fluency", "Identification", "Comforting", "Suggestion", "Overall")
DEFINITIONS = {
    "Fluency": "which reply is more fluent and easier to understand",
    "Identification": "which reply explores the seeker's situation more deeply and does more to help identify "
                      "the seeker's problem",
    "Comforting": "which reply is more skilful at comforting the seeker",
    "Suggestion": "which reply offers more helpful suggestions for the seeker's problem",
    "Overall": "which reply's emotional support the seeker would prefer, all things considered",
}
CHOICES = ("1", "2", "tie")

JUDGE_TEMPLATE = """You are judging two replies of a supporter in an emotional support conversation.

Seeker's situation: {situation}

Conversation so far:
{dialogue}

Reply 1: {first}
Reply 2: {second}

Compare the two replies as the next supporter turn on five criteria:
{criteria}

Answer with exactly five lines, one per criterion, each "<criterion>: 1", "<criterion>: 2" or "<criterion>: tie".
"""
REMINDER = ("\nYour previous answer could not be read. Reply with the five lines only, for example:\n"
            + "\n".join(f"{c}: tie" for c in CRITERIA) + "\n")


def dialogue_lines(context: Sequence[str]) -> tuple[str, str]:
    """(situation, "Seeker: ...\\nSupporter: ..." lines) of a record's context (speakers assigned backwards)."""
    situation, turns = (context[0], list(context[1:])) if context else ("", [])
    n = len(turns)
    lines = [f"{'Seeker' if (n - k) % 2 == 1 else 'Supporter'}: {' '.join(t.split())}" for k, t in enumerate(turns)]
    return " ".join(situation.split()), "\n".join(lines) or "(the supporter speaks first)"


def judge_prompt(context: Sequence[str], first: str, second: str, attempt: int = 0) -> str:
    """The judge's question for one ordered pair; ``attempt`` > 0 adds the format reminder (a re-ask)."""
    situation, dialogue = dialogue_lines(context)
    criteria = "\n".join(f"- {c}: {DEFINITIONS[c]}." for c in CRITERIA)
    text = JUDGE_TEMPLATE.format(situation=situation, dialogue=dialogue, first=" ".join(first.split()) or "(empty)",
                                 second=" ".join(second.split()) or "(empty)", criteria=criteria)
    return text + (REMINDER if attempt else "")


_ANSWER_RE = {c: re.compile(rf"{c}\W{{0,6}}?(?:reply\s*)?(1|2|tie)\b", re.IGNORECASE) for c in CRITERIA}


def parse_judgement(answer: str) -> dict[str, str] | None:
    """criterion -> "1" | "2" | "tie" (the reply shown first or second, or neither); None unless all five
    criteria are named, each followed by one of the three choices."""
    out = {}
    for c, pattern in _ANSWER_RE.items():
        m = pattern.search(answer)
        if m is None:
            return None
        out[c] = m.group(1).lower()
    return out


# ------------------------------------------------------------------------------------------ direct supporter
STRATEGY_HINTS: Mapping[str, str] = {  # ESConv's eight strategies (Liu et al., 2021, Table 2), briefly
    "Question": "ask a question that helps the seeker say more about the problem",
    "Restatement or Paraphrasing": "restate what the seeker said, more concisely, so they see it clearly",
    "Reflection of Feelings": "put the seeker's feelings into words",
    "Self-disclosure": "share a similar experience or feeling of your own",
    "Affirmation and Reassurance": "affirm the seeker's strengths and reassure them",
    "Providing Suggestions or Information": "suggest what the seeker could do, or give useful information",
    "Greeting": "greet the seeker or say goodbye",
    "Others": "reply in whatever supportive way fits",
}

DIRECT_TEMPLATE = """You are the supporter in an emotional support conversation.

Seeker's situation: {situation}

Conversation so far:
{dialogue}

{instruction}Write only the supporter's next turn: one or two sentences, no speaker name."""


def direct_prompt(context: Sequence[str], strategy: str | None = None) -> str:
    """The direct-LLM supporter's prompt: zero-shot, or told the strategy to use (``strategy``)."""
    situation, dialogue = dialogue_lines(context)
    instruction = ""
    if strategy is not None:
        name = canonical_strategy(strategy)
        instruction = f"Use the strategy \"{name}\": {STRATEGY_HINTS[name]}.\n"
    return DIRECT_TEMPLATE.format(situation=situation, dialogue=dialogue, instruction=instruction)


_SPEAKER_RE = re.compile(r"^\s*(supporter|assistant)\s*:\s*", re.IGNORECASE)


def clean_reply(answer: str) -> str:
    """The reply's first non-empty line without a leading speaker name (small models often add one)."""
    line = next((x for x in answer.splitlines() if x.strip()), "")
    return _SPEAKER_RE.sub("", line).strip().strip('"').strip()
