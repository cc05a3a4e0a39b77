"""Qt objects as Slicer's Python sees them through PythonQt, built on PySide6, for running the module's panel code
in tests (Testing/slicer_module/panel_harness.py).

PythonQt, Slicer's Qt binding, differs from PySide6 in one way that matters to the panel: a Qt property is a
Python attribute (``button.enabled = False``, ``combo.count - 1``, ``label.text``) and wins over a method of the
same name; PySide6 exposes the getter method instead. :class:`PythonQtObject` wraps a PySide6 object and gives
it PythonQt's attribute rules: Qt properties (looked up in the object's meta-object, so a property the class lacks
is an AttributeError as in Slicer), ``name`` for ``objectName`` (as ``slicer.util.childWidgetVariables`` reads
it), and everything else from the PySide6 object, with wrapped objects unwrapped on the way in and Qt objects
wrapped on the way out.
"""

# Qt's names are camelCase.

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QMetaObject, QObject


def meta_object(qobject: QObject) -> QMetaObject:
    """The meta-object of ``qobject``'s class, read from the class: PySide6 (6.11) invalidates a Python-defined
    class's meta-object wrapper, for the rest of the process, once an instance whose ``metaObject()`` was called is
    deleted by its parent (``staticMetaObject`` then raises "Internal C++ object already deleted")."""
    return type(qobject).staticMetaObject


def unwrap(value: Any) -> Any:
    """The PySide6 object of a wrapped one (lists and tuples item by item); anything else unchanged."""
    if isinstance(value, PythonQtObject):
        return object.__getattribute__(value, "_qobject")
    if isinstance(value, list | tuple):
        return type(value)(unwrap(item) for item in value)
    return value


def wrap(value: Any) -> Any:
    """A QObject wrapped as PythonQt shows it (lists item by item); anything else unchanged."""
    if isinstance(value, QObject) and not isinstance(value, PythonQtObject):
        return PythonQtObject(value)
    if isinstance(value, list):
        return [wrap(item) for item in value]
    return value


class PythonQtObject:
    """A PySide6 QObject with PythonQt's attribute rules (see the module's docstring). Two wrappers of one object
    are equal."""

    __slots__ = ("__weakref__", "_pythonAttributes", "_qobject")

    def __init__(self, qobject: QObject) -> None:
        object.__setattr__(self, "_qobject", qobject)
        object.__setattr__(self, "_pythonAttributes", {})

    def _propertyIndex(self, name: str) -> int:
        return meta_object(self._qobject).indexOfProperty(name)

    def __getattr__(self, name: str) -> Any:
        qobject = object.__getattribute__(self, "_qobject")
        if name == "name":
            return qobject.objectName()
        if name in self._pythonAttributes:
            return self._pythonAttributes[name]
        if not name.startswith("_") and self._propertyIndex(name) >= 0:
            return wrap(qobject.property(name))
        value = getattr(qobject, name)
        if callable(value) and not hasattr(value, "connect"):  # a method, not a signal

            def call(*args: Any, **kwargs: Any) -> Any:
                return wrap(value(*unwrap(args), **{key: unwrap(item) for key, item in kwargs.items()}))

            return call
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        if self._propertyIndex(name) >= 0:
            if not self._qobject.setProperty(name, unwrap(value)):
                raise AttributeError(f"{meta_object(self._qobject).className()}.{name} is read-only or was not set")
        else:
            self._pythonAttributes[name] = value  # PythonQt keeps other attributes on the wrapper

    def __eq__(self, other: object) -> bool:
        return unwrap(other) is self._qobject

    def __hash__(self) -> int:
        return hash(self._qobject)

    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"<PythonQt {meta_object(self._qobject).className()} {self._qobject.objectName()!r}>"


class PythonQtClass:
    """A Qt class as PythonQt offers it (``qt.QTimer()``): calling it makes a wrapped object; its enums and static
    methods are the PySide6 class's."""

    def __init__(self, cls: type) -> None:
        self._cls = cls

    def __call__(self, *args: Any, **kwargs: Any) -> PythonQtObject:
        return PythonQtObject(self._cls(*unwrap(args), **kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cls, name)
