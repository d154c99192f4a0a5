"""Build of the optional C fast lanes (src/veloxy/h1/_fastpath.c, src/veloxy/http2/_hpack.c);
everything else is in pyproject.toml. `optional=True`: where no C compiler is at hand
(Windows without MSVC, say) the build goes on without them and veloxy runs its Python
parsers alone (h1/parser.py) and hpack's decoder (http2/hpack_lane.py)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("veloxy.h1._fastpath", ["src/veloxy/h1/_fastpath.c"], optional=True),
        Extension("veloxy.http2._hpack", ["src/veloxy/http2/_hpack.c"], optional=True),
    ],
)
