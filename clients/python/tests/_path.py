"""Puts clients/python on sys.path so that `python3 -m unittest discover -s
clients/python/tests` finds the custos package from any directory."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# The Go golden vectors (clients/go/envelope/testdata/vectors.json).
VECTORS = os.path.join(os.path.dirname(os.path.dirname(ROOT)), "clients", "go", "envelope", "testdata", "vectors.json")

# The signed-request vector (kms/requestsig/testdata/vector.json).
REQUEST_VECTOR = os.path.join(os.path.dirname(os.path.dirname(ROOT)), "kms", "requestsig", "testdata", "vector.json")
