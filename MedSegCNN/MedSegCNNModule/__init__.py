"""The MedSegCNN module's parts, one file each: the parameter record (parameters.py), the Python package installer
(install.py), the console logic (logic.py), the panel (widget.py) and the self-test (selftest.py).

MedSegCNN.py registers the module and imports the widget, logic and test classes, where Slicer looks for them.
"""
