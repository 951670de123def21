"""OpenAI's Responses API, with stored conversations in the engine's ResponseStore."""
