"""Run by every kernel of the browser tests (an IPython startup file). Does nothing unless
LFM2_EDU_BREAK names a function as "module:function": that function then works when a cell runs
and raises when a widget calls it (a request of type comm_msg, what an explorer's control sends),
as a broken callback would. The browser suite uses it to check that it catches a broken explorer.
"""
import importlib
import os

_target = os.environ.get("LFM2_EDU_BREAK")
if _target:
    _module_name, _name = _target.split(":")
    _module = importlib.import_module(_module_name)
    _real = getattr(_module, _name)

    def _from_a_widget() -> bool:
        kernel = getattr(get_ipython(), "kernel", None)  # noqa: F821 (IPython's builtin)
        parent = kernel.get_parent("shell") if kernel is not None else {}
        return (parent or {}).get("header", {}).get("msg_type") == "comm_msg"

    def _broken(*args, **kwargs):
        if _from_a_widget():
            raise RuntimeError(f"{_target} broken on purpose by the browser test")
        return _real(*args, **kwargs)

    setattr(_module, _name, _broken)
