"""The LLM backends of stage 1 and the chat: Hugging Face (in process), OpenAI-compatible servers, vLLM; the answer cache."""
