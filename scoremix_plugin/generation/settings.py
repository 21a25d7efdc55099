"""The sampler's choices, in one place and without torch, so command-line parsers can offer them cheaply."""

SOLVERS = ("heun", "euler", "dpm2m")
GUIDANCE = ("none", "cfg", "autoguidance")
MIX_SPACES = ("score", "condition")
