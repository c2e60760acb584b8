

__version__ = "0.1.0.dev0"  # the one place; pyproject.toml reads it ([tool.setuptools.dynamic])
