from setuptools import setup; setup()  # noqa: E702, I001 - all metadata lives in setup.cfg
