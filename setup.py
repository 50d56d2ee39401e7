"""Builds the compiled page core, ``online_models/_page_core.pyx`` (Cython).

Everything else is in pyproject.toml. The extension is optional: without a C compiler the
package still installs and pages are assembled by the Python reference
(:mod:`online_models.page`), slower and byte for byte the same.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "online_models._page_core", ["online_models/_page_core.pyx"],
    # no fused multiply-add: the compiled sums and products round as Python's do
    extra_compile_args=["-O2", "-ffp-contract=off"],
    optional=True,
)])
