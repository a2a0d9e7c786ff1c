"""Root of the test suite. Loading this file puts ``tests/`` on ``sys.path`` (pytest's
default ``prepend`` import mode does that for a conftest's directory), so the shared helpers
here (``_connector_rig``, ``manager_helpers``, ...) import the same way from ``tests/remote/``
as from ``tests/``, whichever file is run alone."""
