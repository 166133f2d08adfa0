"""scailflow: folder-to-video SCAIL-2 character animation.

This package holds what every stage shares (errors, media I/O, atomic writes) and the console script.
The stage libraries live beside it: scail/ (generation), pose/, masks/, prompts/; tasks/ and flows/ orchestrate.
"""

__version__ = "0.1.0"
