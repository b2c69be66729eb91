"""The engine under every stage; it imports no stage (tests/test_architecture.py)."""
