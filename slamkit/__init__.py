"""slamkit: can a small self-hosted GGUF model replace your GPT-4 calls?"""

__version__ = "0.1.0"
