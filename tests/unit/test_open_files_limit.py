"""The process lifts its soft limit on open files to the hard one (issue 12, item 3): `./build.sh run`
and any shell with the usual soft 1024 would otherwise refuse connections past a thousand files."""
import subprocess
import sys

RAISE = """
import resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
from appliance.runner import raise_open_files_limit
assert raise_open_files_limit() == hard
assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
print("raised")
"""


def test_the_soft_limit_is_raised_to_the_hard_one():
    done = subprocess.run([sys.executable, "-c", RAISE], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "raised", done.stderr
