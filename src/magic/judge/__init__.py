"""Step 9: an LLM judge of ESConv's human-evaluation criteria (judge_responses.py) and the direct-LLM supporter
system (direct_llm_responses.py). Stage rank as chat/study: it uses llm (the engines), generator (step 8's output
format), esconv and common; llm and generator never import it."""
