"""The built-in task heads of bertserve.

Each module is a plugin registered through the ``bertserve.heads`` entry
point group, exactly as a third-party head package would be.
"""
