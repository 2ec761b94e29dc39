"""Stand-in for ansible-test's pip bootstrap script (get_pip_24_2.py), used by scripts/sanity.

ansible-test downloads its bootstrap script from ci-files.testing.ansible.com, which is not
reachable from these machines, and runs pip with PIP_CONFIG_FILE=/dev/null, so its private
virtual environments ignore the machine's pip configuration, including the CA bundle that the
way to PyPI needs. This script bootstraps pip from the interpreter's own ensurepip, installs the
pip version ansible-test asks for, and points that pip at the system's CA bundle.
"""

import ensurepip
import glob
import os
import shutil
import subprocess
import sys

SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"

ensurepip.bootstrap(upgrade=True)
wanted = [a for a in sys.argv[1:] if not a.startswith("--")]
cert = ["--cert", SYSTEM_CA] if os.path.exists(SYSTEM_CA) else []
subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", *cert, *wanted])
if cert:
    for bundle in glob.glob(os.path.join(sys.prefix, "lib", "python*", "site-packages", "pip",
                                         "_vendor", "certifi", "cacert.pem")):
        shutil.copyfile(SYSTEM_CA, bundle)
