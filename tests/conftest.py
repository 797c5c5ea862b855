import sys
from pathlib import Path

# tests/reference.py holds the helpers that build reference models with transformers.
sys.path.insert(0, str(Path(__file__).parent))
