"""voiceprep stages: one stage per module; the module name is the stage's YAML name."""
