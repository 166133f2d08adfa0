"""Helpers shared by the tests: sample folders (`folders`), a fake Gemini REST server (`gemini`), a local server
speaking the Hugging Face hub's API (`hub`), and running `scailflow` commands and servers as a user does, waiting on
what they print (`processes`)."""
