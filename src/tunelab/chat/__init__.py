"""Chat SFT with TRL: recipe, conversations, chat format, pipeline and serving."""
