"""The choices every front end shares (alis_core/options.py): devices, noise modes, psi range, defaults.

The extension's UI must work in a Blender whose Python has no alis_core (the usual case), so the
extension zip carries copies of the torch-free alis_core/options.py and alis_core/errors.py in
`_alis/` (blender_addon/build.py writes them); in a checkout, the library's own module is used.
"""
try:
    from ._alis import options
except ModuleNotFoundError as e:  # a checkout: no _alis/ next to this file
    if e.name != f"{__package__}._alis":
        raise
    from alis_core import options

__all__ = ["options"]
