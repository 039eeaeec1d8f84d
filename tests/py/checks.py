"""What the interop clients share: failing with a message, and checking a condition.

tests/py/*.py import it directly (their own folder is on sys.path); a client elsewhere puts
this folder on sys.path first (see loadtest/tests/py/azure_openai_client.py).
"""

import sys


def fail(message):
    """Prints FAIL: message on stderr and exits 1."""
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    """Fails with message unless condition holds."""
    if not condition:
        fail(message)
