# Metadata lives in setup.cfg; this stub keeps old pip versions working.
from setuptools import setup

setup()
