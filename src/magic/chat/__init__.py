"""Talking to a trained model: the chat engine (one turn through both stages) and the web page."""
