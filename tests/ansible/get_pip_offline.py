"""Stand-in for ansible-test's pip bootstrap script (``get-pip-<version>.py``).

Why: ansible-test creates every sanity/units virtualenv ``--without-pip`` and then downloads
``get-pip`` from ci-files.testing.ansible.com, a host this project's machines and CI cannot reach
(only PyPI is). ansible-test first looks in ``~/.ansible/test/cache/get_pip_<version>.py``; this file
is placed there. It does what get-pip does, from sources we do reach: pip bundled with CPython
(``ensurepip``), then ``pip install --upgrade <the pinned packages ansible-test asked for>`` from PyPI.
"""

import subprocess
import sys


def main() -> int:
    subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
    # get-pip's own flags; ansible-test passes them so setuptools/wheel are not installed implicitly.
    args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
    return subprocess.call([sys.executable, "-m", "pip", "install", "--upgrade", *args])


if __name__ == "__main__":
    sys.exit(main())
