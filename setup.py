"""Builds the compiled modules (Cython): the page core, ``online_models/_page_core.pyx``,
the page updates' items in Avro, ``topics/_avro_page.pyx``, and the player events' Avro
reader, ``topics/_avro_read.pyx``.

Everything else is in pyproject.toml. The extensions are optional: without a C compiler the
package still installs and pages are assembled and encoded by the Python references
(:mod:`online_models.page`, :func:`topics.avro_bytes.items_block_py`) and events read by
Python written for each schema (:func:`topics.avro_bytes.compile_reader`), slower and byte
for byte the same.
"""

from setuptools import Extension, setup

# no fused multiply-add: the compiled sums and products round as Python's do
FLAGS = ["-O2", "-ffp-contract=off"]

setup(ext_modules=[
    Extension("online_models._page_core", ["online_models/_page_core.pyx"],
              extra_compile_args=FLAGS, optional=True),
    Extension("topics._avro_page", ["topics/_avro_page.pyx"], extra_compile_args=FLAGS,
              optional=True),
    Extension("topics._avro_read", ["topics/_avro_read.pyx"], extra_compile_args=FLAGS,
              optional=True),
])
