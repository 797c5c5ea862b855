"""Run by every kernel of the browser tests (an IPython startup file). Does nothing unless
LFM2_EDU_BREAK names a function as "module:function": that function then works once and raises
on every later call, so an explorer built on it draws once and breaks on its first interaction,
as a broken callback would. The browser suite uses it to check that it catches a broken explorer.
"""
import importlib
import os

_target = os.environ.get("LFM2_EDU_BREAK")
if _target:
    _module_name, _name = _target.split(":")
    _module = importlib.import_module(_module_name)
    _real = getattr(_module, _name)
    _calls = [0]

    def _broken(*args, **kwargs):
        _calls[0] += 1
        if _calls[0] > 1:
            raise RuntimeError(f"{_target} broken on purpose by the browser test ({_calls[0]} calls)")
        return _real(*args, **kwargs)

    setattr(_module, _name, _broken)
