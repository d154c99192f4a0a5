"""Build of the optional C fast lane (src/veloxy/h1/_fastpath.c); everything else is in
pyproject.toml. `optional=True`: where no C compiler is at hand (Windows without MSVC, say)
the build goes on without it and veloxy runs its Python parsers alone (h1/parser.py)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("veloxy.h1._fastpath", ["src/veloxy/h1/_fastpath.c"], optional=True),
    ],
)
