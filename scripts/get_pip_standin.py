"""Offline stand-in for ansible-test's cached get-pip script.

ansible-test runs ``python get_pip.py <pip install args> [--no-setuptools] [--no-wheel]``
to put a pinned pip into the virtualenvs it creates. The original script is downloaded
from a host this test bed cannot reach; this one bootstraps pip from the standard
library (ensurepip) and then installs the requested pip from the package index.
"""
import ensurepip
import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
ensurepip.bootstrap(upgrade=True)
if args:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q"] + args)
