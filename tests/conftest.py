"""Lets test modules share helpers (tests/ on sys.path)."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
