import sys
from pathlib import Path

# tests/reference.py holds the helpers that build reference models with transformers.
sys.path.insert(0, str(Path(__file__).parent))


def pytest_terminal_summary(terminalreporter):
    """How many hostile inputs tests/test_hostile.py tried (each test records its tally)."""
    tallies = [value for reports in terminalreporter.stats.values() for report in reports
               if getattr(report, "when", None) == "call"
               for key, value in getattr(report, "user_properties", ()) if key == "hostile_inputs"]
    if not tallies:
        return
    inputs, runs = sum(t["inputs"] for t in tallies), sum(t["runs"] for t in tallies)
    refused, loaded = sum(t["refused"] for t in tallies), sum(t["loaded"] for t in tallies)
    failed = sum(t["failed"] for t in tallies)
    parts = ", ".join(f"{t['kind']} {t['inputs']}" for t in tallies)
    terminalreporter.write_line(
        f"hostile inputs tried: {inputs} ({parts}), in {runs} runs of the loaders and `lfm2-edu info`: "
        f"{refused} refused with a documented error, {loaded} loaded as valid, {failed} failed; "
        f"slowest case {max(t['slowest'] for t in tallies):.2f} s of CPU")
