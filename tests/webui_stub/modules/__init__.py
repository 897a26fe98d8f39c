"""A small stand-in for the parts of the A1111 1.10 webui (`modules.*`) that the extension touches.

Written for the tests from the real signatures and behaviour (A1111 v1.10.1, commit 82a973c0); each module
says which real file it mirrors. It is put on `sys.path` only by the `webui` fixture in tests/conftest.py.
"""
