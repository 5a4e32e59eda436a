"""codeunlearn: make a language model forget a topic by masking the codes of a trained codebook bottleneck.

The core library imports neither Prefect nor MLflow, and nothing heavy at import time.
"""

__version__ = "0.1.0"
