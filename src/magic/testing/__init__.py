"""Tiny random models and servers for tests, benchmarks and the demo: small BART and Llama builders, an OpenAI-compatible stub."""
